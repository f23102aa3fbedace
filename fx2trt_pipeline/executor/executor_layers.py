"""Network-executor handlers for spatial and neural-network layers.

Convolution, deconvolution, pooling, resize, activation, normalization, scale, parametric ReLU and
padding, each computed in torch with TensorRT's documented semantics (padding modes, output-size
rounding, coordinate transformations). Registered with :func:`layer_handler`; see
:mod:`fx2trt_pipeline.executor.network_executor` for how they are called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fx2trt_pipeline.executor.executor_common import (
    Inputs,
    axes_from_mask,
    dims,
    layer_handler,
    require,
    shape_values,
    weights_tensor,
)

# ----------------------------------------------------------------------------------------- padding


def _forward_pads(
    layer: Any, sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int]
) -> tuple[list[int], list[int], list[int]]:
    """``(pre, post, overflow)`` per spatial dim for convolution and pooling.

    ``overflow`` is the extra tail that EXPLICIT_ROUND_UP needs so the last (partial) window
    exists: TensorRT's output size is then ``ceil((I + pre + post - K) / S) + 1``, with no
    PyTorch-style rule dropping a window that starts in the padding.
    """
    mode = layer.padding_mode.name
    n = len(sizes)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pre, post = [], []
        for i, k, s in zip(sizes, kernel, stride):
            total = max((-(-i // s) - 1) * s + k - i, 0)
            lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
            pre.append(lo)
            post.append(total - lo)
        return pre, post, [0] * n
    pre, post = list(dims(layer.pre_padding)), list(dims(layer.post_padding))
    overflow = [0] * n
    if mode == "EXPLICIT_ROUND_UP":
        for d in range(n):
            span = sizes[d] + pre[d] + post[d] - kernel[d]
            out = -(-span // stride[d]) + 1
            overflow[d] = max((out - 1) * stride[d] + kernel[d] - (sizes[d] + pre[d] + post[d]), 0)
    return pre, post, overflow


def _pad_spatial(x: torch.Tensor, pre: Sequence[int], post: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad (or crop, for negative amounts) the trailing ``len(pre)`` dims of ``x``."""
    flat: list[int] = []
    for lo, hi in zip(reversed(pre), reversed(post)):  # F.pad lists the last dim first
        flat += [int(lo), int(hi)]
    return F.pad(x, flat, value=value) if any(flat) else x


