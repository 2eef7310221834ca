"""The same network in PyTorch, built from the IR, for side-by-side timing and checks.

Each node runs its op's PyTorch peer (`OpInfo.torch`: F.conv2d, F.conv_transpose2d, F.linear,
F.max_pool2d, ...) with the node's weights held as parameters of the module, so that cuDNN, CUDA
graphs, torch.compile, half precision and channels_last all apply as they would to a
hand-written PyTorch model. Imported only when a comparison is asked for; torch is not a
dependency.
"""
from __future__ import annotations

from ..ir.ops import OPS, weights_under


def torch_module(graph, weights: dict):
    import torch
    import torch.nn as nn

    def held(prefix: str):
        """The weights `<prefix>.<name>` as fixed parameters, by their short name."""
        return nn.ParameterDict({
            name: nn.Parameter(torch.from_numpy(value.copy()), requires_grad=False)
            for name, value in weights_under(weights, prefix).items()})

    class Peer(nn.Module):
        def __init__(self):
            super().__init__()
            self.params = nn.ModuleDict()
            for node in graph.nodes[1:]:
                if node.param_prefix:
                    self.params[node.name] = held(node.param_prefix)
                for i, step in enumerate(node.epilogue):
                    if step.param_prefix:
                        self.params[f"{node.name}__step{i}"] = held(step.param_prefix)

        def forward(self, x):
            env = {graph.input.name: x}
            for node in graph.nodes[1:]:
                args = [env[i] for i in node.inputs]
                params = dict(self.params[node.name]) if node.name in self.params else {}
                y = OPS[node.op].torch(torch, node.attrs, args, params)
                for i, step in enumerate(node.epilogue):
                    held_by_step = self.params[f"{node.name}__step{i}"] \
                        if step.param_prefix else {}
                    y = (y + env[step.operand] if step.kind == "add" else
                         OPS[step.kind].torch(torch, step.attrs, [y], dict(held_by_step)))
                env[node.name] = y
            outs = tuple(env[o] for o in graph.outputs)
            return outs[0] if len(outs) == 1 else outs

    return Peer().eval()
