"""Issue 15's proof on real networks: torchvision models with random weights, exported to ONNX,
imported with squeezegen, checked on the NumPy reference and the GPU against PyTorch, and timed
against PyTorch eager fp32 (the same function, `bench --compare eager`) at batch 1 and 32.

    source .device/env.sh && python3 scripts/torchvision_check.py --out $OUT/torchvision.json \\
        resnet18 mobilenet_v2 lraspp_mobilenet_v3_large

Runs where torchvision is installed (the H200 machine); nothing is downloaded (weights=None).
BatchNorm statistics are redrawn, so that folding them is tested on more than the identity, and
ConvNeXt's layer scales set to 0.1 (from 1e-6), so that its blocks count in the comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEGMENTATION = {"lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50"}


def torchvision_model(name: str):
    import torch
    import torchvision
    if name in SEGMENTATION:
        full = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None)

        class Out(torch.nn.Module):            # the "out" entry of the dict they return
            def __init__(self):
                super().__init__()
                self.net = full

            def forward(self, x):
                return self.net(x)["out"]
        model = Out()
    else:
        model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        for key, p in model.named_parameters():     # ConvNeXt's 1e-6 would hide its blocks
            if key.endswith("layer_scale"):
                p.fill_(0.1)
    return model.eval()


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check(name: str, opset: int, folder: Path, bench_batches: list[int], log,
          tune: bool = False, per_layer: bool = False) -> dict:
    import torch
    import squeezegen
    from squeezegen.frontend.onnx_import import write_import
    from squeezegen.reference import ReferenceExecutor
    from squeezegen.runtime.bench import bench
    size = 520 if name in SEGMENTATION else 224
    row = {"model": name, "opset": opset, "size": size}
    model = torchvision_model(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    onnx_path = folder / f"{name}_{opset}.onnx"
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(onnx_path), dynamo=False, opset_version=opset)
    yaml_path = folder / f"{name}_{opset}.yaml"
    write_import(onnx_path, yaml_path)
    graph = squeezegen.load_model(yaml_path)
    weights = squeezegen.load_weights(yaml_path.with_suffix(".npz"))
    row["import_s"] = round(time.time() - t, 1)
    row["layers"] = len(graph.layer_ops)
    row["ops"] = sorted({op for _, op in graph.layer_ops})
    t = time.time()
    ref = ReferenceExecutor(graph, weights)(x.numpy())
    ref = ref.reshape(want.shape)                 # a classifier's [N, K] is our K x 1 x 1
    row["reference_vs_torch"] = rel(ref, want)
    row["reference_s"] = round(time.time() - t, 1)
    log(f"{name} opset {opset}: {row['layers']} layers {row['ops']}, reference vs PyTorch "
        f"{row['reference_vs_torch']:.2e}")
    t = time.time()
    with squeezegen.compile(graph, weights, batch=1) as net:
        got = net(x.numpy())
    got = got.reshape(want.shape)
    row["gpu_vs_reference"] = rel(got, ref)
    row["gpu_vs_torch"] = rel(got, want)
    row["compile_s"] = round(time.time() - t, 1)
    log(f"{name} opset {opset}: GPU vs reference {row['gpu_vs_reference']:.2e}, vs PyTorch "
        f"{row['gpu_vs_torch']:.2e} ({row['compile_s']} s to build and compile)")
    if bench_batches:
        result = bench(graph, weights, bench_batches, ["eager"], per_layer=per_layer, tune=tune,
                       iters=30)
        row["tuned"] = tune
        if per_layer:                          # each kernel's time and share of the peaks
            row["per_layer"] = result["per_layer"]
        row["bench"] = [{k: r[k] for k in ("batch", "variant", "ms", "img_s")}
                        for r in result["rows"]]
        for batch in bench_batches:
            ours = next(r["ms"] for r in result["rows"] if r["batch"] == batch
                        and r["variant"].startswith("squeezegen"))
            theirs = next(r["ms"] for r in result["rows"] if r["batch"] == batch
                          and r["variant"].startswith("torch"))
            log(f"{name} batch {batch}: squeezegen{' tuned' if tune else ''} {ours:.3f} ms, "
                f"torch eager {theirs:.3f} ms ({ours / theirs:.2f}x)")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--opsets", default="13,17")
    ap.add_argument("--bench", default="1,32", help="batches to time (at the first opset); '' none")
    ap.add_argument("--tune", action="store_true", help="bench with the autotuner's tiles")
    ap.add_argument("--per-layer", action="store_true",
                    help="also time each kernel at the bench batches (into the JSON)")
    ap.add_argument("--deadline", type=float, default=1e9, help="start no model after this many s")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    start = time.time()

    def log(text):
        print(f"[{time.time() - start:6.1f} s] {text}", flush=True)
    from squeezegen.runtime.bench import environment
    from squeezegen.runtime.network import gpu_available
    env = environment(gpu=gpu_available())
    rows = []
    opsets = [int(o) for o in args.opsets.split(",")]
    batches = [int(b) for b in args.bench.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for opset in opsets:
                if time.time() - start > args.deadline:
                    log(f"deadline: {name} opset {opset} not started")
                    continue
                try:
                    rows.append(check(name, opset, Path(tmp), batches if opset == opsets[0]
                                      else [], log, args.tune, args.per_layer))
                except Exception as exc:         # report and go on with the next model
                    log(f"{name} opset {opset}: FAILED {type(exc).__name__}: {exc}")
                    rows.append({"model": name, "opset": opset, "error": f"{type(exc).__name__}: "
                                                                          f"{exc}"})
                Path(args.out).write_text(json.dumps({**env, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
