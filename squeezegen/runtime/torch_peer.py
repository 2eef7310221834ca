"""The same network in PyTorch, built from the IR with real nn modules, for side-by-side timing.

nn.Conv2d / ConvTranspose2d / Linear modules (so cuDNN, CUDA graphs, torch.compile, half
precision and channels_last all apply as they would to a hand-written PyTorch model), loaded with
the same weights. Imported only when a comparison is asked for; torch is not a dependency.
"""
from __future__ import annotations


def torch_module(graph, weights: dict):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Peer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleDict()
            for node in graph.nodes[1:]:
                a = node.attrs
                cin = graph[node.inputs[0]].type.shape[0] if node.inputs else 0
                if node.op == "conv":
                    m = nn.Conv2d(cin, a["out"], a["kernel"], a["stride"], a["pad"], bias=a["bias"])
                elif node.op == "deconv":
                    m = nn.ConvTranspose2d(cin, a["out"], a["kernel"], a["stride"], a["pad"],
                                           bias=a["bias"])
                elif node.op == "linear":
                    m = nn.Linear(graph[node.inputs[0]].type.numel, a["out"], bias=a["bias"])
                else:
                    continue
                prefix = node.param_prefix
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(weights[f"{prefix}.weight"]))
                    if a["bias"]:
                        m.bias.copy_(torch.from_numpy(weights[f"{prefix}.bias"]))
                self.layers[node.name] = m

        def forward(self, x):
            env = {graph.input.name: x}
            for node in graph.nodes[1:]:
                args = [env[i] for i in node.inputs]
                a = node.attrs
                if node.name in self.layers:
                    inp = args[0].flatten(1) if node.op == "linear" else args[0]
                    y = self.layers[node.name](inp)
                elif node.op == "maxpool":
                    y = F.max_pool2d(args[0], a["kernel"], a["stride"], a["pad"],
                                     ceil_mode=a["ceil_mode"])
                elif node.op == "avgpool":
                    y = F.avg_pool2d(args[0], a["kernel"], a["stride"], a["pad"],
                                     ceil_mode=a["ceil_mode"], count_include_pad=True)
                elif node.op == "add":
                    y = args[0]
                    for other in args[1:]:
                        y = y + other
                elif node.op == "concat":
                    y = torch.cat(args, 1)
                elif node.op == "relu":
                    y = F.relu(args[0])
                elif node.op == "softmax":
                    y = F.softmax(args[0], 1)
                else:
                    raise NotImplementedError(node.op)
                for step in node.epilogue:
                    y = F.relu(y) if step.kind == "relu" else y + env[step.operand]
                env[node.name] = y
            outs = tuple(env[o] for o in graph.outputs)
            return outs[0] if len(outs) == 1 else outs

    return Peer().eval()
