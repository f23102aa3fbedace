"""Quantize / dequantize as stable custom ops that carry TensorRT's exact semantics.

``torch.ops.fx2trt.quantize(x, scale, axis)`` returns a real ``torch.int8`` tensor:
``saturate(round_half_to_even(x / scale))`` to [-128, 127], which is what TensorRT's
IQuantizeLayer computes. ``torch.ops.fx2trt.dequantize(q, scale, axis, out_dtype)`` returns
``q * scale`` computed in float32 and rounded once to ``out_dtype`` (float32 when ``None``; float16 in
graphs quantized with ``QuantConfig(float_dtype="float16")``, like IDequantizeLayer's ``to_type``).
``axis`` is ``None`` for per-tensor scales (0-d ``scale``) and the
channel axis for per-channel scales (1-d ``scale``). Symmetric only: the zero point is 0.

These ops replace torch's deprecated ``qint8`` tensor types in every graph we build, so a
quantized GraphModule is plain float/int8 tensors that run on CPU and CUDA.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.quantize import qdq_ops
    >>> q = qdq_ops.quantize(torch.tensor([0.25, 1.0, -9.0]), torch.tensor(0.5))
    >>> q.tolist(), q.dtype
    ([0, 2, -18], torch.int8)
"""

from __future__ import annotations

import torch

QMIN, QMAX = -128, 127
#: Weights use the narrow range so that -w and w quantize symmetrically (TensorRT, ModelOpt).
WEIGHT_QMAX = 127


def _broadcast_scale(scale: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None:
        return scale
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.reshape(shape)


@torch.library.custom_op("fx2trt::quantize", mutates_args=())
def _quantize(x: torch.Tensor, scale: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    s = _broadcast_scale(scale.to(torch.float32), x, axis)
    # torch.round is round-half-to-even, like TensorRT.
    return torch.clamp(torch.round(x.to(torch.float32) / s), QMIN, QMAX).to(torch.int8)


@_quantize.register_fake
def _quantize_fake(x: torch.Tensor, scale: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    return torch.empty_like(x, dtype=torch.int8)


@torch.library.custom_op("fx2trt::dequantize", mutates_args=())
def _dequantize(
    q: torch.Tensor, scale: torch.Tensor, axis: int | None = None, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    s = _broadcast_scale(scale.to(torch.float32), q, axis)
    y = q.to(torch.float32) * s
    return y if out_dtype in (None, torch.float32) else y.to(out_dtype)


@_dequantize.register_fake
def _dequantize_fake(
    q: torch.Tensor, scale: torch.Tensor, axis: int | None = None, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    return torch.empty_like(q, dtype=out_dtype or torch.float32)


#: The OpOverloads that appear as ``call_function`` targets in quantized graphs.
QUANTIZE = torch.ops.fx2trt.quantize.default
DEQUANTIZE = torch.ops.fx2trt.dequantize.default


def quantize(x: torch.Tensor, scale: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Quantize ``x`` to int8 with TensorRT semantics (see module docstring)."""
    return QUANTIZE(x, scale, axis)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, axis: int | None = None, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Dequantize an int8 tensor to float32, or to ``out_dtype`` (see module docstring)."""
    return DEQUANTIZE(q, scale, axis, out_dtype)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))``: the value TensorRT sees after a Q/DQ pair."""
    return dequantize(quantize(x, scale, axis), scale, axis)


def is_quantize(node: torch.fx.Node) -> bool:
    """True for an FX node calling our quantize op."""
    return node.op == "call_function" and node.target is QUANTIZE


def is_dequantize(node: torch.fx.Node) -> bool:
    """True for an FX node calling our dequantize op."""
    return node.op == "call_function" and node.target is DEQUANTIZE


#: torch.ao FX reference graphs quantize with these; PT2E graphs with ``quantized_decomposed`` ops, matched
#: by name so that nothing here imports the module that registers them.
_AO_QUANTIZE = (torch.quantize_per_tensor, torch.quantize_per_channel)
_PT2E_QUANTIZE = ("quantized_decomposed.quantize_per_tensor.", "quantized_decomposed.quantize_per_channel.")
_PT2E_DEQUANTIZE = ("quantized_decomposed.dequantize_per_tensor.", "quantized_decomposed.dequantize_per_channel.")


def _is_op(node: torch.fx.Node, prefixes: tuple[str, ...]) -> bool:
    return (
        node.op == "call_function"
        and isinstance(node.target, torch._ops.OpOverload)
        and str(node.target).startswith(prefixes)
    )


def is_any_quantize(node: torch.fx.Node) -> bool:
    """True for a quantize node of any supported flavour: ours, torch.ao's or PT2E's.

    Example:
        >>> g = torch.fx.Graph()
        >>> x = g.placeholder("x")
        >>> is_any_quantize(g.call_function(torch.quantize_per_tensor, (x, 0.1, 0, torch.qint8)))
        True
    """
    return (
        is_quantize(node)
        or (node.op == "call_function" and node.target in _AO_QUANTIZE)
        or _is_op(node, _PT2E_QUANTIZE)
    )


def is_any_dequantize(node: torch.fx.Node) -> bool:
    """True for a dequantize node of any supported flavour (ours, ``Tensor.dequantize``, PT2E's)."""
    if node.op == "call_method":
        return node.target == "dequantize"
    return (
        is_dequantize(node)
        or (node.op == "call_function" and node.target is torch.dequantize)
        or _is_op(node, _PT2E_DEQUANTIZE)
    )


def distinct_dequantize_count(gm: torch.fx.GraphModule) -> int:
    """Dequantize nodes of ``gm``, counting PT2E's per-consumer copies of one dequantize once (convert_pt2e
    duplicates a DQ for every consumer; converters and exporters make one layer / node of them)."""
    keys = set()
    for n in gm.graph.nodes:
        if is_any_dequantize(n):
            keys.add((n.target, n.args, tuple(n.kwargs.items())) if _is_op(n, _PT2E_DEQUANTIZE) else n)
    return len(keys)
