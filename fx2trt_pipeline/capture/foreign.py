"""Lower what graphs built elsewhere contain to the plain ops the quantizer and the converters handle.

::

    static_nodes + record (two example runs)       which values are constants, data shapes, the batch dim
    rebuild, node by node in graph order:
      static value used by the data path ->  get_attr constant   (anchor grids, onnx2torch Constant / Shape
                                                                  arithmetic, torch.tensor / full / arange,
                                                                  torchvision's relative-position bias)
      onnx2torch module                  ->  torch ops            (onnx2torch_ops, onnx2torch_shape)
      torchvision wrapped Swin helper    ->  static module ops    (swin_helpers)
      anything else                      ->  copied
    dead code removed, unused submodules deleted, recompiled

Only graphs that need it pay for the example runs: one with onnx2torch modules, wrapped Swin helpers, or a
static tensor that feeds the data path. A node that cannot be lowered stays as it was: the quantized model
still runs it, conversion lists it among the unsupported ops, and ``node.meta["fx2trt_not_lowered"]`` says why it
was not lowered.

Example:
    >>> import torch
    >>> class Grid(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x * torch.full((x.shape[-1],), 2.0)
    >>> gm = torch.fx.symbolic_trace(Grid())
    >>> gm = lower_foreign_graph(gm, (torch.randn(2, 3),))
    >>> [n.op for n in gm.graph.nodes]
    ['placeholder', 'get_attr', 'call_function', 'output']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.fx import GraphModule, Node

from fx2trt_pipeline.capture import onnx2torch_shape  # noqa: F401  (registers the shape lowerings)
from fx2trt_pipeline.capture.graph_rebuild import NotLowered, Rebuild
from fx2trt_pipeline.capture.onnx2torch_ops import lower_onnx2torch
from fx2trt_pipeline.capture.static_values import Recording, is_onnx2torch_module, record, static_nodes
from fx2trt_pipeline.capture.swin_helpers import WRAPPED, inline_helper
from fx2trt_pipeline.errors import CaptureError

#: ``node.meta`` key: why a foreign node was kept as it was.
NOT_LOWERED = "fx2trt_not_lowered"
_CALLS = ("call_function", "call_method", "call_module")


#: Calls that make a tensor from Python values: with static arguments, their results are constants.
_FACTORIES = frozenset(
    {torch.tensor, torch.as_tensor, torch.arange, torch.full, torch.zeros, torch.ones, torch.linspace, torch.eye}
)


def _frontier(gm: GraphModule, static: set[Node], onnx: set[Node]) -> list[Node]:
    """Static computed tensors read by a node that is not static: the candidates for constants.

    Only nodes computed from a tensor (a constant, a factory call, an onnx2torch module) count, so a graph whose
    only static values are sizes (``x.shape[-2:]`` for a resize) does not pay for the example runs.
    """
    tensors: set[Node] = set()
    for n in gm.graph.nodes:
        if n in static and (
            n.op == "get_attr" or n in onnx or n.target in _FACTORIES or any(i in tensors for i in n.all_input_nodes)
        ):
            tensors.add(n)
    return [n for n in tensors if n.op in _CALLS and any(u not in static for u in n.users)]


def _foldable(rec: Recording, node: Node) -> bool:
    return isinstance(rec.value(node), torch.Tensor) and not rec.follows_batch(node)


def lower_foreign_graph(gm: GraphModule, example_inputs: Sequence[Any] | None) -> GraphModule:
    """Lower ``gm`` in place (see the module docstring) and return it.

    Args:
        gm: a captured graph (ours, or one built by onnx2torch / torch.fx / torch.ao); its modules are changed.
        example_inputs: flat example inputs; without them only graphs that need nothing are accepted.

    Raises:
        CaptureError: an onnx2torch graph without example inputs, or a graph that does not run on them.
    """
    modules = dict(gm.named_modules())
    onnx = {n for n in gm.graph.nodes if n.op == "call_module" and is_onnx2torch_module(modules[str(n.target)])}
    helpers = {n for n in gm.graph.nodes if n.op == "call_function" and n.target in WRAPPED}
    static = static_nodes(gm)
    frontier = set(_frontier(gm, static, onnx))
    if not (onnx or helpers or frontier):
        return gm
    if example_inputs is None:
        if onnx:
            raise CaptureError(
                f"{type(gm).__name__} holds onnx2torch modules ({len(onnx)} nodes, e.g. {sorted(onnx, key=str)[0]}) "
                "whose shape and scale arguments are computed in the graph: pass example_inputs (a batch shaped "
                "like real data) so that they can be lowered to torch ops"
            )
        return gm
    rec = record(gm, example_inputs, static)
    rb = Rebuild(gm, rec)
    for node in gm.graph.nodes:
        if node.op == "output":
            rb.graph.output(rb.new(node.args[0]))
        elif node in frontier and _foldable(rec, node):
            rb.env[node] = rb.constant(rec.value(node), node.name)
        else:
            rb.env[node] = _replacement(rb, node, onnx, helpers)
    gm.graph = rb.graph
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _replacement(rb: Rebuild, node: Node, onnx: set[Node], helpers: set[Node]) -> Any:
    """The new value for a node that is not folded: lowered, inlined, or copied (with the reason kept)."""
    if (node in onnx and node not in rb.rec.static) or node in helpers:
        try:
            return lower_onnx2torch(rb, node) if node in onnx else inline_helper(rb, node)
        except NotLowered as exc:
            copied = rb.copy(node)
            copied.meta[NOT_LOWERED] = str(exc)
            return copied
    return rb.copy(node)


__all__ = ["NOT_LOWERED", "lower_foreign_graph"]
