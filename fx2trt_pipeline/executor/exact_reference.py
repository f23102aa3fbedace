"""Foreign quantized graphs (torch.ao reference FX, PT2E ``convert_pt2e``) evaluated with TensorRT's arithmetic.

A torch.ao reference graph and a converted PT2E graph say *what* the INT8 network is (which tensors are
quantized, with which scales, which int8 weights); the arithmetic they run it with is torch's float path:
convolutions and matmuls in float32 on dequantized values, and quantize ops that round ``x * (1 / s)``.
TensorRT runs the same network as int8 x int8 products summed exactly (int32), a float32 epilogue
``float32(acc) * (s_x * s_w[c]) + bias[c]``, and IQuantizeLayers that round ``x / s`` half to even. The two
differ on values that sit on (or within float32 noise of) a rounding tie; one such int8 value, flipped,
moves every value downstream of it, so in a deep network the float32 reference drifts from any
integer-exact engine (MobileNetV2 with real weights: cosine 0.9977).

:class:`TensorRTArithmetic` runs the *same graph* with the same weights, scales and int8 values, and only
changes the arithmetic to TensorRT's: a conv / linear / matmul whose data input is a per-tensor dequantize
(directly or through max-pools, which TensorRT moves the dequantize past) and whose weight is dequantized
per output channel (or per tensor) is summed over the int8 values exactly (float64) with that epilogue;
other sums run in float64, rounded once; every activation quantize is ``round_half_even(x / s)``; pooling
stays float32, as TensorRT runs it. It is written from the foreign graph alone, independently of this
project's quantize ops and of the network executor, so the executor agreeing with it checks the converters
(weights, scales, placement, layer semantics), not shared code.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic
    >>> class M(torch.nn.Module):
    ...     def forward(self, x):
    ...         q = torch.quantize_per_tensor(x, 0.5, 0, torch.qint8)
    ...         return q.dequantize()
    >>> gm = torch.fx.symbolic_trace(M())
    >>> TensorRTArithmetic(gm).run(torch.tensor([0.25, 0.75, -0.25])).tolist()   # x / s = 0.5, 1.5, -0.5
    [0.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Interpreter, Node

_QINT = {torch.qint8: (-128, 127), torch.quint8: (0, 255), torch.qint32: (-(2**31), 2**31 - 1)}

#: Functions whose float32 sums differ from TensorRT's exact int8 x int8 sums; run in float64, rounded once.
#: Pooling and reductions stay float32: TensorRT runs them in float on dequantized values.
_SUMMING_FUNCTIONS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    F.linear,
    torch.matmul,
    torch.bmm,
    torch.mm,
}
_SUMMING_ATEN = (
    "aten.conv1d.",
    "aten.conv2d.",
    "aten.conv3d.",
    "aten.convolution.",
    "aten.conv_transpose1d.",
    "aten.conv_transpose2d.",
    "aten.conv_transpose3d.",
    "aten.linear.",
    "aten.addmm.",
    "aten.mm.",
    "aten.bmm.",
    "aten.matmul.",
)
_SUMMING_METHODS = {"matmul"}


def _is_summing(target: Any) -> bool:
    return target in _SUMMING_FUNCTIONS or (
        isinstance(target, torch._ops.OpOverload) and str(target).startswith(_SUMMING_ATEN)
    )


def _recast(value: Any, source: torch.dtype, target: torch.dtype) -> Any:
    """``value`` with every ``source`` tensor in it (lists and tuples too) cast to ``target``."""
    if isinstance(value, torch.Tensor) and value.dtype == source:
        return value.to(target)
    if isinstance(value, (list, tuple)):
        return type(value)(_recast(v, source, target) for v in value)
    return value


def _widen(value: Any) -> Any:
    return _recast(value, torch.float32, torch.float64)


def _narrow(value: Any) -> Any:
    return _recast(value, torch.float64, torch.float32)


def _has_float32(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.float32
    if isinstance(value, (list, tuple)):
        return any(_has_float32(v) for v in value)
    if isinstance(value, dict):
        return _has_float32(list(value.values()))
    return False


def _in_float64(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    if not _has_float32((args, kwargs)):  # a float64 graph stays float64; an int graph is exact already
        return fn(*args, **kwargs)
    return _narrow(fn(*_widen(args), **{k: _widen(v) for k, v in kwargs.items()}))


def _round_to_int(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    # torch.round rounds half to even, as IQuantizeLayer; x / s, not x * (1 / s).
    return torch.clamp(torch.round(x.to(torch.float32) / scale.to(torch.float32)) + zero_point, lo, hi)


def _ao_quantize_per_tensor(x: torch.Tensor, scale: Any, zero_point: Any, dtype: torch.dtype) -> torch.Tensor:
    lo, hi = _QINT[dtype]
    s, zp = float(scale), int(zero_point)
    q = _round_to_int(x, torch.tensor(s), torch.tensor(zp), lo, hi)
    storage = {torch.qint8: torch.int8, torch.quint8: torch.uint8, torch.qint32: torch.int32}[dtype]
    return torch._make_per_tensor_quantized_tensor(q.to(storage), s, zp)


def _pt2e_quantize_per_tensor(
    x: torch.Tensor, scale: Any, zero_point: Any, quant_min: int, quant_max: int, dtype: torch.dtype
) -> torch.Tensor:
    s, zp = torch.as_tensor(scale, dtype=torch.float32), torch.as_tensor(zero_point)
    return _round_to_int(x, s, zp, quant_min, quant_max).to(dtype)


def _is_pt2e_quantize_per_tensor(target: Any) -> bool:
    return isinstance(target, torch._ops.OpOverload) and str(target).startswith(
        "quantized_decomposed.quantize_per_tensor."
    )


def _reference_module_types() -> tuple[type, ...]:
    from torch.ao.nn.quantized import reference

    # ConvTranspose reference modules run as torch runs them (float32): TensorRT sums a deconvolution
    # exactly only with its weight scaled on the output-channel axis, which torch.ao's axis 0 is not.
    return (reference.Conv1d, reference.Conv2d, reference.Conv3d, reference.Linear)


def _run_module(module: torch.nn.Module, args: tuple, kwargs: dict, reference_types: tuple[type, ...]) -> Any:
    """A module call with the summing modules inside it (fused Sequentials included) in float64."""
    if isinstance(module, torch.nn.Sequential) and not kwargs and len(args) == 1:
        value = args[0]
        for child in module:
            value = _run_module(child, (value,), {}, reference_types)
        return value
    if isinstance(module, reference_types):
        # torch.ao's own quantize-dequantized weight (its int8 values times its scales, in float32), summed
        # in float64: quantize_per_channel itself accepts float32 only.
        weight = module.get_weight().to(torch.float64)
        bias = None if module.bias is None else module.bias.to(torch.float64)
        return _narrow(_reference_forward(module, _widen(args[0]), weight, bias))
    return module(*args, **kwargs)


def _reference_forward(
    module: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """A torch.ao reference conv / linear module's op on ``x`` with the given weight and bias."""
    if isinstance(module, torch.nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)  # nn.ConvNd's own padding (and padding_mode) handling


