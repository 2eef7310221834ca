"""Each pass as before/after IR, the planner's invariants, and the planned executor against the
unfused reference (squeezeseg and random models)."""
from __future__ import annotations

import numpy as np
import pytest

from squeezegen import parse_model, load_model
from squeezegen.ir.graph import Attrs, EpilogueStep, OutView
from squeezegen.ir.printer import param_specs
from squeezegen.passes import fire_concat, fuse_add, fuse_pool, fuse_relu, run_passes
from squeezegen.codegen.schedule import schedule, scratch_needs
from squeezegen.passes.plan_memory import plan_memory
from squeezegen.reference import ReferenceExecutor
from squeezegen.reference.planned import PlannedExecutor
from random_models import random_model


def model(layers: str, shape="[3, 9, 7]", output="out") -> str:
    return f"name: t\ninput: {{shape: {shape}}}\nlayers:\n{layers}\noutput: {output}\n"


def random_weights(graph, seed=0):
    """Normal weights (x0.5), BatchNorm variances positive (a negative one is refused)."""
    rng = np.random.default_rng(seed)
    return {k: (rng.uniform(0.3, 3.0, s) if k.endswith(".running_var") else
                rng.standard_normal(s) * 0.5).astype(np.float32)
            for k, s in param_specs(graph).items()}


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# ------------------------------------------------------------------------- the IR
def test_attrs_in_another_order_are_equal_and_hash_equal():
    a, b = Attrs(kernel=(3, 3), stride=(1, 1)), Attrs(stride=(1, 1), kernel=(3, 3))
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert list(b) == ["stride", "kernel"]          # the order itself is kept


# ------------------------------------------------------------------------- fuse_relu
def test_fuse_relu_moves_relu_into_conv_epilogue():
    g = parse_model(model("  - {name: out, op: conv, out: 4, kernel: 3, relu: true}"))
    assert [n.op for n in g.nodes] == ["input", "conv", "relu"]
    f = fuse_relu.run(g)
    assert [n.op for n in f.nodes] == ["input", "conv"]
    assert f["out"].epilogue == (EpilogueStep("relu"),)
    assert f["out"].fused == ("out_relu",)
    assert f.outputs == ("out",)
    assert [n.op for n in g.nodes] == ["input", "conv", "relu"], "the input graph was mutated"


def test_fuse_relu_skips_a_conv_with_two_readers():
    g = parse_model(model("  - {name: c, op: conv, out: 4, kernel: 1}\n"
                          "  - {name: r, op: relu}\n"
                          "  - {name: out, op: add, inputs: [c, r]}"))
    f = fuse_relu.run(g)
    assert "r" in f and f["c"].epilogue == ()


def test_fuse_relu_fuses_into_a_pool_but_not_into_a_concat():
    g = parse_model(model("  - {name: p, op: maxpool, kernel: 2}\n  - {name: out, op: relu}"))
    f = fuse_relu.run(g)
    assert [n.op for n in f.nodes] == ["input", "maxpool"] and f["p"].fused == ("out",)
    g = parse_model(model("  - {name: a, op: maxpool, kernel: 2}\n"
                          "  - {name: b, op: avgpool, kernel: 2, input: input}\n"
                          "  - {name: c, op: concat, inputs: [a, b]}\n  - {name: out, op: relu}"))
    assert [n.op for n in fuse_relu.run(g).nodes][-2:] == ["concat", "relu"]


# ------------------------------------------------------------------------- fuse_pool
def test_fuse_pool_folds_a_2x2_max_pool_into_the_conv():
    g = parse_model(model("  - {name: c, op: conv, out: 4, kernel: 2, relu: true}\n"
                          "  - {name: out, op: maxpool, kernel: 2, stride: 2}", shape="[3, 9, 7]"))
    f = fuse_pool.run(fuse_relu.run(g))
    assert [n.op for n in f.nodes] == ["input", "conv"]
    assert f["c"].attrs["pool"] == (2, 2) and f["c"].type.shape == (4, 4, 3)
    assert f["c"].fused == ("c_relu", "out") and f.outputs == ("c",)
    x = np.random.default_rng(0).standard_normal((3, 3, 9, 7)).astype(np.float32)
    w = random_weights(g)
    plan = plan_memory(f, 3, schedule(f, 3))
    np.testing.assert_array_equal(PlannedExecutor(f, plan, w)(x), ReferenceExecutor(g, w)(x))


