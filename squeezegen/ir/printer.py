"""Human-readable views of a graph: the per-layer summary (Table 1) and the IR dump."""
from __future__ import annotations

from .graph import Graph, Node
from .ops import node_flops, node_param_count, param_specs  # noqa: F401 (param_specs: for callers)


def _pair(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _window(nodes: list[Node], op: str) -> str:
    main = nodes[0]
    if op == "fire":
        convs = [n for n in nodes if n.op == "conv"]
        return f"squeeze {convs[0].attrs['out']}, expand {convs[1].attrs['out']}+{convs[2].attrs['out']}"
    if "kernel" in main.attrs:
        k, s = main.attrs["kernel"], main.attrs["stride"]
        text = f"{k[0]}x{k[1]}/{_pair(s)}"
        pad_end = main.attrs.get("pad_end", main.attrs["pad"])
        if pad_end != main.attrs["pad"]:
            text += f" pad {_pair(main.attrs['pad'])}+{_pair(pad_end)}"
        elif main.attrs["pad"] != (0, 0):
            text += f" pad {_pair(main.attrs['pad'])}"
        if main.attrs.get("dilation", (1, 1)) != (1, 1):
            text += f" dil {_pair(main.attrs['dilation'])}"
        if main.attrs.get("groups", 1) > 1:
            text += f" g{main.attrs['groups']}"
        if main.attrs.get("global"):
            text = "global"
        return text
    return ""


def summarize(graph: Graph) -> dict:
    """One row per YAML layer: op, output shape, window/stride, parameters and FLOPs per image."""
    by_layer: dict[str, list[Node]] = {}
    for node in graph.nodes[1:]:
        by_layer.setdefault(node.layer, []).append(node)
    rows = []
    for layer, op in graph.layer_ops:
        nodes = by_layer[layer]
        rows.append({
            "layer": layer, "op": op, "line": nodes[0].line,
            "shape": list(nodes[-1].type.shape),
            "window": _window(nodes, op),
            "params": sum(node_param_count(graph, n) for n in nodes),
            "flops": sum(node_flops(graph, n) for n in nodes),
        })
    return {"model": graph.name, "input": list(graph.input.type.shape),
            "layers": rows, "outputs": list(graph.output_labels),
            "total_params": sum(r["params"] for r in rows),
            "total_flops": sum(r["flops"] for r in rows)}


def _layout(shape) -> str:
    return "CxHxW" if len(shape) == 3 else "K"


def format_summary(summary: dict) -> str:
    def shape(s):
        return "x".join(str(d) for d in s)
    layouts = dict.fromkeys(_layout(r["shape"]) for r in summary["layers"])
    head = ("layer", "op", f"output ({' or '.join(layouts)})", "filter/stride", "params", "MFLOP")
    rows = [(r["layer"], r["op"], shape(r["shape"]), r["window"], f"{r['params']:,}",
             f"{r['flops'] / 1e6:,.1f}") for r in summary["layers"]]
    rows.append(("total", "", "", "", f"{summary['total_params']:,}",
                 f"{summary['total_flops'] / 1e6:,.1f}"))
    widths = [max(len(row[i]) for row in rows + [head]) for i in range(len(head))]
    right = {4, 5}

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    lines = [f"model {summary['model']}: input {shape(summary['input'])} "
             f"({_layout(summary['input'])}), "
             f"output {', '.join(summary['outputs'])}", fmt(head),
             fmt(tuple("-" * w for w in widths))]
    lines += [fmt(r) for r in rows[:-1]]
    lines += [fmt(tuple("-" * w for w in widths)), fmt(rows[-1])]
    return "\n".join(lines)


def format_node(node: Node, plan=None) -> str:
    attrs = ", ".join(f"{k}={_fmt_value(v)}" for k, v in node.attrs.items())
    operands = ", ".join("%" + i for i in node.inputs)
    text = f"%{node.name} = {node.op}({'; '.join(p for p in (operands, attrs) if p)})"
    text += f" : {node.type}"
    if node.epilogue:
        text += "  epilogue[" + ", ".join(str(s) for s in node.epilogue) + "]"
    if node.out_view:
        text += f"  -> %{node.out_view.into}[c{node.out_view.channel_offset}:]"
    if node.fused:
        text += f"  (fused: {', '.join(node.fused)})"
    if plan is not None:
        place = plan[node.name]
        text += f"  @ {place.storage}" + (f" float {place.offset:,}" if place.storage == "arena"
                                           or place.offset else "")
        if node.name in plan.scratch:
            text += f", split-K partials @ arena float {plan.scratch[node.name]:,}"
    return text + f"  # {node.layer}" + (f" line {node.line}" if node.line else "")


def _fmt_value(v) -> str:
    if isinstance(v, tuple):
        return ("x" if all(isinstance(x, int) for x in v) else ",").join(str(x) for x in v)
    return str(v).lower() if isinstance(v, bool) else str(v)


def format_graph(graph: Graph, plan=None) -> str:
    """The IR, one node a line; with a MemoryPlan, where each tensor lives (`@ arena float N`:
    its first element's offset in the arena) and the arena's size."""
    passes = graph.passes + (("plan_memory",) if plan is not None else ())
    lines = [f"graph {graph.name} ({len(graph.nodes)} nodes"
             + (f"; passes: {', '.join(passes)}" if passes else "")
             + (f"; batch {plan.batch}" if plan is not None else "") + ")"]
    lines += ["  " + format_node(n, plan) for n in graph.nodes]
    lines.append("  return " + ", ".join("%" + o for o in graph.outputs))
    lines += [f"  constant {c.name} [{', '.join(map(str, c.shape))}] = {c.note}"
              for c in graph.constants]
    if plan is not None:
        lines.append(f"  arena {plan.arena_bytes:,} bytes ({plan.unshared_bytes:,} without "
                     "sharing)")
    return "\n".join(lines)
