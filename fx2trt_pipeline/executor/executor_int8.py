"""TensorRT's INT8 arithmetic in the network executor: quantized conv / deconv / matmul summed exactly.

TensorRT runs a convolution (or deconvolution, or matrix multiply) whose data input is an
IDequantizeLayer of an int8 tensor with a per-tensor scale, and whose kernel is an IDequantizeLayer
of an int8 tensor scaled per output channel, as an INT8 kernel: int8 x int8 products summed exactly
(int32), then a float32 epilogue. This module finds those layers in the real ``INetworkDefinition``
(reading the DQ layers' inputs and ``axis``) and gives them a handler that computes:

1. ``acc``: the exact integer sum over the int8 operands (zero points must be 0), in float64 (exact:
   every sum of int8 x int8 products stays far below 2**53), using the executor's own layer semantics
   for padding, stride, groups and operand transposes;
2. ``float32(acc) * float32(s_in * s_w[c])`` then ``+ bias`` (float32; the bias when the layer holds
   one), the output TensorRT's epilogue gives to the next layers (activation, next Q) which the executor
   runs as their own float32 layers. When the network declares the layer's output float16, the scaled
   sum is rounded to float16 before the bias is added and the sum is rounded to float16 again (TensorRT's
   plan of such a layer reads ``Mul Cast Add``).

Other layers (a kernel scaled on its summed axis, float inputs) keep the float handlers. The code is
written from the network alone and shares nothing with the simulated model's arithmetic
(``quantize/int8_ops.py``), so agreement between the two is evidence, not construction.

Example:
    >>> from fx2trt_pipeline.executor.executor_int8 import integer_layers
    >>> integer_layers(NetworkExecutor(network))   # doctest: +SKIP
    ['conv1', 'layer1_0_conv1', ...]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.executor.executor_common import Inputs, LayerHandler, require, weights_tensor
from fx2trt_pipeline.executor.executor_layers import run_convolution, run_deconvolution
from fx2trt_pipeline.executor.executor_tensor_ops import run_matrix_multiply
from fx2trt_pipeline.trt_types import torch_dtype


@dataclass(frozen=True)
class _Operand:
    """An int8 tensor behind a DQ layer: its tensor names and the DQ's per-channel axis."""

    int8: str
    scale: str
    zero_point: str | None
    axis: int | None
    #: ``int8`` names a float tensor of dequantized values (a max-pool of the DQ output), not the int8 one.
    dequantized: bool = False


class _WithoutBias:
    """A layer seen without its bias weights, so the float handler returns the bare integer sum."""

    def __init__(self, layer: Any) -> None:
        self._layer = layer

    def __getattr__(self, name: str) -> Any:
        return None if name == "bias" else getattr(self._layer, name)


