"""What the commands print about a build, checked against what the build does: the grid in the
launch comments and the `build` listing (split-K included), which kernels run on tensor cores,
`--help`, `--dump-ir` after plan_memory, and `summary`'s shapes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from squeezegen.build import build
from squeezegen.codegen.schedule import PRECISIONS

LAUNCH = re.compile(r"// fixed launch: grid (\S+), \d+ threads per block\n(?:(?!fixed launch).)*?"
                    r"\w+<<<dim3\((\d+), (\d+), (\d+)\)", re.S)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "squeezegen", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def grid_text(grid) -> str:
    """A grid as the listings should print it: XxY, and xZ where Z > 1."""
    return "x".join(str(g) for g in (grid if grid[2] > 1 else grid[:2]))


def test_launch_comment_names_the_grid_it_launches():
    cu = build("models/squeezeseg.yaml", 1).output.files["squeezeseg.cu"].decode()
    launches = LAUNCH.findall(cu)
    assert len(launches) == 36
    assert any(z != "1" for *_, z in launches), "squeezeseg at batch 1 has split-K kernels"
    for text, *dims in launches:
        assert text == grid_text([int(d) for d in dims]), (text, dims)


def listing(out: str) -> dict[str, str]:
    """The kernel lines of `squeezegen build`: name -> the rest of the line."""
    rows = [line.split(None, 1) for line in out.splitlines() if line.startswith("  ")]
    return {name: rest for name, rest in rows}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_listing_shows_the_grid_launched_and_the_tensor_core_kernels(tmp_path, precision):
    r = cli("build", "models/squeezeseg.yaml", "--precision", precision, "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "squeezeseg" / "manifest.json").read_text())
    rows = listing(r.stdout)
    assert list(rows) == [k["name"] for k in manifest["kernels"]]
    on = 0
    for k in manifest["kernels"]:
        mma = (k["tile"] or {}).get("mma")
        on += bool(mma)
        assert re.search(rf" grid {grid_text(k['grid'])}( |$)", rows[k["name"]]), rows[k["name"]]
        assert rows[k["name"]].endswith(f"tensor cores ({mma})") == bool(mma), rows[k["name"]]
    if precision == "fp32":
        assert on == 0 and "tensor cores" not in r.stdout
    else:
        assert 0 < on < len(manifest["kernels"])
        assert (f"tensor cores: {on} of {len(manifest['kernels'])} kernels (fp16 inputs, fp32 "
                "accumulation); the others run in fp32") in r.stdout


def test_build_help_lists_the_precisions():
    r = cli("build", "--help")
    assert r.returncode == 0
    assert "{" + ",".join(PRECISIONS) + "}" in r.stdout


def test_dump_ir_shows_the_ir_after_plan_memory(tmp_path):
    r = cli("build", "models/lenet.yaml", "--dump-ir", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    dumped = r.stdout.split("\n=== IR after plan_memory ===\n")[1].split("\n\n")[0].splitlines()
    assert dumped[0].endswith("fire_concat, plan_memory; batch 1)"), dumped[0]
    manifest = json.loads((tmp_path / "lenet" / "manifest.json").read_text())
    tensors = manifest["memory"]["tensors"]
    nodes = [line for line in dumped if line.startswith("  %")]
    assert [line.split()[0][1:] for line in nodes] == list(tensors)
    for line in nodes:
        name = line.split()[0][1:]
        where = tensors[name]
        at = f"@ {where['storage']}" + (f" float {where['offset_floats']:,}"
                                         if where["storage"] == "arena" else "")
        assert at in line, (at, line)
    assert f"arena {manifest['memory']['arena_bytes']:,} bytes" in dumped[-1]


def test_summary_prints_shapes_as_c_h_w():
    r = cli("summary", "models/lenet.yaml")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "model lenet: input 1x28x28 (CxHxW), output prob"
    assert "output (CxHxW or K)" in lines[1]
    assert lines[3].split()[:3] == ["conv1", "conv", "20x24x24"]


def test_summary_of_a_vector_model_says_k(tmp_path):
    (tmp_path / "v.yaml").write_text("name: v\ninput: {shape: [12]}\nlayers:\n"
                                     "  - {name: fc, op: linear, out: 4}\noutput: fc\n")
    r = cli("summary", tmp_path / "v.yaml")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "model v: input 12 (K), output fc"
    assert "output (K)" in lines[1] and "HxW" not in r.stdout


def test_per_layer_listing_shows_each_kernels_share_of_the_peaks():
    """bench --per-layer (formatted from a result, so no GPU is needed): a fp32 kernel against
    the SIMT peak, a tensor-core kernel against its precision's, both against HBM."""
    from squeezegen.runtime.bench import PEAKS, format_bench, roofline
    rows = [{"kernel": "conv1", "layers": ["conv1"], "ms": 0.1, "flops": 6.7e9, "bytes": 48e7,
             "tflops": 67.0 / 2, "gb_s": 4800.0 / 4, "mma": None},
            {"kernel": "conv10", "layers": ["conv10"], "ms": 0.1, "flops": 9.9e9, "bytes": 1e6,
             "tflops": 99.0, "gb_s": 10.0, "mma": "fp16"}]
    result = {"model": "m", "gpu": "NVIDIA H200", "driver": "x", "commit": "c", "date": "d",
              "rows": [], "per_layer": {"32": rows}}
    assert roofline(rows[0], "NVIDIA H200") == {"compute": "fp32", "of_compute": 0.5,
                                                "of_hbm": 0.25}
    assert roofline(rows[1], "NVIDIA H200")["of_compute"] == 99.0 / PEAKS["NVIDIA H200"]["fp16"]
    text = format_bench(result)
    assert " 50.0%   fp32  25.0%" in text and " 10.0%   fp16   0.2%" in text
    assert roofline(rows[0], "Some GPU") is None
    assert "HBM" not in format_bench({**result, "gpu": "Some GPU"})
