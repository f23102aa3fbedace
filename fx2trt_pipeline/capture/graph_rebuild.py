"""A new graph built from an old one node by node, for the passes that lower foreign graphs.

Each old node is copied, folded into a constant, or replaced by nodes that compute the same thing with
plain torch ops (:mod:`.onnx2torch_ops`, :mod:`.swin_helpers`). Replacements read the static values and
data shapes of the old graph from its :class:`~.static_values.Recording`; the node that stands for an old
node takes its name, so layer names and reports keep the names the graph had.

Example:
    >>> import operator, torch
    >>> gm = torch.fx.symbolic_trace(torch.nn.Identity())
    >>> rb = Rebuild(gm, None)
    >>> x = rb.graph.placeholder("x")
    >>> rb.call(operator.mul, x, 2.0, name="twice").name
    'twice'
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.node import map_arg

from fx2trt_pipeline.capture.static_values import Recording


class NotLowered(Exception):
    """A replacement cannot compute what the old node computes; the node is kept as it was."""


class Rebuild:
    """The graph being built from ``gm`` (see the module docstring).

    Attributes:
        gm: the GraphModule whose graph is rebuilt (constants are registered on it as buffers).
        rec: static values and data shapes of the old graph.
        graph: the new graph.
        env: old node -> its value in the new graph (a node, a Python value, or a tuple of them).
        modules: the submodules of ``gm`` by qualified name.
    """

    def __init__(self, gm: GraphModule, rec: Recording | None) -> None:
        self.gm, self.rec = gm, rec
        self.graph = Graph()
        self.env: dict[Node, Any] = {}
        self.modules = dict(gm.named_modules())

    # ---- emitting nodes -------------------------------------------------------------------------

    def new(self, value: Any) -> Any:
        """``value`` (an old argument) with old nodes replaced by their new values."""
        return map_arg(value, lambda n: self.env[n])

    def call(self, target: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Node:
        """A ``call_function`` node in the new graph (arguments must already be new values)."""
        return self.graph.create_node("call_function", target, tuple(args), kwargs, name=name)

    def method(self, target: str, *args: Any, name: str | None = None, **kwargs: Any) -> Node:
        """A ``call_method`` node in the new graph."""
        return self.graph.create_node("call_method", target, tuple(args), kwargs, name=name)

    def constant(self, value: torch.Tensor, name: str) -> Node:
        """A ``get_attr`` node named ``name`` reading ``value``, registered as a new buffer of ``gm``."""
        base = re.sub(r"\W", "_", name) + "_constant"
        attr, i = base, 0
        while hasattr(self.gm, attr):
            i += 1
            attr = f"{base}_{i}"
        self.gm.register_buffer(attr, value.detach().clone())
        return self.graph.create_node("get_attr", attr, name=name)

    def copy(self, node: Node) -> Node:
        """``node`` copied into the new graph as it is."""
        return self.graph.node_copy(node, lambda n: self.env[n])

    # ---- reading the old graph -------------------------------------------------------------------

    def is_static(self, arg: Any) -> bool:
        """True for a Python value or an old node whose value does not depend on the data or the batch."""
        if not isinstance(arg, Node):
            return True
        return self.rec is not None and arg in self.rec.static and not self.rec.follows_batch(arg)

    def static(self, arg: Any, what: str) -> Any:
        """The value of a static old argument at the example batch.

        Raises:
            NotLowered: ``arg`` is computed from the data, or changes with the batch size.
        """
        if isinstance(arg, Node) and (self.rec is None or arg not in self.rec.static):
            raise NotLowered(f"its {what} ({arg.name}) is computed from the input data")
        if isinstance(arg, Node) and self.rec.follows_batch(arg):
            raise NotLowered(f"its {what} ({arg.name}) changes with the batch size")
        return self.rec.value(arg) if self.rec is not None else arg

    def ints(self, arg: Any, what: str) -> list[int]:
        """A static 1-d integer tensor (or list) as Python ints."""
        value = self.static(arg, what)
        return [int(v) for v in (value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else value)]

    def ints_by_batch(self, arg: Any, what: str) -> tuple[list[int], list[int]]:
        """A static-structure 1-d integer tensor at the example batch and at batch + 1 (equal when fixed)."""
        if isinstance(arg, Node) and (self.rec is None or arg not in self.rec.static):
            raise NotLowered(f"its {what} ({arg.name}) is computed from the input data")
        one, two = self.rec.value(arg), self.rec.value2(arg)
        return [int(v) for v in one.reshape(-1).tolist()], [int(v) for v in two.reshape(-1).tolist()]

    def static_numel(self, arg: Any) -> int:
        """How many elements a static-structure tensor argument holds (empty ONNX inputs mean "absent").

        Raises:
            NotLowered: the argument is computed from the input data.
        """
        if isinstance(arg, Node) and (self.rec is None or arg not in self.rec.static):
            raise NotLowered(f"{arg.name} is computed from the input data")
        value = self.rec.value(arg) if isinstance(arg, Node) else arg
        return int(value.numel()) if isinstance(value, torch.Tensor) else len(value)

    def shape(self, arg: Node) -> tuple[int, ...]:
        """The shape of a tensor argument at the example batch."""
        return self.rec.shape(arg)

    def shape2(self, arg: Node) -> tuple[int, ...]:
        """The shape of a tensor argument at batch + 1 (the same when the batch is fixed)."""
        return tuple(self.rec.value2(arg).shape)

    def dtype(self, arg: Any) -> torch.dtype | None:
        """The dtype of a tensor argument (``None`` for Python values)."""
        value = self.rec.value(arg) if isinstance(arg, Node) else arg
        return value.dtype if isinstance(value, torch.Tensor) else None

    def tensor_operand(self, arg: Any) -> Any:
        """A data argument's new node, or a static tensor argument as its folded constant.

        Raises:
            NotLowered: the argument is static but changes with the batch size (it was not folded).
        """
        if isinstance(arg, Node) and arg in self.rec.static:
            self.static(arg, "operand")
        return self.new(arg)

    def operand(self, arg: Any, partner: Any) -> Any:
        """Like :meth:`tensor_operand`, but a one-element constant meeting a data tensor of at least its rank
        becomes a Python number, the form TensorRT converters and the quantizer treat as a scalar."""
        if isinstance(arg, Node) and arg in self.rec.static and isinstance(partner, Node):
            value = self.static(arg, "operand")
            partner_value = self.rec.value(partner)
            if (
                isinstance(value, torch.Tensor)
                and value.numel() == 1
                and partner not in self.rec.static
                and isinstance(partner_value, torch.Tensor)
                and partner_value.dim() >= value.dim()
                and (partner_value.is_floating_point() or not value.is_floating_point())
            ):
                return float(value) if value.is_floating_point() else int(value)
        return self.tensor_operand(arg)


__all__ = ["NotLowered", "Rebuild"]
