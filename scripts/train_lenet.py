"""Train the LeNet of models/lenet.yaml on the real handwritten digits; write squeezegen weights.

    .venv/bin/python scripts/train_lenet.py          # CPU, well under a minute

Data: models/data/digits28.npz (scripts/make_digits.py): 1,297 training and 500 held-out test
digits, 28x28 uint8. Input normalisation, the same everywhere (this script, the tests, the bench):

    x = pixels.astype(np.float32) / 255          # 0..1, shape (N, 1, 28, 28), no mean/std shift

Model: benchmarks/torch_models.LeNet, whose state_dict keys are squeezegen's weight names
(conv1, conv2, ip1, ip2). Its forward ends in softmax (squeezegen's `prob` layer), so training
uses the logits (the same layers without the softmax) and cross-entropy. Adam with a one-cycle
learning rate (peak 2e-3, stepped per batch), batch 64, 20 epochs, each training image shifted by
a random (dy, dx) in -2..2 pixels (zero filled). Everything is seeded (torch.manual_seed; NumPy's
default_rng(seed) for the shuffles and shifts) and deterministic algorithms are on. The test split
is used only for the final evaluation: these settings were chosen on a validation split carved
out of the training set (300 of the 1,297), not on the test digits.

Writes (atomically):
    models/weights/lenet_digits.npz   {key: float32 array}, keys exactly
                                      squeezegen.ir.printer.param_specs(load_model(lenet.yaml))
    models/weights/lenet_digits.json  test accuracy, epochs, seed, date, versions, time
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from torch_models import LeNet  # noqa: E402

import squeezegen  # noqa: E402
from squeezegen.ir.printer import param_specs  # noqa: E402

DATA = ROOT / "models" / "data" / "digits28.npz"
MODEL = ROOT / "models" / "lenet.yaml"
OUT = ROOT / "models" / "weights" / "lenet_digits.npz"
SEED = 0
EPOCHS = 20
BATCH = 64
LR = 2e-3           # the peak of the one-cycle schedule
SHIFT = 2          # training batches are shifted by up to this many pixels (augmentation)


def load_split(path: Path = DATA):
    """(x_train, y_train, x_test, y_test): x float32 (N, 1, 28, 28) = pixels / 255, y int64."""
    with np.load(path, allow_pickle=False) as d:
        x = d["images"].astype(np.float32)[:, None] / np.float32(255)
        y = d["labels"].astype(np.int64)
        tr, te = d["train_idx"], d["test_idx"]
    return x[tr], y[tr], x[te], y[te]


def shift(x: torch.Tensor, rng: np.random.Generator, most: int = SHIFT) -> torch.Tensor:
    """Augmentation: each image moved by its own random (dy, dx) in -most..most, zero filled."""
    if most == 0:
        return x
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i, (dy, dx) in enumerate(rng.integers(-most, most + 1, (len(x), 2)).tolist()):
        out[i, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[i, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def logits(model: LeNet, x: torch.Tensor) -> torch.Tensor:
    """LeNet.forward without the final softmax (kept in step with benchmarks/torch_models.py)."""
    x = F.max_pool2d(model.conv1(x), 2, 2, ceil_mode=True)
    x = F.max_pool2d(model.conv2(x), 2, 2, ceil_mode=True)
    x = F.relu(model.ip1(x.flatten(1)))
    return model.ip2(x)


def accuracy(model: LeNet, x: np.ndarray, y: np.ndarray) -> tuple[int, np.ndarray]:
    model.eval()
    with torch.no_grad():
        prob = model(torch.from_numpy(x))          # the full forward, softmax included
    pred = prob.argmax(1).numpy()
    return int((pred == y).sum()), pred


def train(epochs: int = EPOCHS, seed: int = SEED, threads: int | None = None, log=print):
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    x_tr, y_tr, x_te, y_te = load_split()
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR,
                                                total_steps=epochs * -(-len(y_tr) // BATCH))
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.from_numpy(rng.permutation(len(y_tr)))
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            loss = F.cross_entropy(logits(model, shift(xt[idx], rng)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        correct, _ = accuracy(model, x_tr, y_tr)
        log(f"epoch {epoch:2d}: loss {total / len(y_tr):.4f}, train accuracy "
            f"{correct / len(y_tr):.4f}, {time.perf_counter() - start:.1f} s")
    seconds = time.perf_counter() - start
    train_correct, _ = accuracy(model, x_tr, y_tr)
    test_correct, _ = accuracy(model, x_te, y_te)
    info = {
        "model": "models/lenet.yaml",
        "weights": "models/weights/lenet_digits.npz",
        "data": "models/data/digits28.npz",
        "data_sha256": hashlib.sha256(DATA.read_bytes()).hexdigest(),
        "input": "x = pixels / 255 (float32, 0..1), shape (N, 1, 28, 28)",
        "test_accuracy": round(test_correct / len(y_te), 6),
        "test_correct": test_correct,
        "test_count": len(y_te),
        "train_accuracy": round(train_correct / len(y_tr), 6),
        "train_count": len(y_tr),
        "epochs": epochs,
        "batch": BATCH,
        "optimizer": f"Adam, OneCycleLR(max_lr={LR}) per step",
        "augmentation": f"each training image shifted by a random (dy, dx) in -{SHIFT}..{SHIFT}",
        "loss": "cross-entropy on the logits (ip2), softmax only at inference",
        "seed": seed,
        "train_seconds": round(seconds, 2),
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    return model, info


def save(model: LeNet, info: dict, out: Path = OUT) -> None:
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    expected = param_specs(squeezegen.load_model(str(MODEL)))
    if set(weights) != set(expected) or any(tuple(weights[k].shape) != tuple(s)
                                            for k, s in expected.items()):
        raise SystemExit(f"state_dict {({k: v.shape for k, v in weights.items()})} does not "
                         f"match lenet.yaml's weights {expected}")
    out.parent.mkdir(parents=True, exist_ok=True)
    squeezegen.save_weights(out, {k: weights[k] for k in expected})
    meta = out.with_suffix(".json")
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(meta)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    model, info = train(args.epochs, args.seed, args.threads)
    save(model, info, args.out.resolve())
    print(f"test accuracy {info['test_correct']}/{info['test_count']} = "
          f"{info['test_accuracy']:.4f} after {info['epochs']} epochs, "
          f"{info['train_seconds']} s on {info['threads']} thread(s); wrote {args.out}")


if __name__ == "__main__":
    main()
