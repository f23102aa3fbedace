"""Network-executor handlers for the layers that move or pick values: shuffle, concatenation, squeeze,
unsqueeze, slice and gather, each computed in torch with TensorRT's documented semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fx2trt_pipeline.executor.executor_common import (
    Inputs,
    dims,
    layer_handler,
    optional_input,
    require,
    shape_values,
)


def _permutation(value: Any, rank: int) -> list[int]:
    # TensorRT reports a Permutation with its maximum length; the first `rank` entries apply.
    return list(dims(value))[:rank]


@layer_handler("SHUFFLE", "IShuffleLayer")
def run_shuffle(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IShuffleLayer: first transpose, reshape (0 copies a dim when zero_is_placeholder, -1 infers),
    second transpose. The reshape dims come from input 1 (a shape tensor) or ``reshape_dims``."""
    x = inputs[0].permute(_permutation(layer.first_transpose, inputs[0].dim()))
    shape_input = optional_input(inputs, 1)
    new = (
        shape_values(shape_input)
        if shape_input is not None
        else (dims(layer.reshape_dims) if layer.reshape_dims is not None else None)
    )
    if new is not None:
        if layer.zero_is_placeholder:
            new = tuple(x.shape[i] if d == 0 else d for i, d in enumerate(new))
        x = x.reshape(new)
    return x.permute(_permutation(layer.second_transpose, x.dim()))


@layer_handler("CONCATENATION", "IConcatenationLayer")
def run_concatenation(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IConcatenationLayer: ``torch.cat`` along ``axis``."""
    return torch.cat([t for t in inputs if t is not None], dim=int(layer.axis))


def _axes_tensor_or_attr(tensor: torch.Tensor | None, rank: int) -> list[int]:
    return [a % rank for a in shape_values(tensor)] if tensor is not None else []


@layer_handler("SQUEEZE", "ISqueezeLayer")
def run_squeeze(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ISqueezeLayer: remove the size-1 dims listed by input 1."""
    x = inputs[0]
    axes = set(_axes_tensor_or_attr(optional_input(inputs, 1), x.dim()))
    return x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


@layer_handler("UNSQUEEZE", "IUnsqueezeLayer")
def run_unsqueeze(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IUnsqueezeLayer: insert size-1 dims at the output positions listed by input 1."""
    x = inputs[0]
    rank = x.dim() + optional_input(inputs, 1).numel()
    axes = set(_axes_tensor_or_attr(optional_input(inputs, 1), rank))
    sizes = iter(x.shape)
    return x.reshape([1 if i in axes else next(sizes) for i in range(rank)])


# ------------------------------------------------------------------------------------------ slice


def _slice_indices(
    mode: str, start: int, size: int, stride: int, extent: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Source indices along one axis and, for FILL mode, the mask of in-bounds positions."""
    idx = start + torch.arange(size, device=device) * stride
    inside = (idx >= 0) & (idx < extent)
    if mode == "WRAP":
        return idx % extent, None
    if mode == "CLAMP":
        return idx.clamp(0, extent - 1), None
    if mode == "REFLECT":
        period = max(2 * (extent - 1), 1)
        idx = idx % period
        return torch.where(idx >= extent, period - idx, idx), None
    return idx.clamp(0, extent - 1), (inside if mode == "FILL" else None)


@layer_handler("SLICE", "ISliceLayer")
def run_slice(layer: Any, inputs: Inputs) -> torch.Tensor:
    """ISliceLayer: start/size/stride (static or from inputs 1-3) over all dims or ``axes``
    (input 5), with STRICT_BOUNDS, WRAP, CLAMP, FILL (value from input 4, else 0) and REFLECT."""
    x = inputs[0]

    def param(index: int, static: Any) -> tuple[int, ...]:
        t = optional_input(inputs, index)
        return shape_values(t) if t is not None else dims(static)

    start, size, stride = param(1, layer.start), param(2, layer.shape), param(3, layer.stride)
    axes_input = optional_input(inputs, 5)
    if axes_input is not None:
        axes: Sequence[int] = [a % x.dim() for a in shape_values(axes_input)]
    else:
        axes = [a % x.dim() for a in dims(layer.axes)] if layer.axes is not None else range(x.dim())
    mode = layer.mode.name
    out, fill_mask = x, None
    for axis, st, sz, sd in zip(axes, start, size, stride):
        idx, inside = _slice_indices(mode, st, sz, sd, x.shape[axis], x.device)
        if mode == "STRICT_BOUNDS" and sz > 0:
            last = st + (sz - 1) * sd
            require(
                0 <= st < x.shape[axis] and 0 <= last < x.shape[axis],
                layer,
                f"slice {st}:{last}:{sd} is out of bounds of dim {axis} (size {x.shape[axis]})",
            )
        out = out.index_select(axis, idx)
        if inside is not None:
            shape = [1] * x.dim()
            shape[axis] = -1
            mask = inside.reshape(shape)
            fill_mask = mask if fill_mask is None else fill_mask & mask
    if fill_mask is not None:
        value = optional_input(inputs, 4)
        fill = (
            value.reshape(()).to(out.dtype)
            if value is not None
            else torch.zeros((), dtype=out.dtype, device=out.device)
        )
        out = torch.where(fill_mask, out, fill)
    return out


# ----------------------------------------------------------------------------------------- gather


@layer_handler("GATHER", "IGatherLayer")
def run_gather(layer: Any, inputs: Inputs) -> torch.Tensor:
    """IGatherLayer: DEFAULT (with 0 or 1 element-wise dims), ELEMENT and ND; negative indices wrap."""
    data, indices = inputs[0], inputs[1].long()
    axis, mode, batch = int(layer.axis), layer.mode.name, int(layer.num_elementwise_dims)
    if mode == "ELEMENT":
        return torch.gather(data, axis, torch.where(indices < 0, indices + data.shape[axis], indices))
    if mode == "ND":
        return _gather_nd(data, indices, batch)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    if batch == 0:
        return _gather_default(data, indices, axis)
    require(batch == 1, layer, f"num_elementwise_dims={batch} is not supported in DEFAULT mode")
    # The leading dim is shared by data and indices: gather each batch item separately.
    return torch.stack([_gather_default(data[b], indices[b], axis - 1) for b in range(data.shape[0])])


def _gather_default(data: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Gather: output dims are data[:axis] + indices + data[axis + 1:]."""
    picked = data.index_select(axis, indices.reshape(-1))
    return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :])


def _gather_nd(data: torch.Tensor, indices: torch.Tensor, batch: int) -> torch.Tensor:
    """ONNX GatherND semantics with ``batch`` leading batch dims."""
    k = indices.shape[-1]
    batch_shape = data.shape[:batch]
    n = int(torch.tensor(batch_shape).prod()) if batch else 1
    flat_data = data.reshape(n, *data.shape[batch:])
    flat_idx = indices.reshape(n, -1, k)
    flat_idx = torch.where(
        flat_idx < 0, flat_idx + torch.tensor(data.shape[batch : batch + k], device=data.device), flat_idx
    )
    rows = torch.arange(n, device=data.device)[:, None].expand(n, flat_idx.shape[1])
    picked = flat_data[(rows, *flat_idx.unbind(-1))]
    return picked.reshape(*batch_shape, *indices.shape[batch:-1], *data.shape[batch + k :])


# ------------------------------------------------------------------------------------- reductions
