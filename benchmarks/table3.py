"""The paper's Table 3 check: the mean of all output pixels of squeezeseg, from the NumPy
reference, PyTorch on the GPU and squeezegen's generated CUDA, for one seed's weights and input.

    python benchmarks/table3.py [--json benchmarks/results/table3.json]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from env_info import environment  # noqa: E402
from torch_models import SqueezeSeg  # noqa: E402

import squeezegen  # noqa: E402


def seeded_case(seed: int = 0):
    """PyTorch's default init under torch.manual_seed(seed), and a uniform [-128, 128) input."""
    torch.manual_seed(seed)
    model = SqueezeSeg().eval()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    x = (torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(seed)) * 255 - 128)
    return model, weights, x.numpy()


def pixel_means(seed: int = 0) -> dict:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model, weights, x = seeded_case(seed)
    graph = squeezegen.load_model("models/squeezeseg.yaml")
    means = {"numpy reference": float(squeezegen.reference(graph, weights)(x).astype(np.float64).mean())}
    with torch.no_grad():
        means["pytorch cuda"] = float(model.cuda()(torch.from_numpy(x).cuda()).double().mean())
    with squeezegen.compile(graph, weights, batch=1) as net:
        means["squeezegen cuda"] = float(net(x).astype(np.float64).mean())
    return means


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    means = pixel_means(args.seed)
    print("Table 3 analogue: mean of all output pixels of squeezeseg (seed", args.seed, ")")
    for k, v in means.items():
        print(f"  {k:18s} {v: .6f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "pixel_means": means, **environment()}, f, indent=1)


if __name__ == "__main__":
    main()