def _effective_kernel(kernel: Sequence[int], dilation: Sequence[int]) -> list[int]:
    return [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _kernel_and_bias(
    layer: Any, inputs: Inputs, x: torch.Tensor, kernel_shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Kernel from input 1 (e.g. an int8 constant -> IDequantizeLayer) or from the layer's weights."""
    weight = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    if weight is None:
        weight = weights_tensor(layer.kernel, x)
        require(weight is not None, layer, "has neither kernel weights nor a kernel input (input 1)")
        weight = weight.reshape(tuple(kernel_shape))
    bias = inputs[2] if len(inputs) > 2 and inputs[2] is not None else weights_tensor(layer.bias, x)
    bias = bias.reshape(-1).to(x.dtype) if bias is not None else None
    return weight.to(x.dtype), bias


@layer_handler("CONVOLUTION", "IConvolutionLayer")
def run_convolution(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IConvolutionLayer: zero padding (explicit or SAME), dilation, groups, optional bias."""
    x = inputs[0]
    ks, n = dims(layer.kernel_size_nd), len(dims(layer.kernel_size_nd))
    groups, maps = int(layer.num_groups), int(layer.num_output_maps)
    weight, bias = _kernel_and_bias(layer, inputs, x, (maps, x.shape[1] // groups, *ks))
    stride, dilation = dims(layer.stride_nd), dims(layer.dilation_nd)
    pre, post, overflow = _forward_pads(layer, x.shape[-n:], _effective_kernel(ks, dilation), stride)
    post = [p + o for p, o in zip(post, overflow)]
    if pre == post and min(pre) >= 0:
        # Symmetric padding goes to the convolution itself: the same kernel path (and float summation
        # order) as the eager model, so that no int8 rounding downstream flips on a 1e-7 difference.
        return _CONV[n](x, weight, bias, stride, pre, dilation, groups)
    return _CONV[n](_pad_spatial(x, pre, post), weight, bias, stride, 0, dilation, groups)


@layer_handler("DECONVOLUTION", "IDeconvolutionLayer")
def run_deconvolution(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IDeconvolutionLayer: kernel laid out (C_in, K/groups, *kernel) like ONNX ConvTranspose.

    Padding crops the full transposed-convolution output (negative post padding extends it with
    zeros, which is how PyTorch's ``output_padding`` appears); the bias is added afterwards.
    """
    x = inputs[0]
    ks, n = dims(layer.kernel_size_nd), len(dims(layer.kernel_size_nd))
    groups, maps = int(layer.num_groups), int(layer.num_output_maps)
    weight, bias = _kernel_and_bias(layer, inputs, x, (x.shape[1], maps // groups, *ks))
    stride, dilation = dims(layer.stride_nd), dims(layer.dilation_nd)
    mode = layer.padding_mode.name
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        full_sizes = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(x.shape[-n:], stride, ks, dilation)]
        totals = [f - i * s for f, i, s in zip(full_sizes, x.shape[-n:], stride)]
        pre = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in totals]
        post = [t - p for t, p in zip(totals, pre)]
    else:
        pre, post = list(dims(layer.pre_padding)), list(dims(layer.post_padding))
    extra = [a - b for a, b in zip(pre, post)]  # PyTorch's output_padding
    if min(pre) >= 0 and all(0 <= e < max(s, d) for e, s, d in zip(extra, stride, dilation)):
        # Expressible as PyTorch padding/output_padding: the eager model's own kernel path (see conv).
        return _DECONV[n](x, weight, bias, stride, pre, extra, groups, dilation)
    full = _DECONV[n](x, weight, None, stride, 0, 0, groups, dilation)
    out = _pad_spatial(full, [-p for p in pre], [-p for p in post])
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * n))
    return out


# ----------------------------------------------------------------------------------------- pooling


def _as_2d_or_3d(x: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    # torch has no 1-d pooling with divisor_override; run 1-d pooling as 2-d with a unit dim.
    return (x.unsqueeze(-2), 2) if n == 1 else (x, n)


@layer_handler("POOLING", "IPoolingLayer")
def run_pooling(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IPoolingLayer: MAX, AVERAGE (count with or without padding) and MAX_AVERAGE_BLEND."""
    x = inputs[0]
    window, stride = list(dims(layer.window_size_nd)), list(dims(layer.stride_nd))
    n = len(window)
    pre, post, overflow = _forward_pads(layer, x.shape[-n:], window, stride)
    kind = layer.type.name  # on a cast IPoolingLayer, `type` is the PoolingType
    xs, m = _as_2d_or_3d(x, n)
    if n == 1:
        window, stride, pre, post, overflow = [1, *window], [1, *stride], [0, *pre], [0, *post], [0, *overflow]
    results: dict[str, torch.Tensor] = {}
    if kind in ("MAX", "MAX_AVERAGE_BLEND"):
        padded = _pad_spatial(xs, pre, [p + o for p, o in zip(post, overflow)], value=-math.inf)
        results["MAX"] = (F.max_pool2d if m == 2 else F.max_pool3d)(padded, window, stride)
    if kind in ("AVERAGE", "MAX_AVERAGE_BLEND"):
        avg = F.avg_pool2d if m == 2 else F.avg_pool3d
        total = avg(_pad_spatial(xs, pre, [p + o for p, o in zip(post, overflow)]), window, stride, divisor_override=1)
        # Divisor: real elements, plus the explicit padding unless it is excluded; never the
        # round-up overflow (as ONNX Runtime and PyTorch count it).
        ones = torch.ones((1, 1, *xs.shape[-m:]), dtype=xs.dtype, device=xs.device)
        pad_value = 0.0 if layer.average_count_excludes_padding else 1.0
        mask = _pad_spatial(_pad_spatial(ones, pre, post, value=pad_value), [0] * m, overflow)
        results["AVERAGE"] = total / avg(mask, window, stride, divisor_override=1)
    if kind == "MAX_AVERAGE_BLEND":
        blend = float(layer.blend_factor)
        out = (1.0 - blend) * results["MAX"] + blend * results["AVERAGE"]
    else:
        require(kind in results, layer, f"unsupported PoolingType.{kind}")
        out = results[kind]
    return out.squeeze(-2) if n == 1 else out


# ------------------------------------------------------------------------------------------ resize


def _resize_coords(layer: Any, out_size: int, in_size: int, scale: float, device: torch.device) -> torch.Tensor:
    """Source coordinate of every output index along one axis (float32, as TensorRT computes)."""
    o = torch.arange(out_size, dtype=torch.float32, device=device)
    if out_size == 1 and layer.selector_for_single_pixel.name == "UPPER":
        return torch.zeros_like(o)
    mode = layer.coordinate_transformation.name
    if mode == "ALIGN_CORNERS":
        return o * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(o)
    if mode == "HALF_PIXEL":
        return (o + 0.5) / scale - 0.5
    return o / scale  # ASYMMETRIC


_NEAREST_ROUND: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "FLOOR": torch.floor,
    "CEIL": torch.ceil,
    "HALF_UP": lambda c: torch.floor(c + 0.5),
    "HALF_DOWN": lambda c: torch.ceil(c - 0.5),
}


def _cubic_weights(t: torch.Tensor, a: float) -> list[torch.Tensor]:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(c)."""

    def near(d: torch.Tensor) -> torch.Tensor:
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: torch.Tensor) -> torch.Tensor:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _resize_axis(layer: Any, x: torch.Tensor, dim: int, out_size: int, scale: float) -> torch.Tensor:
    in_size = x.shape[dim]
    c = _resize_coords(layer, out_size, in_size, scale, x.device)
    mode = layer.resize_mode.name

    def take(idx: torch.Tensor) -> torch.Tensor:
        return x.index_select(dim, idx.clamp(0, in_size - 1).to(torch.long))

    def along(w: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[dim] = -1
        return w.reshape(shape).to(x.dtype)

    if mode == "NEAREST":
        return take(_NEAREST_ROUND[layer.nearest_rounding.name](c))
    if mode == "LINEAR":
        c = c.clamp(0, in_size - 1)
        lo = torch.floor(c)
        w = c - lo
        return take(lo) * along(1 - w) + take(lo + 1) * along(w)
    require(mode == "CUBIC", layer, f"unsupported InterpolationMode.{mode}")
    base = torch.floor(c)
    weights = _cubic_weights(c - base, float(layer.cubic_coeff))
    taps = [base + k for k in (-1, 0, 1, 2)]
    if layer.exclude_outside:  # drop taps outside the input and renormalise the rest
        weights = [w * ((t >= 0) & (t <= in_size - 1)) for w, t in zip(weights, taps)]
        norm = sum(weights)
        weights = [w / norm for w in weights]
    return sum(take(t) * along(w) for t, w in zip(taps, weights))


@layer_handler("RESIZE", "IResizeLayer")
def run_resize(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IResizeLayer: NEAREST / LINEAR / CUBIC, separable over every resized dimension.

    The output size comes from input 1 (integer sizes or float scales), the static ``shape`` or
    ``scales``. Coordinates use the given scale when there is one (like ONNX Resize), else
    ``out / in``.
    """
    x = inputs[0]
    scales: list[float] | None = None
    if len(inputs) > 1 and inputs[1] is not None:
        if inputs[1].is_floating_point():
            scales = [float(v) for v in inputs[1].reshape(-1).tolist()]
        else:
            out_shape = list(shape_values(inputs[1]))
    elif layer.shape is not None:
        out_shape = list(dims(layer.shape))
    else:
        scales = [float(s) for s in layer.scales]
    if scales is not None:
        out_shape = [math.floor(i * s) for i, s in zip(x.shape, scales)]
    require(len(out_shape) == x.dim(), layer, f"output shape {out_shape} does not match rank {x.dim()}")
    for d in range(x.dim()):
        scale = scales[d] if scales is not None else out_shape[d] / x.shape[d]
        if out_shape[d] != x.shape[d] or scale != 1.0:
            x = _resize_axis(layer, x, d, out_shape[d], scale)
    return x


# -------------------------------------------------------------------------------------- activation

_ACTIVATIONS: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "RELU": lambda x, a, b: torch.relu(x),
    "SIGMOID": lambda x, a, b: torch.sigmoid(x),
    "TANH": lambda x, a, b: torch.tanh(x),
    "LEAKY_RELU": lambda x, a, b: torch.where(x >= 0, x, x * a),
    "ELU": lambda x, a, b: torch.where(x >= 0, x, a * torch.expm1(x)),
    "SELU": lambda x, a, b: b * torch.where(x >= 0, x, a * torch.expm1(x)),
    "SOFTSIGN": lambda x, a, b: x / (1 + x.abs()),
    "SOFTPLUS": lambda x, a, b: a * F.softplus(x * b),
    "CLIP": lambda x, a, b: x.clamp(a, b),
    "HARD_SIGMOID": lambda x, a, b: (x * a + b).clamp(0, 1),
    "SCALED_TANH": lambda x, a, b: a * torch.tanh(x * b),
    "THRESHOLDED_RELU": lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)),
    "GELU_ERF": lambda x, a, b: F.gelu(x),
    "GELU_TANH": lambda x, a, b: F.gelu(x, approximate="tanh"),
}


@layer_handler("ACTIVATION", "IActivationLayer")
def run_activation(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IActivationLayer: every ActivationType, with ``alpha``/``beta`` as TensorRT defines them."""
    kind = layer.type.name  # on a cast IActivationLayer, `type` is the ActivationType
    require(kind in _ACTIVATIONS, layer, f"unsupported ActivationType.{kind}")
    return _ACTIVATIONS[kind](inputs[0], float(layer.alpha), float(layer.beta))


@layer_handler("PARAMETRIC_RELU", "IParametricReLULayer")
def run_parametric_relu(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IParametricReLULayer: ``x`` where ``x >= 0``, else ``slope * x`` (slope broadcasts)."""
    x, slope = inputs[0], inputs[1]
    return torch.where(x >= 0, x, x * slope.to(x.dtype))


# ------------------------------------------------------------------------- normalization and scale


@layer_handler("NORMALIZATION", "INormalizationLayer")
def run_normalization(layer: Any, inputs: Inputs) -> torch.Tensor:
    """INormalizationLayer: layer/instance norm, and group norm when ``num_groups > 1``.

    Statistics are computed in float32 (biased variance); with groups, channels (dim 1) are split
    into ``num_groups`` and normalised together with the other reduced axes.
    """
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    axes = axes_from_mask(int(layer.axes), x.dim())
    groups = int(layer.num_groups)
    xf = x.float()
    if groups > 1:
        n, c = xf.shape[:2]
        xf = xf.reshape(n, groups, c // groups, *xf.shape[2:])
        axes = [2] + [a + 1 for a in axes if a >= 2]
    mean = xf.mean(dim=axes, keepdim=True)
    var = xf.var(dim=axes, keepdim=True, unbiased=False)
    y = ((xf - mean) / torch.sqrt(var + float(layer.epsilon))).reshape(x.shape)
    if scale.numel() == groups and groups > 1 and groups != x.shape[1]:
        # Scale and bias given per group: apply them on the grouped view.
        y = y.reshape(x.shape[0], groups, -1) * scale.reshape(1, groups, 1) + bias.reshape(1, groups, 1)
        return y.reshape(x.shape).to(x.dtype)
    return (y * scale.float() + bias.float()).to(x.dtype)


@layer_handler("SCALE", "IScaleLayer")
def run_scale(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IScaleLayer: ``(x * scale + shift) ** power``, UNIFORM / CHANNEL / ELEMENTWISE."""
    x = inputs[0]
    mode = layer.mode.name
    axis = int(layer.channel_axis)
    if mode == "UNIFORM":
        shape: list[int] = []
    elif mode == "CHANNEL":
        shape = [1] * x.dim()
        shape[axis] = -1
    else:
        shape = list(x.shape[axis:])

    def param(weights: Any, default: float) -> Any:
        t = weights_tensor(weights, x, x.dtype)
        return default if t is None else t.reshape(shape)

    out = x * param(layer.scale, 1.0) + param(layer.shift, 0.0)
    power = param(layer.power, 1.0)
    return out if isinstance(power, float) and power == 1.0 else torch.pow(out, power)


@layer_handler("PADDING", "IPaddingLayer")
def run_padding(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IPaddingLayer: zero padding (negative amounts crop) of the trailing dimensions."""
    return _pad_spatial(inputs[0], dims(layer.pre_padding_nd), dims(layer.post_padding_nd))
