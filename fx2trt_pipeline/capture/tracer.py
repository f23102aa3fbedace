"""Capture an ``nn.Module`` as a ``torch.fx.GraphModule`` (symbolic tracing).

Example:
    >>> import torch, torchvision
    >>> from fx2trt_pipeline.capture import capture
    >>> gm = capture(torchvision.models.resnet18().eval())
    >>> any(n.target == "conv1" for n in gm.graph.nodes)
    True
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Tracer

from fx2trt_pipeline.capture.foreign import lower_foreign_graph
from fx2trt_pipeline.capture.functional_layers import layers_from_functional
from fx2trt_pipeline.capture.no_op_modules import drop_no_op_modules
from fx2trt_pipeline.errors import CaptureError


def _called_modules(model: nn.Module) -> list[str]:
    """The modules a GraphModule's graph calls (to keep as leaves), except those our capture rewrites put in,
    which must be traced through (:mod:`fx2trt_pipeline.capture.rewrites`)."""
    if not isinstance(model, GraphModule):
        return []
    called = {str(n.target) for n in model.graph.nodes if n.op == "call_module"}
    return sorted(t for t in called if not type(model.get_submodule(t)).__module__.startswith("fx2trt_pipeline."))


class LeafTracer(Tracer):
    """A tracer that treats user-chosen modules (by class name or qualified name) as leaves."""

    def __init__(self, leaf_modules: Iterable[str | type] = ()) -> None:
        super().__init__()
        self._leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self._leaf_names = {m for m in leaf_modules if isinstance(m, str)}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self._leaf_types) if self._leaf_types else False:
            return True
        if type(m).__name__ in self._leaf_names or module_qualified_name in self._leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def capture(
    model: nn.Module,
    leaf_modules: Sequence[str | type] = (),
    concrete_args: dict[str, Any] | None = None,
    example_inputs: Sequence[Any] | None = None,
) -> GraphModule:
    """Trace ``model`` with torch.fx into a GraphModule whose node names follow module paths.

    A ``GraphModule`` built elsewhere (onnx2torch, ``torch.fx.symbolic_trace``) is traced again with every
    module its graph calls kept as a leaf, so its graph stays as it was (onnx2torch modules whose forward
    cannot be traced with proxies included). With ``example_inputs``, what such graphs hold beyond plain
    ops is then lowered (:mod:`fx2trt_pipeline.capture.foreign`): onnx2torch modules, torchvision's wrapped
    Swin helpers, and static tensors built in forward (``torch.arange`` anchor grids) as constants.

    Args:
        model: the float model (eval mode).
        leaf_modules: module classes, class names or qualified names the tracer must not enter.
        concrete_args: arguments to fix while tracing (e.g. flags that drive Python control flow).
        example_inputs: flat example inputs (tensors shaped like real data); needed to lower onnx2torch graphs.

    Returns:
        The traced GraphModule (shares parameters with ``model``). Functional convs and linears on parameters
        (an ``nn.Conv2d`` subclass whose forward calls ``F.conv2d`` itself) are layer modules in it; see
        :mod:`fx2trt_pipeline.capture.functional_layers`.

    Raises:
        CaptureError: the model does not trace; the message names the innermost module being traced,
            the source line, and suggests what to mark as a leaf or make concrete.
    """
    tracer = LeafTracer([*leaf_modules, *_called_modules(model)])
    scope: list[str] = []
    failed_in: list[str] = []  # innermost module on the stack when tracing failed
    original_call_module = tracer.call_module

    def call_module(m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        scope.append(tracer.path_of_module(m) or "<root>")
        try:
            return original_call_module(m, forward, args, kwargs)
        except Exception:
            if not failed_in:
                failed_in.append(scope[-1])
            raise
        finally:
            scope.pop()

    tracer.call_module = call_module  # type: ignore[method-assign]
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as exc:  # tracing failures come as many exception types
        module = failed_in[0] if failed_in else "<root>"
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if "torch/fx" not in f.filename.replace("\\", "/") and "fx2trt_pipeline" not in f.filename
        ]
        where = f"{frames[-1].filename}:{frames[-1].lineno} ({frames[-1].line})" if frames else "unknown location"
        module_type = type(model.get_submodule(module)).__name__ if module != "<root>" else type(model).__name__
        raise CaptureError(
            f"torch.fx could not trace module '{module}' ({module_type}) at {where}: "
            f"{exc.__class__.__name__}: {exc}\nRemedy: mark it as a leaf (QuantConfig(leaf_modules=("
            f"'{module_type}',)) or leaf_modules=['{module}']) so it is kept as one call and left in float, "
            "or pass concrete_args for arguments that drive Python control flow."
        ) from exc
    gm = GraphModule(tracer.root, graph, type(model).__name__)
    lower_foreign_graph(gm, example_inputs)
    drop_no_op_modules(gm)  # nn.Identity / eval dropout: one tensor, one Q/DQ pair
    layers_from_functional(gm)  # convs / linears written as F.conv2d(x, self.weight, ...) become layers
    return gm


def check_example_inputs(gm: GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Check that ``example_inputs`` fit the captured graph (count, shapes, dtypes).

    Shapes are propagated with fake tensors, so the check costs no real compute; when fake
    propagation fails the graph runs for real, so an op without a fake kernel never causes a false alarm.

    Raises:
        CaptureError: the inputs do not fit the model; names the node that rejects them.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(example_inputs) > len(placeholders):
        raise CaptureError(
            f"Got {len(example_inputs)} example inputs but the model takes {len(placeholders)} "
            f"({', '.join(p.name for p in placeholders)})"
        )
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with mode:
            _NamingInterpreter(gm).run(
                *[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in example_inputs]
            )
        return
    except Exception:  # fall through to a real run, which decides
        pass
    interp = _NamingInterpreter(gm)
    try:
        interp.run(*example_inputs)
    except Exception as exc:
        node = interp.current
        shapes = [tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)]
        raise CaptureError(
            f"Example inputs with shapes {shapes} do not fit the model: node '{node.name if node else '?'}' "
            f"({node.format_node() if node else ''}) failed with {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}. Remedy: pass example inputs shaped like real data "
            "(batch, channels, height, width)."
        ) from exc


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Flatten a model output (tensor, tuple, list or dict of tensors) in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in out for t in flatten_outputs(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    return []


class _NamingInterpreter(torch.fx.Interpreter):
    """An interpreter that remembers the node it is executing (for error messages)."""

    current: torch.fx.Node | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        self.current = n
        return super().run_node(n)