@pytest.mark.parametrize("why, layers", [
    ("overlapping windows", "{name: out, op: maxpool, kernel: 3, stride: 2}"),
    ("padding", "{name: out, op: maxpool, kernel: 2, stride: 2, pad: 1}"),
    ("a 3x3 window", "{name: out, op: maxpool, kernel: 3, stride: 3}"),
    ("a partial ceil-mode window", "{name: out, op: maxpool, kernel: 2, stride: 2, ceil_mode: true}"),
    ("an average pool", "{name: out, op: avgpool, kernel: 2, stride: 2}"),
])
def test_fuse_pool_leaves_pools_it_cannot_fold(why, layers):
    g = parse_model(model("  - {name: c, op: conv, out: 4, kernel: 2}\n  - " + layers))  # 8x6 out
    if why == "a partial ceil-mode window":
        g = parse_model(model("  - {name: c, op: conv, out: 4, kernel: 3}\n  - " + layers))  # 7x5
    assert "out" in fuse_pool.run(g), why


def test_fuse_pool_needs_the_conv_alone_and_no_skip_add_before():
    two_readers = parse_model(model("  - {name: c, op: conv, out: 3, kernel: 1}\n"
                                    "  - {name: p, op: maxpool, kernel: 2, stride: 2}\n"
                                    "  - {name: out, op: maxpool, input: c, kernel: 1}", output="[p, out]"))
    assert "p" in fuse_pool.run(two_readers)
    skip = parse_model(model("  - {name: c, op: conv, out: 3, kernel: 1}\n"
                             "  - {name: s, op: add, inputs: [c, input]}\n"
                             "  - {name: out, op: maxpool, kernel: 2, stride: 2}"))
    f = run_passes(skip)
    assert "out" in f and f["c"].epilogue[0].kind == "add"


def test_lenet_runs_two_fused_conv_pool_kernels():
    f = run_passes(load_model("models/lenet.yaml"))
    assert [n.op for n in f.nodes] == ["input", "conv", "conv", "linear", "linear", "softmax"]
    assert f["conv1"].type.shape == (20, 12, 12) and f["conv2"].type.shape == (50, 4, 4)


# ------------------------------------------------------------------------- fuse_add
def test_fuse_add_folds_skip_add_into_later_conv():
    g = load_model("models/squeezeseg.yaml")
    f = fuse_add.run(fuse_relu.run(g))
    assert not any(n.op == "add" for n in f.nodes)
    assert f["score_pool8"].epilogue == (EpilogueStep("add", "score"),)
    assert f["score_pool4"].epilogue == (EpilogueStep("add", "conv11"),)
    assert f["conv11"].inputs == ("score_pool8",), "readers of fuse8 must read the fused node"


def test_fuse_add_then_relu_keeps_order():
    g = parse_model(model("  - {name: a, op: conv, out: 4, kernel: 1}\n"
                          "  - {name: b, op: conv, input: input, out: 4, kernel: 3, pad: 1}\n"
                          "  - {name: out, op: add, inputs: [a, b], relu: true}"))
    f = run_passes(g)
    node = f["b"]
    assert node.epilogue == (EpilogueStep("add", "a"), EpilogueStep("relu"))
    assert f.outputs == ("b",) and f.output_labels == ("out",)


def test_fuse_add_does_not_fuse_when_no_operand_is_a_kernel():
    g = parse_model(model("  - {name: p, op: maxpool, kernel: 1}\n"
                          "  - {name: out, op: add, inputs: [p, input]}"))
    assert any(n.op == "add" for n in run_passes(g).nodes)


# ------------------------------------------------------------------------- fire_concat
def test_fire_concat_writes_expands_into_channel_slices():
    g = run_passes(load_model("models/squeezeseg.yaml"))
    assert g["fire2_expand1x1"].out_view == OutView("fire2", 0)
    assert g["fire2_expand3x3"].out_view == OutView("fire2", 64)
    assert g["fire2"].attrs["in_place"] == ("fire2_expand1x1", "fire2_expand3x3")


def test_fire_concat_copies_operands_it_cannot_place():
    g = parse_model(model("  - {name: c, op: conv, out: 2, kernel: 1}\n"
                          "  - {name: out, op: concat, inputs: [input, c]}"))
    f = fire_concat.run(g)
    assert f["c"].out_view == OutView("out", 3)
    assert f["out"].attrs["in_place"] == ("c",)


def test_squeezeseg_has_no_concat_relu_or_add_kernels():
    from squeezegen.build import build
    result = build("models/squeezeseg.yaml", 1)
    ops = [k.node.op for k in result.output.kernels]
    assert "concat" not in ops and "relu" not in ops and "add" not in ops
    assert ops.count("conv") == 1 + 8 * 3 + 5 and ops.count("deconv") == 3
    cu = result.output.files["squeezeseg.cu"].decode()
    assert "fire2_expand3x3_relu(" in cu and "score_pool8_add(" in cu


