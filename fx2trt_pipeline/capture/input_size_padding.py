"""Convs whose padding is computed from the input size become convs with that padding fixed, so they trace.

TensorFlow's "SAME" padding depends on the input size; timm's ``Conv2dSame`` and efficientnet_pytorch's
``Conv2dDynamicSamePadding`` compute it in forward with Python arithmetic on ``x.size()``, which torch.fx cannot
trace. With the size recorded from one forward pass on the example inputs, each such ``nn.Conv1d/2d/3d`` subclass
is replaced by a :class:`FixedPadConv2d` (1d, 3d) sharing its parameters: ``F.pad`` with the pads it computed for
that size, then the plain conv. Nothing is guessed: the replacement is made only when the module's forward, traced
to aten ops at that size, is exactly a constant pad (or none) and one convolution of its own weight and bias.
Like Swin's blocks (:mod:`fx2trt_pipeline.capture.rewrites`), the result holds for the recorded feature-map size
(the batch stays free), which is the size an engine is built for.

Example:
    >>> import math, torch, torch.nn.functional as F
    >>> from torch import nn
    >>> class Conv2dSame(nn.Conv2d):
    ...     def forward(self, x):
    ...         pad = [max((math.ceil(s / self.stride[0]) - 1) * self.stride[0] + 3 - s, 0) for s in x.shape[-2:]]
    ...         x = F.pad(x, (pad[1] // 2, pad[1] - pad[1] // 2, pad[0] // 2, pad[0] - pad[0] // 2))
    ...         return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
    >>> model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2)).eval()
    >>> x = torch.randn(1, 3, 15, 15)
    >>> fix_input_size_padding(model, (x,))
    ['0']
    >>> type(model[0]).__name__, model[0].pad
    ('FixedPadConv2d', (1, 1, 1, 1))
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from fx2trt_pipeline.errors import CaptureError

_aten = torch.ops.aten


class _FixedPad:
    """A conv that pads its input by fixed amounts first (``pad`` in ``F.pad`` order, then ``value``)."""

    pad: tuple[int, ...]
    pad_value: float

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(F.pad(input, self.pad, value=self.pad_value), self.weight, self.bias)


class FixedPadConv1d(_FixedPad, nn.Conv1d):
    """``nn.Conv1d`` after a fixed ``F.pad``."""


class FixedPadConv2d(_FixedPad, nn.Conv2d):
    """``nn.Conv2d`` after a fixed ``F.pad``."""


class FixedPadConv3d(_FixedPad, nn.Conv3d):
    """``nn.Conv3d`` after a fixed ``F.pad``."""


_FIXED = {nn.Conv1d: FixedPadConv1d, nn.Conv2d: FixedPadConv2d, nn.Conv3d: FixedPadConv3d}


def _base(module: nn.Module) -> type[nn.Module] | None:
    """The torch conv class ``module`` subclasses with a forward of its own (``None`` otherwise)."""
    if isinstance(module, tuple(_FIXED.values())):
        return None
    for base in _FIXED:
        if isinstance(module, base) and type(module) is not base:
            return base if type(module).forward is not base.forward else None
    return None


def _traces(module: nn.Module) -> bool:
    try:
        torch.fx.Tracer().trace(module)
    except Exception:  # tracing failures come as many exception types
        return False
    return True


def inputs_seen(
    model: nn.Module, modules: Collection[nn.Module], example_inputs: Sequence[Any]
) -> dict[nn.Module, list[tuple[tuple[int, ...], torch.dtype]]]:
    """The distinct first-argument inputs (shape, dtype), in call order, of each of ``modules`` during one eval
    forward pass of ``model`` on ``example_inputs``."""
    seen: dict[nn.Module, list[tuple[tuple[int, ...], torch.dtype]]] = {}

    def record(module: nn.Module, args: tuple) -> None:  # a pre-hook returning None keeps the args
        if args and isinstance(args[0], torch.Tensor):
            calls = seen.setdefault(module, [])
            if (tuple(args[0].shape), args[0].dtype) not in calls:
                calls.append((tuple(args[0].shape), args[0].dtype))

    hooks = [m.register_forward_pre_hook(record) for m in modules]
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _recorded_inputs(model: nn.Module, modules: dict[nn.Module, str], example_inputs: Sequence[Any]) -> dict:
    """The input (shape and dtype) of each module in ``modules`` from one eval forward pass; a module called with
    several shapes is left out (its padding is not one fixed amount)."""
    return {m: calls[0] for m, calls in inputs_seen(model, modules, example_inputs).items() if len(calls) == 1}


def _pad_and_conv(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> dict[str, Any] | None:
    """The pad and conv arguments ``module`` computes at input ``shape``, or ``None`` when its forward (traced to
    aten ops at that shape) is anything but an optional constant pad and one convolution of its own parameters."""
    params = {"weight": module.weight.detach()}
    if module.bias is not None:
        params["bias"] = module.bias.detach()

    def run(x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, dict(zip(params, tensors)), (x,))

    try:
        graph = make_fx(run)(torch.zeros(shape, dtype=dtype), *params.values()).graph
    except Exception:  # a forward make_fx cannot follow is not one we can prove to be pad + conv
        return None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    ops = [n for n in graph.nodes if n.op == "call_function"]
    output = next(n for n in graph.nodes if n.op == "output")
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    pad, value = [0] * (2 * (len(shape) - 2)), 0.0
    if len(ops) == 2 and ops[0].target is _aten.constant_pad_nd.default and ops[0].args[0] is x:
        pad = list(ops[0].args[1])
        value = float(ops[0].args[2]) if len(ops[0].args) > 2 else 0.0
        x = ops[0]
    elif len(ops) != 1:
        return None
    conv = ops[-1]
    if conv.target is not _aten.convolution.default or output.args[0] is not conv:
        return None
    data, w, b, stride, padding, dilation, transposed, _, groups = conv.args
    if data is not x or w is not weight or b is not bias or transposed:
        return None
    return {
        "pad": tuple(int(p) for p in pad),
        "pad_value": value,
        "stride": tuple(stride),
        "padding": tuple(padding),
        "dilation": tuple(dilation),
        "groups": int(groups),
    }


def _fixed(module: nn.Module, base: type[nn.Module], found: dict[str, Any]) -> nn.Module:
    """The :class:`FixedPadConv2d` (1d, 3d) computing ``found``, sharing ``module``'s parameters."""
    weight = module.weight
    conv = _FIXED[base](
        weight.shape[1] * found["groups"],
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=found["stride"],
        padding=found["padding"],
        dilation=found["dilation"],
        groups=found["groups"],
        bias=module.bias is not None,
        device="meta",  # no initialisation work: the parameters are the module's own
    )
    conv.weight = weight
    if module.bias is not None:
        conv.bias = module.bias
    conv.pad, conv.pad_value = found["pad"], found["pad_value"]
    return conv


