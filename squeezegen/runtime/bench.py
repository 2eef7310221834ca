"""`squeezegen bench`: time the generated network, and PyTorch on the same GPU, side by side.

Timings are the median of CUDA-event times after a warm-up, data already on the GPU on both
sides. squeezegen replays its CUDA graph; PyTorch runs eager, eager + CUDA graph and (if asked)
torch.compile, strict fp32 (TF32 off), from the same weights, in the same process.
"""
from __future__ import annotations

import datetime
import os
import subprocess
import time

import numpy as np

from ..ir.printer import node_flops
from ..errors import GPUError
from .network import Network, compile as compile_network, cuda, gpu_available


def environment(gpu: bool = True) -> dict:
    info = {"gpu": "none (CPU only)", "cuda_driver_api": "none",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if gpu:
        drv = cuda()
        version = drv.get_driver_version()
        info.update(gpu=drv.Context.get_device().name(),
                    cuda_driver_api=f"{version // 1000}.{version % 1000 // 10}")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        info["driver"] = smi.splitlines()[0] if smi else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = "unknown"
    commit = os.environ.get("SG_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            commit = ""
    info["commit"] = commit or "unknown"
    return info


def _median_events(drv, stream, fn, iters: int, warm: int) -> float:
    for _ in range(warm):
        fn()
    stream.synchronize()
    times = []
    for _ in range(iters):
        start, end = drv.Event(), drv.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(end.time_since(start))
    return float(np.median(times))


def time_network(net: Network, iters: int, warm: int = 10) -> float:
    x = np.random.default_rng(0).uniform(-1, 1, (net.batch,) + net.graph.input.type.shape)
    net(x.astype(np.float32))
    with net.active():
        return _median_events(net._drv, net.stream, net.forward_async, iters, warm)


def time_kernels(net: Network, repeats: int = 20) -> list[dict]:
    """Each kernel alone: `repeats` back-to-back launches replayed as one CUDA graph (so Python
    launch overhead is not measured), with its FLOPs and bytes."""
    from .cuda_graph import CudaGraph
    lib = CudaGraph.available()
    with net.active():
        return [_time_kernel(net, i, k, lib, repeats)
                for i, k in enumerate(net.build.output.manifest["kernels"])]


def _time_kernel(net: Network, i: int, k: dict, lib, repeats: int) -> dict:
    """Kernel number `i` of `net` alone (with the network's context current)."""
    from .cuda_graph import CudaGraph
    stream = net.stream
    outs = [int(o) for o in net._outputs]

    def launches():
        for _ in range(repeats):
            net.launch_kernels(stream, int(net._input), outs, only=i)
    graph = None
    if lib is not None:
        graph = CudaGraph(lib, stream.handle)
        with graph:
            launches()
    run = (lambda: graph.launch(stream.handle)) if graph else launches
    ms = _median_events(net._drv, stream, run, 5, 2) / repeats
    if graph:
        graph.close()
    return {"kernel": k["name"], "layers": k["layers"], "ms": ms, "flops": k["flops"],
            "bytes": k["bytes"], "tflops": k["flops"] / ms / 1e9, "gb_s": k["bytes"] / ms / 1e6,
            "mma": (k["tile"] or {}).get("mma"), "tile": k["tile"]}


# Dense peaks of the GPUs we measure on (datasheet figures, without sparsity): fp32 on the SIMT
# cores, tf32 and fp16 on the tensor cores (TFLOP/s), and HBM bandwidth (GB/s).
PEAKS = {
    "NVIDIA H200": {"fp32": 67.0, "tf32": 495.0, "fp16": 990.0, "hbm": 4800.0},
    "NVIDIA H100 80GB HBM3": {"fp32": 67.0, "tf32": 495.0, "fp16": 990.0, "hbm": 3350.0},
}


def roofline(row: dict, gpu: str) -> dict | None:
    """A kernel's share of the peak of what it computes on (the tensor cores at its precision,
    else fp32 SIMT) and of HBM bandwidth; None for a GPU without a known peak."""
    peak = PEAKS.get(gpu)
    if peak is None:
        return None
    unit = row.get("mma") or "fp32"
    return {"compute": unit, "of_compute": row["tflops"] / peak[unit],
            "of_hbm": row["gb_s"] / peak["hbm"]}


def time_torch(graph, weights, batch: int, iters: int, variants: list[str]) -> list[dict]:
    import torch
    from .torch_peer import torch_module
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model = torch_module(graph, weights).cuda()
    x = torch.rand((batch,) + graph.input.type.shape, device="cuda") * 2 - 1

    def timeit(fn, warm=10):
        for _ in range(warm):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b))
        return float(np.median(ts))

    rows = []
    with torch.no_grad():
        for _ in range(3):                # cuDNN's benchmark trials (and their workspaces) here
            model(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()      # then the steady state: one forward's peak
        base = torch.cuda.memory_allocated()
        model(x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        weights_bytes = sum(p.numel() * 4 for p in model.parameters())
        if "eager" in variants:
            rows.append({"variant": "torch eager fp32", "ms": timeit(lambda: model(x)),
                         "memory_bytes": peak + weights_bytes})
        if "graph" in variants:
            g = _cuda_graph(torch, lambda: model(x))
            rows.append({"variant": "torch eager+cudagraph fp32", "ms": timeit(g.replay)})
        if "fp16" in variants:            # PyTorch's fastest half-precision form on cuDNN
            half = torch_module(graph, weights).cuda().half().to(memory_format=torch.channels_last)
            xh = x.half().to(memory_format=torch.channels_last)
            g = _cuda_graph(torch, lambda: half(xh))
            rows.append({"variant": "torch fp16 channels_last+cudagraph", "ms": timeit(g.replay)})
        if "compile" in variants:
            torch._dynamo.reset()
            compiled = torch.compile(model, mode="reduce-overhead")
            t0 = time.time()
            compiled(x)
            torch.cuda.synchronize()
            rows.append({"variant": "torch.compile reduce-overhead fp32",
                         "ms": timeit(lambda: compiled(x)), "compile_s": time.time() - t0})
    return rows


def _cuda_graph(torch, fn):
    """`fn` captured in a CUDA graph, after warm-up runs on a side stream (as PyTorch asks)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def time_numpy(graph, weights, batch: int) -> float:
    """The NumPy reference on the CPU (the paper's "cpu" column): median wall time in ms."""
    from ..reference import ReferenceExecutor
    run = ReferenceExecutor(graph, weights)
    x = np.random.default_rng(0).uniform(-1, 1, (batch,) + graph.input.type.shape)
    x = x.astype(np.float32)
    run(x)
    times = []
    for _ in range(3 if batch >= 1000 else 10):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def bench(model, weights, batches: list[int], compare: list[str], per_layer: bool,
          iters: int = 50, tune: bool = True, log=None, precision: str = "fp32") -> dict:
    """Time the network at each batch (with the autotuner's tiles unless `tune` is off) and
    what `compare` names beside it; `log` hears what is being done. Without a GPU, only
    `compare=["numpy"]` runs: the CPU column alone."""
    if compare == ["numpy"] and not gpu_available():
        return _bench_numpy_only(model, weights, batches, precision, log)
    if not gpu_available():
        try:
            cuda()
        except GPUError as exc:
            raise GPUError(f"{exc.message} (`bench --compare numpy` times the NumPy reference "
                           "alone, without a GPU)") from None
    result = {"model": None, "rows": [], "per_layer": {}, "tuned": tune, "precision": precision,
              **environment()}
    for batch in batches:
        if log:
            log(f"batch {batch}: " + ("tuning the tiles not in the cache yet, then timing"
                                      if tune else "timing (heuristic tiles)"))
        with compile_network(model, weights, batch=batch, tune=tune, precision=precision) as net:
            graph = net.build.graph
            result["model"] = graph.name
            flops = sum(node_flops(graph, n) for n in graph.nodes[1:]) * batch
            n_iters = iters if batch <= 32 else max(10, iters // 3)
            ms = time_network(net, n_iters)
            memory = net.build.plan.arena_bytes + 4 * sum(v.size for v in net.weights.values())
            rows = [{"variant": f"squeezegen {precision}", "ms": ms, "memory_bytes": memory}]
            if per_layer:
                result["per_layer"][str(batch)] = time_kernels(net)
        if set(compare) - {"numpy"}:
            rows += time_torch(graph, net.weights, batch, n_iters, compare)
        if "numpy" in compare:
            rows.append({"variant": f"numpy reference (CPU, {os.cpu_count()} cores)",
                         "ms": time_numpy(graph, net.weights, batch)})
        best_torch = min((r["ms"] for r in rows if r["variant"].startswith("torch")), default=None)
        for r in rows:
            r.update(batch=batch, img_s=batch / r["ms"] * 1e3, tflops=flops / r["ms"] / 1e9)
            if best_torch:
                r["vs_best_torch"] = r["ms"] / best_torch
        result["rows"] += rows
    return result


def _bench_numpy_only(model, weights, batches, precision, log) -> dict:
    from ..frontend import load_model
    from ..weights import check_weights, load_weights
    graph = load_model(model)
    checked = check_weights(graph, load_weights(weights),
                            None if isinstance(weights, dict) else str(weights))
    flops = sum(node_flops(graph, n) for n in graph.nodes[1:])
    result = {"model": graph.name, "rows": [], "per_layer": {}, "tuned": False,
              "precision": precision, **environment(gpu=False)}
    for batch in batches:
        if log:
            log(f"batch {batch}: timing the NumPy reference (no GPU here)")
        ms = time_numpy(graph, checked, batch)
        result["rows"].append({"variant": f"numpy reference (CPU, {os.cpu_count()} cores)",
                               "ms": ms, "batch": batch, "img_s": batch / ms * 1e3,
                               "tflops": flops * batch / ms / 1e9})
    return result


def format_bench(result: dict) -> str:
    lines = [f"{result['model']} on {result['gpu']} (driver {result['driver']}), "
             f"commit {result['commit']}, {result['date']}",
             f"{'batch':>6} {'variant':36s} {'ms':>9} {'img/s':>10} {'TFLOP/s':>8} {'vs best torch':>14}"]
    for r in result["rows"]:
        ratio = f"{r['vs_best_torch']:.2f}x" if "vs_best_torch" in r else ""
        lines.append(f"{r['batch']:6d} {r['variant']:36s} {r['ms']:9.4f} {r['img_s']:10.1f} "
                     f"{r['tflops']:8.2f} {ratio:>14}")
    for batch, rows in result["per_layer"].items():
        total = sum(r["ms"] for r in rows)
        known = result["gpu"] in PEAKS
        lines.append(f"\nper kernel, batch {batch} (each alone; sum {total:.3f} ms)"
                     + (f"; share of the {result['gpu']}'s peaks: compute (fp32 SIMT, or the "
                        "tensor cores at the kernel's precision) and HBM" if known else ""))
        lines.append(f"{'kernel':32s} {'ms':>8} {'share':>6} {'MFLOP':>9} {'MB':>8} "
                     f"{'TFLOP/s':>8} {'GB/s':>7}" + (f" {'compute':>13} {'HBM':>6}" if known else ""))
        for r in sorted(rows, key=lambda r: -r["ms"]):
            line = (f"{r['kernel']:32s} {r['ms']:8.4f} {r['ms'] / total:6.1%} "
                    f"{r['flops'] / 1e6:9.1f} {r['bytes'] / 1e6:8.2f} {r['tflops']:8.2f} "
                    f"{r['gb_s']:7.0f}")
            share = roofline(r, result["gpu"])
            if share:
                line += f" {share['of_compute']:6.1%} {share['compute']:>6} {share['of_hbm']:6.1%}"
            lines.append(line)
    return "\n".join(lines)