@dataclass(frozen=True)
class _Grid:
    """The int8 grid of a dequantize output: scale(s), the per-channel axis, and the int8 values (weights)."""

    scale: torch.Tensor
    axis: int | None
    symmetric: bool
    int8: torch.Tensor | None = None


_MAX_POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
_MAX_POOL_ATEN = ("aten.max_pool1d.", "aten.max_pool2d.", "aten.max_pool3d.")
_INTEGER_ATEN = {"aten.conv1d.": 1, "aten.conv2d.": 1, "aten.conv3d.": 1, "aten.linear.": -1, "aten.matmul.": None}
_INTEGER_FUNCTIONS = {F.conv1d: 1, F.conv2d: 1, F.conv3d: 1, F.linear: -1, torch.matmul: None}


def _integer_channel_dim(target: Any) -> tuple[bool, int | None]:
    """``(is an integer candidate, output channel dim or None for per-tensor-only ops)``."""
    if target in _INTEGER_FUNCTIONS:
        return True, _INTEGER_FUNCTIONS[target]
    if isinstance(target, torch._ops.OpOverload):
        name = str(target)
        for prefix, dim in _INTEGER_ATEN.items():
            if name.startswith(prefix):
                return True, dim
    return False, None


def _is_max_pool(node: Node, modules: dict[str, torch.nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d))
    if node.op != "call_function":
        return False
    return node.target in _MAX_POOL_FUNCTIONS or str(node.target).startswith(_MAX_POOL_ATEN)


