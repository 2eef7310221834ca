"""Issue 15's proof in CI: the torchvision architectures users bring (written in plain PyTorch
in architectures.py, cut down in width), exported to ONNX at opsets 13 and 17, imported into
readable YAML, run on the NumPy reference against PyTorch, built and compiled with nvcc -Werror,
and (marker gpu) run on the GPU against the reference. The networks of more_architectures.py
(DenseNet, GoogLeNet, Inception-v3, U-Nets, YOLOv5, ...) likewise: at opset 17 with a fixed
batch, at opset 13 with a dynamic one, a few of them through nvcc and on the host
(tests/host_kernels.py), all of them on the GPU."""
from __future__ import annotations

import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import squeezegen                                                          # noqa: E402
from squeezegen.build import build                                         # noqa: E402
from squeezegen.frontend.onnx_import import import_onnx                    # noqa: E402
from squeezegen.passes import run_passes                                   # noqa: E402
from squeezegen.reference import ReferenceExecutor                         # noqa: E402
from architectures import ARCHITECTURES, architecture, build_model         # noqa: E402
from more_architectures import MORE_ARCHITECTURES                          # noqa: E402
from helpers import assert_close, needs_gpu                                # noqa: E402

TOL = 1e-5           # observed at most 5.4e-7 (fcn_resnet50) on the reference against PyTorch
                     # and 8.0e-7 (yolov5s) of more_architectures.py's

# more_architectures.py's networks also run at opset 13 with a dynamic batch, those whose shape
# arithmetic the batch enters (x.view(x.size(0), -1), F.pad by size differences, resizes to a
# size) or that the exporter folds otherwise (BiSeNet's and CBAM's avg_pool2d(x, x.size()[2:])
# need a fixed batch to export at all)
DYNAMIC = ["densenet121", "googlenet", "resnext50_32x4d", "unet", "unet_padded", "pspnet",
           "hrnet", "erfnet", "ghostnet", "fpn", "bifpn"]
# and those compiled with nvcc and run on the host (tests/host_kernels.py) in CI (all of them on
# the GPU): the channel gather and ceil-mode pools, ConvTranspose with F.pad and align_corners
# resizes, CBAM's gates
NVCC = ["googlenet", "unet_padded", "cbam_resnet18"]


def imported(name: str, opset: int, folder, batch: int = 2, dynamic: bool = False):
    """(graph, weights, YAML text, model, input batch): exported with the exporter's
    constant folding at opset 13 (BatchNorms folded by PyTorch) and without it at opset 17
    (BatchNorms imported as layers, folded by squeezegen's pass); `dynamic`: with a dynamic
    batch (the input's first axis named, as README's export shows)."""
    model = build_model(name)
    shape = architecture(name)[1]
    x = torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(3))
    path = folder / f"{name}_{opset}.onnx"
    more = dict(input_names=["x"], dynamic_axes={"x": {0: "batch"}}) if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x[:1],), str(path), dynamo=False, opset_version=opset,
                          do_constant_folding=opset == 13, **more)
    text, weights = import_onnx(path)
    return squeezegen.parse_model(text, f"{name}.yaml"), weights, text, model, x


def check_outputs(got, model, x, what: str) -> float:
    """The reference's output(s) against the PyTorch model's on `x`; the worst relative error."""
    with torch.no_grad():
        want = model(x)
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want), f"{what}: {len(got)} outputs, PyTorch has {len(want)}"
    return max(assert_close(g, w.numpy(), TOL, what=f"{what} output {i}")
               for i, (g, w) in enumerate(zip(got, want)))


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_imports_readably_and_matches_pytorch(name, opset, tmp_path):
    graph, weights, text, model, x = imported(name, opset, tmp_path)
    with torch.no_grad():
        want = model(x).numpy()
    got = ReferenceExecutor(graph, weights)(x.numpy())
    assert_close(got.reshape(want.shape), want, TOL, what=f"{name} opset {opset}")
    layers = [line for line in text.splitlines() if line.startswith("  - {")]
    assert all(re.match(r"  - \{name: [A-Za-z_][A-Za-z0-9_]*, op: \w+", ln) for ln in layers)
    norms = sum(" op: batchnorm" in ln for ln in layers)
    assert (norms > 0) == (opset == 17 and name not in ("squeezenet1_1", "convnext_tiny")), norms
    fused = run_passes(graph)
    assert not any(n.op == "batchnorm" for n in fused.nodes if n.inputs
                   and fused[n.inputs[0]].op in ("conv", "linear")), "every foldable one folds"