# ------------------------------------------------------------------------- plan_memory
def _assert_no_live_overlap(plan):
    for a in plan.buffers:
        for b in plan.buffers:
            if a is b or a.last < b.first or b.last < a.first:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


def test_plan_shares_memory_in_squeezeseg():
    g = run_passes(load_model("models/squeezeseg.yaml"))
    tiles = schedule(g, 3)
    needs = scratch_needs(g, 3, tiles)
    assert needs, "small layers at batch 3 should split K"
    plan = plan_memory(g, 3, tiles, needs)
    _assert_no_live_overlap(plan)
    assert plan.counters_offset >= max(b.offset + b.size for b in plan.buffers)
    assert set(plan.scratch) == set(needs) == set(plan.counters)
    assert plan.arena_bytes < 0.4 * plan.unshared_bytes
    assert all(b.offset % 256 == 0 for b in plan.buffers)
    assert plan["conv13"].storage == "output0" and plan["input"].storage == "input"
    assert plan["fire2_expand3x3"].offset == plan["fire2"].offset + 64 * 55 * 55


@pytest.mark.parametrize("seed", range(60))
def test_planned_executor_matches_reference_on_random_models(seed):
    g = parse_model(random_model(seed))
    fused = run_passes(g)
    batch = 1 + seed % 3
    tiles = schedule(fused, batch)
    plan = plan_memory(fused, batch, tiles, scratch_needs(fused, batch, tiles))
    _assert_no_live_overlap(plan)
    w = random_weights(g, seed)
    x = np.random.default_rng(seed).standard_normal((batch,) + g.input.type.shape).astype(np.float32)
    want = ReferenceExecutor(fused, w)(x)
    got = PlannedExecutor(fused, plan, w)(x)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                    strict=True):
        np.testing.assert_array_equal(a, b)     # the same ops in the same order: bit for bit
    if not fused.constants:                     # no weights folded: the same numbers as before
        for a, b in zip(*(y if isinstance(y, tuple) else (y,) for y in (want, ReferenceExecutor(g, w)(x))),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_planned_executor_matches_reference_on_squeezeseg():
    g = load_model("models/squeezeseg.yaml")
    fused = run_passes(g)
    w = random_weights(g, 1)
    x = np.random.default_rng(0).uniform(-128, 128, (2, 3, 227, 227)).astype(np.float32)
    want = ReferenceExecutor(g, w)(x)
    got = PlannedExecutor(fused, plan_memory(fused, 2), w)(x)
    np.testing.assert_array_equal(got, want)


def test_planned_executor_catches_a_bad_plan():
    """A plan with every tensor at offset 0 must be caught: the check can fail."""
    import dataclasses
    g = load_model("models/squeezeseg.yaml")
    fused = run_passes(g)
    plan = plan_memory(fused, 1)
    broken = {k: (dataclasses.replace(p, offset=0) if p.storage == "arena" else p)
              for k, p in plan.placements.items()}
    bad = dataclasses.replace(plan, placements=broken)
    w = random_weights(g, 1)
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    with pytest.raises(AssertionError, match="memory plan bug"):
        PlannedExecutor(fused, bad, w)(x)


def test_planned_executor_catches_output_over_input_and_poisoned_scratch():
    import dataclasses
    g = load_model("models/squeezeseg.yaml")
    fused = run_passes(g)
    tiles = schedule(fused, 1)
    plan = plan_memory(fused, 1, tiles, scratch_needs(fused, 1, tiles))
    w = random_weights(g, 1)
    x = np.random.default_rng(0).standard_normal((1, 3, 227, 227)).astype(np.float32)
    # 1. a kernel writing over its own input
    bad = dict(plan.placements)
    bad["fire2_squeeze"] = dataclasses.replace(bad["fire2_squeeze"], offset=bad["pool1"].offset)
    with pytest.raises(AssertionError, match="writes floats"):
        PlannedExecutor(fused, dataclasses.replace(plan, placements=bad), w)(x)
    # 2. a live tensor placed inside a split-K kernel's partial sums
    scratch, victim = next((s, v) for s in plan.buffers if s.tensor.endswith(".partials")
                           for v in plan.buffers if v.first < s.first and v.last > s.last)
    moved = tuple(dataclasses.replace(b, offset=victim.offset) if b is scratch else b
                  for b in plan.buffers)
    got = PlannedExecutor(fused, dataclasses.replace(plan, buffers=moved), w)(x)
    assert np.isnan(got).any() or rel_err(got, ReferenceExecutor(g, w)(x)) > 1e-5
