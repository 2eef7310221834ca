"""Without a GPU: what each GPU command says (what is missing, and what works instead), and the
CPU column of `bench`. These run where there is no NVIDIA driver (CI) and skip elsewhere."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from squeezegen.runtime.device import _has_driver

pytestmark = pytest.mark.skipif(_has_driver(), reason="an NVIDIA driver is installed here")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "squeezegen", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ("check", "models/lenet.yaml", "--weights", "{w}"),
    ("bench", "models/lenet.yaml", "--batch", "1"),
    ("tune", "models/lenet.yaml"),
    ("run", "models/lenet.yaml", "--weights", "{w}", "--input", "{x}", "--output", "{y}",
     "--backend", "cuda"),
])
def test_gpu_commands_say_there_is_no_driver_and_what_works(args, tmp_path):
    import numpy as np
    from squeezegen import init_weights, load_model, save_weights
    g = load_model("models/lenet.yaml")
    save_weights(tmp_path / "w.npz", init_weights(g, 0))
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    paths = {"w": tmp_path / "w.npz", "x": tmp_path / "x.npy", "y": tmp_path / "y.npy"}
    proc = cli(*(a.format(**paths) for a in args))
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("squeezegen: error: no NVIDIA driver on this machine"), proc.stderr
    assert "run --backend numpy" in last and "squeezegen build" in last
    assert "pip install" not in last and "Traceback" not in proc.stderr


def test_compile_from_python_says_there_is_no_driver():
    import squeezegen
    from squeezegen.errors import GPUError
    g = squeezegen.load_model("models/lenet.yaml")
    with pytest.raises(GPUError, match="no NVIDIA driver on this machine"):
        squeezegen.compile(g, squeezegen.init_weights(g, 0))


def test_bench_compare_numpy_runs_the_cpu_column_alone(tmp_path):
    proc = cli("bench", "models/lenet.yaml", "--batch", "1,2", "--compare", "numpy",
               "--json", str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["variant"].startswith("numpy reference") and r["ms"] > 0 for r in rows)
    assert "numpy reference" in proc.stdout