@pytest.mark.parametrize("name", list(MORE_ARCHITECTURES))
def test_more_architectures_import_readably_and_match_pytorch(name, tmp_path):
    graph, weights, text, model, x = imported(name, 17, tmp_path)
    check_outputs(ReferenceExecutor(graph, weights)(x.numpy()), model, x, f"{name} opset 17")
    layers = [line for line in text.splitlines() if line.startswith("  - {")]
    assert all(re.match(r"  - \{name: [A-Za-z_][A-Za-z0-9_]*, op: \w+", ln) for ln in layers)
    has_norms = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(" op: batchnorm" in ln for ln in layers) == has_norms
    fused = run_passes(graph)
    assert not any(n.op == "batchnorm" for n in fused.nodes if n.inputs
                   and fused[n.inputs[0]].op in ("conv", "deconv", "linear")), "foldable: folded"


@pytest.mark.parametrize("name", DYNAMIC)
def test_more_architectures_at_opset_13_with_a_dynamic_batch(name, tmp_path):
    graph, weights, _, model, x = imported(name, 13, tmp_path, batch=3, dynamic=True)
    check_outputs(ReferenceExecutor(graph, weights)(x.numpy()), model, x, f"{name} opset 13")


@pytest.mark.parametrize("name", NVCC)
def test_more_architectures_generated_kernels_on_the_host(name, tmp_path):
    """The generated CUDA run on the host against the reference (at 1e-4, as on the GPU), no
    load outside the network's buffers."""
    from host_kernels import COMPILER, run_on_host
    if COMPILER is None:
        pytest.skip("no C++ compiler")
    graph, weights, *_ = imported(name, 17, tmp_path, batch=1)
    x = np.random.default_rng(0).standard_normal((1,) + architecture(name)[1]).astype(np.float32)
    got, stray, _ = run_on_host(graph, weights, x, tmp_path)
    want = ReferenceExecutor(graph, weights)(x)
    assert stray == 0
    for g, w in zip(got, want if isinstance(want, tuple) else (want,)):
        assert_close(g, w, 1e-4, what=name)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_every_architecture_compiles_with_nvcc_werror(tmp_path):
    from test_codegen import nvcc
    sources = []
    for name in list(ARCHITECTURES) + NVCC:
        graph, weights, *_ = imported(name, 17, tmp_path)
        build(graph, 2, weights=weights, write=tmp_path / name)
        sources.append(tmp_path / name / graph.name / f"{graph.name}.cu")

    def compile_one(cu):
        nvcc("-c", str(cu), "-o", str(cu.with_suffix(".o")))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(compile_one, sources))


@needs_gpu
@pytest.mark.parametrize("name", list(ARCHITECTURES) + list(MORE_ARCHITECTURES))
def test_on_the_gpu_against_the_reference(name, tmp_path):
    graph, weights, _, model, x = imported(name, 17, tmp_path)
    want = ReferenceExecutor(graph, weights)(x.numpy())
    with squeezegen.compile(graph, weights, batch=2) as net:
        got = net(x.numpy())
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, 1e-4, what=f"{name} output {i}")


def test_an_imported_segmentation_net_runs_and_segments_images(tmp_path):
    """`squeezegen import`, then `squeezegen run` (image in, PNG mask out) and `segment` on
    images of other sizes than the network's (masks at each image's size)."""
    import subprocess
    import sys
    from PIL import Image

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "squeezegen", *map(str, args)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    model = build_model("lraspp_mobilenet_v3_large")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros((1,) + ARCHITECTURES["lraspp_mobilenet_v3_large"][1]),),
                          str(tmp_path / "lraspp.onnx"), dynamo=False, opset_version=17)
    cli("import", tmp_path / "lraspp.onnx", "-o", tmp_path / "lraspp.yaml")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(48, 64), (100, 70), (33, 41)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    cli("run", tmp_path / "lraspp.yaml", "--weights", tmp_path / "lraspp.npz", "--input",
        images / "0.jpg", "--output", tmp_path / "mask.png", "--backend", "numpy")
    assert Image.open(tmp_path / "mask.png").size == (48, 64)
    cli("segment", tmp_path / "lraspp.yaml", "--weights", tmp_path / "lraspp.npz", images, "-o",
        tmp_path / "out", "--backend", "numpy", "--quiet")
    assert Image.open(tmp_path / "out" / "1.jpg.png").size == (100, 70)
