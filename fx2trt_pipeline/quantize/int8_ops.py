"""Quantized conv / deconv / linear with TensorRT's integer arithmetic, for the simulated INT8 model.

TensorRT runs an INT8 convolution as an exact integer sum of int8 x int8 products (int32), then one
float32 epilogue. A float32 convolution on dequantized values is not that: its rounding depends on
the kernel's summation order (threads, batch size, CPU vs CUDA), and an int8 value that sits on a
rounding tie downstream flips with it. These custom ops (``torch.ops.fx2trt.int8_conv2d`` & co.) take
the same positional arguments as ``F.conv2d`` & co. (so converters, ONNX export and reports read the
node as before) plus the two scales, given as keywords, and compute:

1. the int8 operands, recovered exactly as ``round(x / input_scale)`` and ``round(w / weight_scale)``
   (the inputs are ``dequantize`` outputs: ``q * s`` in float32 is within 2**-23 relative of the
   grid, so rounding returns ``q``);
2. ``acc``: the exact integer sum (a float32 convolution on the integer values when every partial sum
   provably stays below 2**24: ``128 * sum|w|`` over each output's kernel, which holds for nearly every
   layer; else input-channel chunks of at most 1032 products summed in float64; float64 convolutions
   on CUDA, rounded);
3. the float32 epilogue, in this order: ``a = float32(acc)`` (round to nearest even),
   ``m = input_scale * weight_scale[c]`` (float32 product), ``y = a * m`` (float32),
   ``y = y + bias[c]`` (float32). Each step is one IEEE operation, so the result is the same on every
   device, thread count and batch composition;
4. when the input is float16 (``QuantConfig(float_dtype="float16")``: the DQ outputs, the bias and the
   layer's output are float16 tensors in the network), ``a * m`` is rounded to float16, then the float16
   bias is added (float32 sum of two float16 values, rounded to float16): TensorRT's own epilogue, whose
   plan reads ``Mul Cast Add``. A linear layer (a matmul plus a separate elementwise bias layer in the
   network) rounds the same way. TensorRT's own epilogue may fuse the multiply-add or
   multiply by reciprocal scales: its int8 outputs can differ from ours on exact rounding ties only
   (``validate.tie_parity`` allows exactly those).

A weight whose per-channel axis is the summed axis (ConvTranspose with ``deconv_weight_axis=0``)
cannot factor its scale out of the integer sum; such layers keep the float functional form, and so do
convolutions with string padding (``padding="same"``). :mod:`fx2trt_pipeline.quantize.float_form` turns a graph
of these ops back into the float functional form (what ONNX export traces).

Example:
    >>> import torch
    >>> from fx2trt_pipeline.quantize import int8_ops, qdq_ops
    >>> sx, sw = torch.tensor(0.1), torch.tensor([0.02, 0.05])
    >>> x = qdq_ops.dequantize(torch.tensor([[3, -7, 12]], dtype=torch.int8), sx)
    >>> w = qdq_ops.dequantize(torch.tensor([[1, 2, 3], [-4, 5, 6]], dtype=torch.int8), sw, 0)
    >>> int8_ops.linear(x, w, None, input_scale=sx, weight_scale=sw).tolist()  # 25 * 0.002, 25 * 0.005
    [[0.05000000074505806, 0.1250000149011612]]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

#: Products per output that a float32 sum of int8 x int8 values holds exactly (|sum| < 2**24).
EXACT_FLOAT32_TERMS = 2**24 // (128 * 127)


def _grid(v: torch.Tensor, scale: torch.Tensor, axis: int | None) -> torch.Tensor:
    """The integers ``round(v / scale)`` as float32 (``v`` is a dequantized int8 tensor)."""
    s = scale.to(v.device, torch.float32)
    if axis is not None:
        shape = [1] * v.dim()
        shape[axis] = -1
        s = s.reshape(shape)
    return torch.div(v.to(torch.float32), s).round_()


def _exact_sum(
    op: Callable[..., torch.Tensor], xq: torch.Tensor, wq: torch.Tensor, spec: tuple[int, int, int, int], args: tuple
) -> torch.Tensor:
    """``op(xq, wq, None, *args)`` summed exactly; ``spec`` = (x channel dim, w channel dim, w output dim, groups).

    The result holds integers: float32 when they are all below 2**24 (then float32 is exact), else float64.
    """
    x_dim, w_dim, out_dim, groups = spec
    if xq.device.type != "cpu":  # cuDNN may pick FFT / Winograd: float64 keeps the error far below 0.5
        return torch.round(op(xq.double(), wq.double(), None, *args))
    # Any partial sum of an output is at most max|x| * sum|w| over that output's kernel, in any order.
    l1 = wq.abs().sum(dim=[d for d in range(wq.dim()) if d != out_dim]).max() if wq.numel() else wq.new_zeros(())
    if 128 * float(l1) < 2**24:
        return op(xq, wq, None, *args)
    terms_per_channel = math.prod(wq.shape[2:]) if wq.dim() > 2 else 1
    channels = wq.shape[w_dim]
    step = EXACT_FLOAT32_TERMS // terms_per_channel
    if groups != 1 or step == 0:
        return op(xq.double(), wq.double(), None, *args)
    acc = None
    for start in range(0, channels, step):
        part = op(
            xq.narrow(x_dim, start, min(step, channels - start)),
            wq.narrow(w_dim, start, min(step, channels - start)),
            None,
            *args,
        ).double()
        acc = part if acc is None else acc.add_(part)
    return acc


def _epilogue(
    acc: torch.Tensor,
    input_scale: torch.Tensor,
    channel_scale: torch.Tensor,
    bias: torch.Tensor | None,
    channel_dim: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``float32(acc) * (input_scale * channel_scale)`` rounded to ``dtype``, then ``+ bias`` rounded to ``dtype``.

    Each step is one IEEE operation computed in float32 and rounded to the layer's float dtype: for float32
    that is the float32 epilogue; for float16 it is TensorRT's own (its plan shows ``Mul Cast Add``: the
    scaled sum is cast to float16 before the float16 bias is added).
    """
    shape = [1] * acc.dim()
    shape[channel_dim] = -1
    device = acc.device
    m = (input_scale.to(device, torch.float32) * channel_scale.to(device, torch.float32)).reshape(shape)
    y = acc.to(torch.float32).mul_(m) if acc.dtype == torch.float64 else acc.mul_(m)
    if dtype != torch.float32:
        y = y.to(dtype)
    if bias is not None:
        y = y.add_(bias.to(device, dtype).reshape(shape))  # float16 + float16: float32 sum, rounded once
    return y


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    """The layer's float dtype: its (dequantized) input's, float16 or float32."""
    return x.dtype if x.dtype in (torch.float16, torch.bfloat16) else torch.float32


