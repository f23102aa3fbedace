"""Graph inspection helpers for quantizer tests."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from fx2trt_pipeline.quantize import int8_ops
from fx2trt_pipeline.quantize.qdq_ops import is_dequantize, is_quantize

# Integer-arithmetic custom ops count as the functional op they compute.
CONV_FNS = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.linear, *int8_ops.FUNCTIONAL_OF)


def functional(node: Node):
    """The torch.nn.functional op a weighted node computes (integer-arithmetic ops map to theirs)."""
    return int8_ops.FUNCTIONAL_OF.get(node.target, node.target)


def nodes(gm: GraphModule, pred) -> list[Node]:
    return [n for n in gm.graph.nodes if pred(n)]


def act_quant_nodes(gm: GraphModule) -> list[Node]:
    return nodes(gm, lambda n: is_quantize(n))


def weight_dq_nodes(gm: GraphModule) -> list[Node]:
    return nodes(gm, lambda n: is_dequantize(n) and n.args[0].op == "get_attr")


def weighted_nodes(gm: GraphModule) -> list[Node]:
    return nodes(gm, lambda n: n.op == "call_function" and n.target in CONV_FNS)


def is_on_grid(gm: GraphModule, n) -> bool:
    """True when ``n`` is a dequantize, or a maxpool/cat of on-grid values (Q/DQ commutes with them)."""
    if not isinstance(n, Node):
        return False
    if is_dequantize(n):
        return True
    if n.op == "call_module" and isinstance(gm.get_submodule(n.target), torch.nn.MaxPool2d):
        return is_on_grid(gm, n.args[0])
    if n.op == "call_function" and n.target in (torch.cat,):
        return all(is_on_grid(gm, a) for a in n.args[0])
    return False


def adds(gm: GraphModule) -> list[Node]:
    return nodes(gm, lambda n: n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add))