def fix_input_size_padding(
    model: nn.Module, example_inputs: Sequence[Any] | None, kept: Collection[str] = ()
) -> list[str]:
    """Replace (in place) every conv subclass whose forward does not trace and proves to be pad + conv at the
    recorded input size by a :class:`FixedPadConv2d` (1d, 3d); returns the module paths replaced.

    Args:
        model: the model to capture (a copy the caller owns).
        example_inputs: inputs shaped like real data; needed only when such a conv exists.
        kept: class names or module paths left alone (the leaf modules).

    Raises:
        CaptureError: such a conv exists and no example inputs are given.
    """
    paths: dict[nn.Module, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        paths.setdefault(m, []).append(name)
    candidates = {  # a module reachable by two paths (or the root) cannot be swapped at one place
        m: names[0]
        for m, names in paths.items()
        if len(names) == 1 and names[0] and _base(m) is not None
        if type(m).__name__ not in kept and names[0] not in kept and not _traces(m)
    }
    if not candidates:
        return []
    if example_inputs is None:
        name = next(iter(candidates.values()))
        raise CaptureError(
            f"Module '{name}' ({type(model.get_submodule(name)).__name__}) computes its padding from the input "
            "size, which torch.fx cannot trace: pass example_inputs (shaped like real data) so that its padding "
            "is fixed for that size, or keep it whole as a leaf with a converter of your own"
        )
    done = []
    for module, (shape, dtype) in _recorded_inputs(model, candidates, example_inputs).items():
        found = _pad_and_conv(module, shape, dtype)
        if found is None:
            continue
        name = candidates[module]
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, _fixed(module, _base(module), found))
        done.append(name)
    return sorted(done)


__all__ = ["FixedPadConv1d", "FixedPadConv2d", "FixedPadConv3d", "fix_input_size_padding"]