def _epilogue(acc: torch.Tensor, scale: torch.Tensor, bias: Any, channel_dim: int | None) -> torch.Tensor:
    """TensorRT's float32 epilogue: ``float32(acc) * scale[c]`` then ``+ bias[c]``, one rounding per step."""
    y = acc.to(torch.float32)
    shape = [1] * y.dim()
    if channel_dim is not None:  # per-channel scale and bias (a per-tensor weight still has a bias per channel)
        shape[channel_dim] = -1
    y = y * scale.to(torch.float32).reshape(shape if scale.numel() > 1 else ())
    return y if bias is None else y + bias.to(torch.float32).reshape(shape)


class TensorRTArithmetic(Interpreter):
    """Evaluate a torch.ao reference graph or a converted PT2E graph with TensorRT's arithmetic.

    Args:
        gm: the graph (``convert_to_reference_fx`` or ``convert_pt2e`` output, or any FX graph).
        garbage_collect_values: free values after their last use (as :class:`torch.fx.Interpreter`).

    ``run(*inputs)`` returns what ``gm(*inputs)`` returns, computed as TensorRT computes it (see the module
    docstring). Graphs with no quantize ops run unchanged, apart from more exact sums.

    Example:
        >>> reference = TensorRTArithmetic(ao_reference_graph)     # doctest: +SKIP
        >>> expected = reference.run(x)                             # doctest: +SKIP
    """

    def __init__(self, gm: GraphModule, garbage_collect_values: bool = True) -> None:
        super().__init__(gm, garbage_collect_values=garbage_collect_values)
        self._reference_types = _reference_module_types()
        self._modules = dict(gm.named_modules())
        self._grids: dict[str, _Grid] = {}
        #: Nodes of the last run summed over int8 values with TensorRT's epilogue, in graph order.
        self.integer_nodes: list[str] = []

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The graph's outputs for ``args``, under ``torch.no_grad``."""
        self._grids, self.integer_nodes = {}, []
        with torch.no_grad():
            return super().run(*args, **kwargs)

    def run_node(self, n: Node) -> Any:
        self._record_grid(n)
        result = self._integer_node(n)
        if result is None:
            return super().run_node(n)
        self.integer_nodes.append(n.name)
        return result

    # ----------------------------------------------------------------------------- dequantize grids

    def _record_grid(self, n: Node) -> None:
        if n.op == "call_method" and n.target == "dequantize":  # torch.ao: a qint8 tensor's dequantize()
            q = self.env.get(n.args[0]) if isinstance(n.args[0], Node) else None
            if isinstance(q, torch.Tensor) and q.is_quantized and q.qscheme() in _PER_TENSOR:
                scale = torch.tensor(q.q_scale(), dtype=torch.float32)
                self._grids[n.name] = _Grid(scale, None, q.q_zero_point() == 0)
            return
        name = str(n.target) if n.op == "call_function" else ""
        if name.startswith("quantized_decomposed.dequantize_per_tensor."):
            scale, zero_point = (self._value(a) for a in n.args[1:3])
            self._grids[n.name] = _Grid(torch.as_tensor(scale, dtype=torch.float32), None, _all_zero(zero_point))
        elif name.startswith("quantized_decomposed.dequantize_per_channel."):
            q, scale, zero_point = (self._value(a) for a in n.args[:3])
            symmetric = zero_point is None or _all_zero(zero_point)
            self._grids[n.name] = _Grid(scale.to(torch.float32), int(n.args[3]), symmetric, q)

    def _value(self, arg: Any) -> Any:
        return self.env[arg] if isinstance(arg, Node) else arg

    def _activation_grid(self, arg: Any) -> _Grid | None:
        """The per-tensor grid behind ``arg``: a dequantize node, or one behind max-pools."""
        while isinstance(arg, Node):
            grid = self._grids.get(arg.name)
            if grid is not None:
                return grid if grid.axis is None and grid.symmetric else None
            if not _is_max_pool(arg, self._modules):
                return None
            arg = arg.args[0]
        return None

    @staticmethod
    def _integers(value: torch.Tensor, grid: _Grid) -> torch.Tensor:
        # value is q * s in float32 (within 2**-23 of the grid), pooled or not: round(value / s) is q.
        if grid.int8 is not None:
            return grid.int8.to(torch.float64)
        return torch.round(value.to(torch.float32) / grid.scale).to(torch.float64)

    # ------------------------------------------------------------------------------ integer layers

    def _integer_node(self, n: Node) -> torch.Tensor | None:
        if n.op == "call_module":
            return self._integer_module(n)
        if n.op != "call_function" or n.kwargs:
            return None
        candidate, channel_dim = _integer_channel_dim(n.target)
        if not candidate or len(n.args) < 2:
            return None
        data, kernel = self._activation_grid(n.args[0]), self._kernel_grid(n.args[1], channel_dim)
        if data is None or kernel is None:
            return None
        args = [self._value(a) for a in n.args]
        bias = args[2] if channel_dim is not None and len(args) > 2 else None
        args[0], args[1] = self._integers(args[0], data), self._integers(args[1], kernel)
        if channel_dim is not None and len(args) > 2:
            args[2] = None
        acc = n.target(*args)
        return _epilogue(acc, data.scale * kernel.scale, bias, channel_dim)

    def _kernel_grid(self, arg: Any, channel_dim: int | None) -> _Grid | None:
        grid = self._grids.get(arg.name) if isinstance(arg, Node) else None
        if grid is None or not grid.symmetric:
            return None
        if grid.axis is None:
            return grid
        # A per-channel scale leaves the integer sum only on the output-channel axis (dim 0 of conv / linear).
        return grid if channel_dim is not None and grid.axis == 0 else None

    def _integer_module(self, n: Node) -> torch.Tensor | None:
        module = self.fetch_attr(str(n.target))
        rest: list[torch.nn.Module] = []
        if isinstance(module, torch.nn.Sequential) and len(module) > 0:
            module, rest = module[0], list(module)[1:]
        if not isinstance(module, self._reference_types) or len(n.args) != 1 or n.kwargs:
            return None
        if module.weight_qscheme not in (torch.per_channel_symmetric, torch.per_channel_affine):
            return None
        data = self._activation_grid(n.args[0])
        weight = module.get_quantized_weight()
        if data is None or weight.q_per_channel_axis() != 0 or bool(weight.q_per_channel_zero_points().ne(0).any()):
            return None
        x = self._integers(self._value(n.args[0]), data)
        acc = _reference_forward(module, x, weight.int_repr().to(torch.float64), None)
        scale = data.scale * weight.q_per_channel_scales().to(torch.float32)
        value = _epilogue(acc, scale, module.bias, -1 if isinstance(module, torch.nn.Linear) else 1)
        for child in rest:
            value = child(value)
        return value

    # ------------------------------------------------------------------------- other arithmetic

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target is torch.quantize_per_tensor:
            return _ao_quantize_per_tensor(*args, **kwargs)
        if _is_pt2e_quantize_per_tensor(target):
            return _pt2e_quantize_per_tensor(*args, **kwargs)
        if _is_summing(target):
            return _in_float64(target, args, kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if target in _SUMMING_METHODS and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float32:
            return _in_float64(getattr(torch.Tensor, target), args, kwargs)
        return super().call_method(target, args, kwargs)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        return _run_module(self.fetch_attr(target), args, kwargs, self._reference_types)


_PER_TENSOR = (torch.per_tensor_affine, torch.per_tensor_symmetric)


def _all_zero(zero_point: Any) -> bool:
    return not bool(torch.as_tensor(zero_point).ne(0).any())


def is_foreign_quantized_graph(gm: GraphModule) -> bool:
    """True for graphs quantized by torch.ao (qint8 quantize calls) or PT2E (``quantized_decomposed`` ops).

    Example:
        >>> import torch
        >>> is_foreign_quantized_graph(torch.fx.symbolic_trace(torch.nn.ReLU()))
        False
    """
    return any(_is_foreign_quantize(n) for n in gm.graph.nodes)


def _is_foreign_quantize(node: Node) -> bool:
    return node.op == "call_function" and (
        node.target is torch.quantize_per_tensor or _is_pt2e_quantize_per_tensor(node.target)
    )