def _conv(
    op: Callable[..., torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    args: tuple,
    scales: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    input_scale, weight_scale = scales
    groups = int(args[-1])
    xq, wq = _grid(x, input_scale, None), _grid(weight, weight_scale, 0)
    acc = _exact_sum(op, xq, wq, (1, 1, 0, groups), args)
    return _epilogue(acc, input_scale, weight_scale, bias, 1, _float_dtype(x))


def _deconv(
    op: Callable[..., torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    args: tuple,
    scales: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    input_scale, weight_scale = scales
    groups = int(args[3])
    # Weight (C_in, C_out / groups, *k) with per-output-channel scales on axis 1, repeated per group.
    xq, wq = _grid(x, input_scale, None), _grid(weight, weight_scale, 1)
    acc = _exact_sum(op, xq, wq, (1, 0, 1, groups), args)
    return _epilogue(acc, input_scale, weight_scale.repeat(groups), bias, 1, _float_dtype(x))


_EXTRA_ARGS = {F.conv_transpose1d: 5, F.conv_transpose2d: 5, F.linear: 0}


def _fake(functional: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Shape function for tracing: the functional op on the positional arguments it takes."""
    extra = _EXTRA_ARGS.get(functional, 4)

    def fake(
        input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *args: Any, **scales: Any
    ) -> torch.Tensor:
        return functional(input, weight, bias, *args[:extra])

    return fake


def _register(name: str, impl: Callable[..., torch.Tensor], functional: Callable[..., torch.Tensor]) -> Any:
    """A ``fx2trt::<name>`` custom op: FX tracing, pickling and torch.export keep it as one node."""
    op = torch.library.custom_op(f"fx2trt::{name}", mutates_args=())(impl)
    op.register_fake(_fake(functional))
    return getattr(torch.ops.fx2trt, name).default


def _conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
) -> torch.Tensor:
    return _conv(F.conv1d, input, weight, bias, (stride, padding, dilation, groups), (input_scale, weight_scale))


def _conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
) -> torch.Tensor:
    return _conv(F.conv2d, input, weight, bias, (stride, padding, dilation, groups), (input_scale, weight_scale))


def _conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
) -> torch.Tensor:
    return _conv(F.conv3d, input, weight, bias, (stride, padding, dilation, groups), (input_scale, weight_scale))


def _conv_transpose1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
) -> torch.Tensor:
    return _deconv(
        F.conv_transpose1d,
        input,
        weight,
        bias,
        (stride, padding, output_padding, groups, dilation),
        (input_scale, weight_scale),
    )


def _conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    output_padding: list[int],
    groups: int,
    dilation: list[int],
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
) -> torch.Tensor:
    return _deconv(
        F.conv_transpose2d,
        input,
        weight,
        bias,
        (stride, padding, output_padding, groups, dilation),
        (input_scale, weight_scale),
    )


def _linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_scale: torch.Tensor,
    weight_scale: torch.Tensor,
) -> torch.Tensor:
    xq, wq = _grid(input, input_scale, None), _grid(weight, weight_scale, 0)
    acc = _exact_sum(F.linear, xq, wq, (xq.dim() - 1, 1, 0, 1), ())
    # TensorRT has no matmul bias: the network adds it in its own elementwise layer (same rounding as above).
    return _epilogue(acc, input_scale, weight_scale, bias, acc.dim() - 1, _float_dtype(input))


#: The custom ops (OpOverloads) the reference graph calls; same positional arguments as the functional op
#: (stride / padding / dilation / output_padding as int lists), then ``input_scale`` and ``weight_scale``,
#: which the reference graph passes as keywords (converters read the positional arguments only).
conv1d = _register("int8_conv1d", _conv1d, F.conv1d)
conv2d = _register("int8_conv2d", _conv2d, F.conv2d)
conv3d = _register("int8_conv3d", _conv3d, F.conv3d)
conv_transpose1d = _register("int8_conv_transpose1d", _conv_transpose1d, F.conv_transpose1d)
conv_transpose2d = _register("int8_conv_transpose2d", _conv_transpose2d, F.conv_transpose2d)
linear = _register("int8_linear", _linear, F.linear)


def _matmul(
    input: torch.Tensor, other: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """``input @ other`` of two per-tensor dequantized activations (attention's Q @ K^T and P @ V)."""
    aq, bq = _grid(input, input_scale, None), _grid(other, weight_scale, None)
    # |partial sums| <= K * 128 * 128: exact in float32 below 2**24, i.e. up to 1023 terms (CPU only, as
    # for convolutions: a CUDA matmul may use reduced-precision paths).
    if aq.shape[-1] * 128 * 128 < 2**24 and aq.device.type == "cpu":
        acc = torch.matmul(aq, bq)
    else:
        acc = torch.matmul(aq.double(), bq.double())
    return _epilogue(acc, input_scale, weight_scale, None, acc.dim() - 1, _float_dtype(input))


_matmul_op = torch.library.custom_op("fx2trt::int8_matmul", mutates_args=())(_matmul)
_matmul_op.register_fake(lambda input, other, input_scale, weight_scale: torch.matmul(input, other))
#: Integer matmul of two quantized activations: ``torch.matmul``'s positional arguments, then the two scales
#: (keywords ``input_scale`` for the first operand, ``weight_scale`` for the second).
matmul = torch.ops.fx2trt.int8_matmul.default

#: Integer-arithmetic op -> the torch.nn.functional op it computes (same positional arguments).
FUNCTIONAL_OF: dict[Any, Callable[..., torch.Tensor]] = {
    conv1d: F.conv1d,
    conv2d: F.conv2d,
    conv3d: F.conv3d,
    conv_transpose1d: F.conv_transpose1d,
    conv_transpose2d: F.conv_transpose2d,
    linear: F.linear,
    matmul: torch.matmul,
}
#: torch.nn.functional op -> its integer-arithmetic form.
INTEGER_OF = {functional: integer for integer, functional in FUNCTIONAL_OF.items()}
#: Per-channel weight axis that is the output-channel axis (the only one an integer sum can factor out).
OUTPUT_CHANNEL_AXIS = {F.conv_transpose1d: 1, F.conv_transpose2d: 1}


def is_integer_op(node: torch.fx.Node) -> bool:
    """True for an FX node calling one of these integer-arithmetic functions."""
    return node.op == "call_function" and node.target in FUNCTIONAL_OF
