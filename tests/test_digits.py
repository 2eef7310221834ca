"""LeNet (models/lenet.yaml) on real handwritten digits: the trained weights, the NumPy reference
and the generated CUDA against PyTorch on the 500 held-out digits of models/data/digits28.npz.

Data: scikit-learn's 1,797 handwritten 8x8 digits resized to 28x28 (scripts/make_digits.py,
provenance in models/data/README.md), a fixed 1,297/500 train/test split stored in the file.
Weights: scripts/train_lenet.py -> models/weights/lenet_digits.npz (+ .json with its accuracy).
Input normalisation, as in training: x = pixels / 255, float32, shape (N, 1, 28, 28).

CPU tests run everywhere; the GPU test (marker `gpu`) is skipped, with the reason, unless
squeezegen.runtime.network.gpu_available().
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import squeezegen
from squeezegen.ir.printer import param_specs
from squeezegen.reference import ReferenceExecutor
from squeezegen.weights import check_weights
from helpers import assert_close

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet.yaml"
DATA = ROOT / "models" / "data" / "digits28.npz"
WEIGHTS = ROOT / "models" / "weights" / "lenet_digits.npz"
RECORD = WEIGHTS.with_suffix(".json")
N_ALL, N_TEST = 1797, 500
MIN_ACCURACY = 0.95
PROB_TOL = 1e-5          # max abs error relative to max |p|, reference (NumPy, fp32) vs PyTorch CPU
GPU_TOL = 1e-4           # the generated CUDA vs the reference (as tests/test_gpu.py)


def load_digits_split(path: Path = DATA):
    """(x_test, y_test) of the stored split, normalised as in training: pixels / 255."""
    with np.load(path, allow_pickle=False) as d:
        images, labels, test_idx = d["images"], d["labels"], d["test_idx"]
    x = images[test_idx].astype(np.float32)[:, None] / np.float32(255)
    return np.ascontiguousarray(x), labels[test_idx].astype(np.int64)


@pytest.fixture(scope="module")
def graph():
    return squeezegen.load_model(str(MODEL))


@pytest.fixture(scope="module")
def weights():
    return squeezegen.load_weights(str(WEIGHTS))


@pytest.fixture(scope="module")
def test_set():
    return load_digits_split()


@pytest.fixture(scope="module")
def reference_probs(graph, weights, test_set):
    return ReferenceExecutor(graph, weights, str(WEIGHTS))(test_set[0])


@pytest.fixture(scope="module")
def torch_probs(weights, test_set):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from torch_models import LeNet
    model = LeNet().eval()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                           for k, v in weights.items()}, strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(test_set[0])).numpy()


def accuracy(probs, labels) -> float:
    return float((probs.argmax(1) == labels).mean())


def test_digits_file_and_split():
    with np.load(DATA, allow_pickle=False) as d:
        assert {"images", "labels", "train_idx", "test_idx"} <= set(d.files), d.files
        images, labels = d["images"], d["labels"]
        train_idx, test_idx = d["train_idx"], d["test_idx"]
    assert images.shape == (N_ALL, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (N_ALL,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9
    assert images.max() == 255 and images.min() == 0
    assert (images.reshape(N_ALL, -1).max(1) > 0).all(), "an empty image"
    assert len(test_idx) == N_TEST and len(train_idx) == N_ALL - N_TEST
    assert len(np.intersect1d(train_idx, test_idx)) == 0, "train and test overlap"
    assert np.array_equal(np.union1d(train_idx, test_idx), np.arange(N_ALL))
    # every class is represented in the held-out set
    assert (np.bincount(labels[test_idx], minlength=10) >= 20).all()


def test_weights_fit_lenet(graph, weights):
    specs = param_specs(graph)
    assert sorted(weights) == sorted(specs)
    for key, shape in specs.items():
        assert weights[key].dtype == np.float32, key
        assert tuple(weights[key].shape) == tuple(shape), key
    check_weights(graph, weights, str(WEIGHTS))       # finite, float: raises otherwise


def test_reference_accuracy_on_held_out_digits(reference_probs, test_set):
    x, y = test_set
    assert x.shape == (N_TEST, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    acc = accuracy(reference_probs, y)
    assert acc >= MIN_ACCURACY, f"reference accuracy {acc:.4f} < {MIN_ACCURACY}"


def test_reference_matches_pytorch(reference_probs, torch_probs):
    ref_pred, torch_pred = reference_probs.argmax(1), torch_probs.argmax(1)
    differ = np.flatnonzero(ref_pred != torch_pred)
    assert differ.size == 0, (f"{differ.size} prediction(s) differ, first at test image "
                              f"{differ[:5].tolist()}")
    assert_close(reference_probs, torch_probs, PROB_TOL, "reference vs PyTorch probabilities")


def test_recorded_accuracy_is_what_the_reference_gets(reference_probs, test_set):
    record = json.loads(RECORD.read_text())
    assert record["test_count"] == N_TEST
    assert record["data_sha256"] == hashlib.sha256(DATA.read_bytes()).hexdigest(), (
        "the weights were trained on another digits28.npz: rerun scripts/train_lenet.py")
    acc = accuracy(reference_probs, test_set[1])
    assert abs(record["test_accuracy"] - acc) <= 0.001, (
        f"{RECORD.name} records {record['test_accuracy']}, the reference gets {acc:.4f}")


def _gpu_reason():
    from squeezegen.runtime.network import GPUError, cuda    # a broken runtime fails, never skips
    try:
        cuda()
    except GPUError as exc:
        return str(exc)
    return None


@pytest.mark.gpu
def test_generated_cuda_on_held_out_digits(graph, weights, test_set, reference_probs, torch_probs):
    reason = _gpu_reason()
    if reason is not None:
        pytest.skip(f"no GPU: {reason}")
    x, y = test_set
    with squeezegen.compile(graph, weights, batch=N_TEST) as net:
        probs = net(x)
    assert probs.shape == (N_TEST, 10)
    acc = accuracy(probs, y)
    pred = probs.argmax(1)
    print(f"\nLeNet on {N_TEST} held-out digits: generated CUDA accuracy {acc:.4f}, "
          f"PyTorch (CPU) {accuracy(torch_probs, y):.4f}, reference "
          f"{accuracy(reference_probs, y):.4f}")
    assert acc >= MIN_ACCURACY, f"generated CUDA accuracy {acc:.4f} < {MIN_ACCURACY}"
    for name, other in (("PyTorch", torch_probs), ("the reference", reference_probs)):
        differ = np.flatnonzero(pred != other.argmax(1))
        assert differ.size == 0, (f"{differ.size} prediction(s) differ from {name}, first at "
                                  f"test image {differ[:5].tolist()}")
    assert_close(probs, reference_probs, GPU_TOL, "generated CUDA vs reference probabilities")