def _operand_values(
    layer: Any, inputs: Inputs, base: int, dequantized: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(integer values, float32 scale)`` of the operand whose names start at ``inputs[base]``.

    ``dequantized``: ``inputs[base]`` holds ``q * s`` values (in float32, within 2**-23 of the grid), whose
    integers ``round(v / s)`` are exactly ``q``.
    """
    q, scale, zero_point = inputs[base], inputs[base + 1], inputs[base + 2]
    if dequantized:
        q = torch.round(q.to(torch.float32) / scale.to(torch.float32))
    # TensorRT's INT8 is symmetric; ONNX models carry explicit zero points, which must then be 0.
    require(
        zero_point is None or not bool(zero_point.ne(0).any()),
        layer,
        "an INT8 operand's dequantize has a nonzero zero point (TensorRT needs symmetric quantization)",
    )
    return q.to(torch.float64), scale.to(torch.float32).reshape(-1)


def _output_dtype(layer: Any) -> torch.dtype:
    """The dtype the network declares for the layer's output (float32, or float16 in a float16 network)."""
    return torch_dtype(layer.get_output(0).dtype)


def _epilogue(
    acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, channel_dim: int, out_dtype: torch.dtype
) -> torch.Tensor:
    """``float32(acc) * scale``, rounded to the output dtype, ``+ bias`` (the executor rounds the result to the
    output dtype): with a float16 output TensorRT casts the scaled sum to float16 before adding the bias (its
    plan reads ``Mul Cast Add``); with float32 both steps are float32 operations."""
    shape = [1] * acc.dim()
    shape[channel_dim] = -1
    y = acc.to(torch.float32) * scale.reshape(shape) if scale.numel() > 1 else acc.to(torch.float32) * scale
    if out_dtype != torch.float32:
        y = y.to(out_dtype).to(torch.float32)
    return y if bias is None else y + bias.to(torch.float32).reshape(shape)


def run_int8_conv(layer: Any, inputs: Inputs, transposed: bool, dequantized: bool = False) -> torch.Tensor:
    """An INT8 (de)convolution: ``inputs`` = the layer's own inputs + x (int8, scale, zp) + kernel (int8, scale, zp).

    ``dequantized``: x is given by its dequantized values (a max-pool of a DQ output), not its int8 tensor.
    """
    own = len(inputs) - 6
    x, s_x = _operand_values(layer, inputs, own, dequantized)
    w, s_w = _operand_values(layer, inputs, own + 3)
    groups = int(layer.num_groups)
    handler = run_deconvolution if transposed else run_convolution
    acc = handler(_WithoutBias(layer), [x, w])
    bias = inputs[2] if own > 2 and inputs[2] is not None else weights_tensor(layer.bias, acc)
    channel_scale = s_w.repeat(groups) if transposed and s_w.numel() > 1 else s_w
    return _epilogue(acc, s_x * channel_scale, bias, 1, _output_dtype(layer))


def run_int8_matmul(layer: Any, inputs: Inputs) -> torch.Tensor:
    """An INT8 matrix multiply: ``inputs`` = (a, b) + a (int8, scale, zp) + b (int8, scale, zp)."""
    a, s_a = _operand_values(layer, inputs, 2)
    b, s_b = _operand_values(layer, inputs, 5)
    acc = run_matrix_multiply(layer, [a, b])
    return _epilogue(acc, s_a * s_b, None, acc.dim() - 1, _output_dtype(layer))


def _through_max_pools(name: str | None, steps_by_output: dict[str, Any]) -> tuple[str | None, bool]:
    """The tensor ``name`` stands for once MAX pooling layers are looked through, and whether any was.

    TensorRT moves a DQ past a max-pool (max commutes with a positive scale) and runs DQ -> MaxPool ->
    Conv as an INT8 convolution.
    """
    pooled = False
    step = steps_by_output.get(name) if name is not None else None
    while step is not None and step.type_name == "POOLING" and step.layer.type.name == "MAX":
        name, pooled = step.inputs[0], True
        step = steps_by_output.get(name)
    return name, pooled


def _operand(name: str | None, steps_by_output: dict[str, Any], scale_rank: int) -> _Operand | None:
    """The int8 operand behind tensor ``name`` when a DQ layer makes it, with a scale of ``scale_rank``;
    for data operands (``scale_rank`` 0) also a DQ behind max-pooling layers."""
    source, pooled = _through_max_pools(name, steps_by_output) if scale_rank == 0 else (name, False)
    dq = steps_by_output.get(source) if source is not None else None
    if dq is None or dq.type_name != "DEQUANTIZE":
        return None
    q_name, scale_name = dq.inputs[0], dq.inputs[1]
    producer = steps_by_output.get(q_name)
    scale_step = steps_by_output.get(scale_name)
    if producer is None or scale_step is None or producer.out_dtypes[producer.outputs.index(q_name)] != torch.int8:
        return None
    scale_shape = scale_step.out_shapes[scale_step.outputs.index(scale_name)]
    if len([d for d in scale_shape if d != 1]) > scale_rank:
        return None
    zero_point = dq.inputs[2] if len(dq.inputs) > 2 else None
    axis = int(dq.layer.axis) if len(scale_shape) == 1 and scale_shape[0] > 1 else None
    if pooled:
        return _Operand(str(name), scale_name, zero_point, axis, dequantized=True)
    return _Operand(q_name, scale_name, zero_point, axis)


def _kernel_axis_ok(step: Any, kernel: _Operand) -> bool:
    """The kernel scale must sit on the output-channel axis (else it cannot leave the integer sum)."""
    if kernel.axis is None:
        return True
    if step.type_name == "CONVOLUTION":
        return kernel.axis == 0
    if step.type_name == "DECONVOLUTION":
        return kernel.axis == 1
    op1 = step.layer.op1.name  # matmul: the output's last dim is b's columns (rows when transposed)
    return (op1 == "TRANSPOSE" and kernel.axis == 0) or (op1 == "NONE" and kernel.axis == 1)


def _integer_step(step: Any, steps_by_output: dict[str, Any]) -> Any:
    """``step`` with an INT8 handler when its operands are DQ'd int8 tensors, else ``step`` unchanged."""
    if step.type_name not in ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY") or len(step.inputs) < 2:
        return step
    data = _operand(step.inputs[0], steps_by_output, 0)
    kernel = _operand(step.inputs[1], steps_by_output, 1)
    if data is None or kernel is None or not _kernel_axis_ok(step, kernel):
        return step
    if step.type_name == "MATRIX_MULTIPLY":
        if step.layer.op0.name != "NONE" or step.layer.op1.name == "VECTOR":
            return step
        if data.dequantized:
            return step
        fn = run_int8_matmul
    else:
        fn = functools.partial(
            run_int8_conv, transposed=step.type_name == "DECONVOLUTION", dequantized=data.dequantized
        )
    extra = [data.int8, data.scale, data.zero_point, kernel.int8, kernel.scale, kernel.zero_point]
    handler = LayerHandler(step.handler.layer_type, step.handler.class_name, fn)
    return dataclasses.replace(step, handler=handler, inputs=list(step.inputs) + extra)


def with_integer_arithmetic(steps: Sequence[Any]) -> list[Any]:
    """The executor's steps with every INT8 conv / deconv / matmul given its integer handler.

    ``steps`` carry ``type_name``, ``layer``, ``inputs``, ``outputs``, ``out_dtypes``, ``out_shapes``
    and ``handler`` (the executor's plan); order and everything else is kept.
    """
    steps_by_output = {name: step for step in steps for name in step.outputs}
    return [_integer_step(step, steps_by_output) for step in steps]


def integer_layers(executor: Any) -> list[str]:
    """Names of the layers a :class:`NetworkExecutor` runs with INT8 arithmetic, in execution order."""
    return [
        s.name
        for s in executor._steps
        if s.handler.fn not in (run_convolution, run_deconvolution, run_matrix_multiply)
        and s.type_name in ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")
    ]
