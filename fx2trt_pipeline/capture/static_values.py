"""Values a captured graph computes without looking at its input data, recorded from two example runs.

Graphs that reach us from elsewhere compute part of their work from constants and tensor *shapes* only:
onnx2torch's ``Shape -> Gather -> Concat -> Reshape`` chains and ``Constant`` nodes, anchor grids built in
``forward`` with ``torch.arange`` / ``torch.full`` / ``torch.tensor``, torchvision's relative-position bias.
A node is *static* when every input it reads is static: constants (``get_attr``, onnx2torch ``Constant``),
shape reads (``x.shape``, ``x.size()``, ``x.dim()``, onnx2torch ``Shape``) and nodes computed from them
alone. Regular layers (``call_module`` on non-onnx2torch modules) and random ops are never static.

The graph runs twice, on the example batch and on the same batch with one more row: a static value that is
the same in both runs does not depend on the batch and can become a constant; one that differs follows the
batch size (e.g. ``[N, 68, -1]`` for a reshape), and whoever lowers its consumer must say so with the
batch dim. A graph that fails at the larger batch was exported with a fixed batch: every value is taken as
it is.

Example:
    >>> import torch
    >>> class Anchors(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x + torch.arange(x.shape[-1], dtype=torch.float32)
    >>> gm = torch.fx.symbolic_trace(Anchors())
    >>> rec = record(gm, (torch.randn(2, 3),))
    >>> arange = next(n for n in gm.graph.nodes if n.target is torch.arange)
    >>> rec.value(arange).tolist(), rec.follows_batch(arange)
    ([0.0, 1.0, 2.0], False)
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node

from fx2trt_pipeline.errors import CaptureError

#: Ops whose value changes from call to call: never folded into constants.
_RANDOM = frozenset(
    {
        torch.rand,
        torch.randn,
        torch.randint,
        torch.rand_like,
        torch.randn_like,
        torch.randint_like,
        torch.randperm,
        torch.normal,
        torch.bernoulli,
        torch.empty,
        torch.empty_like,
    }
)
_SHAPE_METHODS = ("size", "dim", "ndimension")
_SHAPE_ATTRIBUTES = ("shape", "ndim", "dtype", "device")


def is_onnx2torch_module(module: torch.nn.Module) -> bool:
    """True for a module class of onnx2torch's converter (``onnx2torch.node_converters.*``)."""
    return type(module).__module__.startswith("onnx2torch.")


def _is_shape_read(node: Node, modules: dict[str, torch.nn.Module]) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function" and node.target is builtins.getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRIBUTES
    if node.op == "call_module":
        return type(modules[str(node.target)]).__name__ == "OnnxShape" and is_onnx2torch_module(
            modules[str(node.target)]
        )
    return False


def static_nodes(gm: GraphModule) -> set[Node]:
    """The nodes of ``gm`` whose value does not depend on the input data (see the module docstring)."""
    modules = dict(gm.named_modules())
    static: set[Node] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr" or _is_shape_read(node, modules):
            static.add(node)
        elif node.op in ("call_function", "call_method", "call_module"):
            if node.op == "call_module" and not is_onnx2torch_module(modules[str(node.target)]):
                continue  # a layer applied to a constant stays a layer (it may be quantized)
            if node.op == "call_function" and node.target in _RANDOM:
                continue
            if all(i in static for i in node.all_input_nodes):
                static.add(node)
    return static


def _summary(value: Any) -> Any:
    """A tensor's shape and dtype without its data (a meta tensor); containers element by element."""
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if isinstance(value, (tuple, list)):
        return type(value)(_summary(v) for v in value)
    return value


class _Recorder(Interpreter):
    """Runs the graph keeping static values whole and every other value as its shape and dtype."""

    def __init__(self, gm: GraphModule, static: set[Node]) -> None:
        super().__init__(gm)
        self.static = static
        self.values: dict[Node, Any] = {}

    def run_node(self, n: Node) -> Any:
        out = super().run_node(n)
        if n.op != "output":
            self.values[n] = out if n in self.static else _summary(out)
        return out


def _one_more_row(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] >= 1:
        return torch.cat([value, value[:1]])
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return a.device.type == "meta" or bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # values without a plain equality (devices, dtypes compare fine; others differ)
        return False


@dataclass
class Recording:
    """Static values and data shapes of one graph at the example batch (``first``) and one row more.

    Attributes:
        static: the static nodes (:func:`static_nodes`).
        first: static node -> value; other node -> meta tensor (shape and dtype) or containers of them.
        second: the same at batch + 1; ``None`` when the graph does not run at another batch size.
        batch: ``(example batch, batch + 1)``, or ``None`` when ``second`` is.
    """

    static: set[Node]
    first: dict[Node, Any]
    second: dict[Node, Any] | None
    batch: tuple[int, int] | None

    def value(self, node: Any) -> Any:
        """The value of ``node`` at the example batch (a non-node argument is its own value)."""
        return self.first[node] if isinstance(node, Node) else node

    def value2(self, node: Any) -> Any:
        """The value at batch + 1 (the example-batch value when the graph has a fixed batch)."""
        if not isinstance(node, Node):
            return node
        return self.second[node] if self.second is not None else self.first[node]

    def follows_batch(self, node: Any) -> bool:
        """True when the value of ``node`` differs between the two batch sizes."""
        return self.second is not None and isinstance(node, Node) and not _same(self.first[node], self.second[node])

    def shape(self, node: Any) -> tuple[int, ...]:
        """The shape of a tensor node at the example batch."""
        return tuple(self.value(node).shape)

    def batch_dims(self, node: Any) -> list[bool]:
        """For each dim of tensor ``node``: does its size follow the batch size?"""
        one, two = self.value(node).shape, self.value2(node).shape
        return [a != b for a, b in zip(one, two)]


def record(gm: GraphModule, example_inputs: Sequence[Any], static: set[Node] | None = None) -> Recording:
    """Run ``gm`` on ``example_inputs`` and on a batch one row larger; keep what :class:`Recording` holds.

    Raises:
        CaptureError: the graph does not run on the example inputs.
    """
    static = static_nodes(gm) if static is None else static
    first = _Recorder(gm, static)
    try:
        with torch.no_grad():
            first.run(*example_inputs)
    except Exception as exc:
        raise CaptureError(
            f"The captured graph does not run on the example inputs "
            f"{[tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Remedy: pass example inputs shaped like real data."
        ) from exc
    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() >= 1]
    if not tensors:
        return Recording(static, first.values, None, None)
    second = _Recorder(gm, static)
    try:
        with torch.no_grad():
            second.run(*[_one_more_row(t) for t in example_inputs])
    except Exception:  # exported with a fixed batch: every static value is what the example batch gives
        return Recording(static, first.values, None, None)
    batch = int(tensors[0].shape[0])
    return Recording(static, first.values, second.values, (batch, batch + 1))


__all__ = ["Recording", "is_onnx2torch_module", "record", "static_nodes"]
