"""onnx2torch's shape and indexing modules lowered to torch ops with Python arguments.

Reshape -> ``torch.reshape``, Expand -> ``Tensor.expand``, Split -> ``torch.split``, Concat -> ``torch.cat``,
Gather / Slice -> indexing (``x[:, 1:3]``), Transpose -> ``torch.permute``, Unsqueeze / Squeeze / Flatten ->
their torch functions. Shapes come from the example run (:mod:`.static_values`); a dim that follows the
batch size stays dynamic (``-1`` in a reshape or expand, a full slice), so a dynamic-batch engine can be built
from a graph exported with a dynamic batch axis.

Example:
    >>> "OnnxReshape" in LOWERINGS and "OnnxSlice" in LOWERINGS
    True
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.capture.graph_rebuild import NotLowered, Rebuild
from fx2trt_pipeline.capture.onnx2torch_ops import LOWERINGS, lowers


def _batch_entry(rb: Rebuild, x: Any, entries: list[int | None], values: list[int]) -> list[Any]:
    """Fill the reshape / expand entries that follow the batch (``None``): ``-1`` when it is the only unknown,
    else ``x.size(0)`` where the entry equals the batch size and ``x``'s first dim is the batch."""
    unknown = [i for i, e in enumerate(entries) if e is None]
    if len(unknown) == 1 and -1 not in entries:
        return [-1 if e is None else e for e in entries]
    batch = rb.rec.batch[0] if rb.rec.batch else None
    if not rb.rec.batch_dims(x)[:1] == [True] or any(values[i] != batch for i in unknown):
        raise NotLowered("several of its target sizes change with the batch size")
    size = rb.method("size", rb.new(x), 0)
    return [size if e is None else e for e in entries]


@lowers("OnnxReshape")
def lower_reshape(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Reshape -> ``torch.reshape`` (ONNX's ``0`` copies the input dim, as onnx2torch does)."""
    x, shape = args["input_tensor"], args["shape"]
    one, two = rb.ints_by_batch(shape, "target shape")
    in1, in2 = rb.shape(x), rb.shape2(x)
    entries: list[int | None] = []
    values = []
    for i, (a, b) in enumerate(zip(one, two)):
        if a == 0 and b == 0:
            a, b = in1[i], in2[i]
        entries.append(a if a == b else None)
        values.append(a)
    if None in entries:
        entries = _batch_entry(rb, x, entries, values)
    return rb.call(torch.reshape, rb.new(x), tuple(entries), name=node.name)


@lowers("OnnxExpand")
def lower_expand(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Expand (two-way broadcast of the input and the shape) -> ``Tensor.expand``, or nothing when it is a no-op."""
    x, shape = args["input_tensor"], args["shape"]
    one, two = rb.ints_by_batch(shape, "target shape")
    in1, in2 = rb.shape(x), rb.shape2(x)
    out1, out2 = tuple(torch.broadcast_shapes(in1, one)), tuple(torch.broadcast_shapes(in2, two))
    if out1 == in1 and out2 == in2:
        return rb.new(x)
    lead = len(out1) - len(in1)
    sizes: list[int] = []
    for j, (a, b) in enumerate(zip(out1, out2)):
        i = j - lead
        if i >= 0 and in1[i] == a and in2[i] == b:
            sizes.append(-1)
        elif a == b:
            sizes.append(a)
        else:
            raise NotLowered("it broadcasts a size-1 dim to the batch size")
    return rb.method("expand", rb.new(x), *sizes, name=node.name)


@lowers("OnnxSplit13", "OnnxSplit")
def lower_split(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Split -> ``torch.split`` with Python sizes (the pieces are read with ``getitem`` as before)."""
    x = args["input_tensor"]
    sections = args.get("split") if type(module).__name__ == "OnnxSplit13" else module.split
    if sections is not None:
        sizes: Any = rb.ints(sections, "split sizes")
    else:
        if rb.rec.batch_dims(x)[module.axis]:
            raise NotLowered("it splits the batch dim")
        sizes = rb.shape(x)[module.axis] // module.num_splits
    return rb.call(torch.split, rb.new(x), sizes, module.axis, name=node.name)


@lowers("OnnxConcat")
def lower_concat(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Concat -> ``torch.cat`` (constant inputs as folded constants)."""
    inputs = [rb.tensor_operand(t) for t in args["input_tensors"]]
    return rb.call(torch.cat, inputs, module.axis, name=node.name)


def _full(rank: int, axis: int, index: Any) -> tuple[Any, ...]:
    return (slice(None),) * axis + (index,) + (slice(None),) * (rank - axis - 1)


@lowers("OnnxGather")
def lower_gather(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Gather with static indices -> ``x[..., i]`` (a scalar index) or ``x[..., a:b:s]`` (evenly spaced ones)."""
    x, indices = args["input_tensor"], args["indices"]
    rank = len(rb.shape(x))
    axis = module._axis % rank
    if rb.rec.batch_dims(x)[axis]:
        raise NotLowered("it gathers along the batch dim")
    size = rb.shape(x)[axis]
    value = rb.static(indices, "indices")
    picked = [int(i) % size for i in value.reshape(-1).tolist()]
    if value.dim() == 0:
        return rb.call(operator.getitem, rb.new(x), _full(rank, axis, picked[0]), name=node.name)
    step = picked[1] - picked[0] if len(picked) > 1 else 1
    if value.dim() != 1 or step <= 0 or picked != list(range(picked[0], picked[0] + step * len(picked), step)):
        raise NotLowered("only a scalar index or evenly spaced increasing indices are lowered")
    index = slice(picked[0], picked[-1] + 1, step)
    return rb.call(operator.getitem, rb.new(x), _full(rank, axis, index), name=node.name)


@lowers("OnnxSlice")
def lower_slice(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Slice with static starts / ends / axes / positive steps -> ``x[a:b:s, ...]``."""
    x = args["input_tensor"]
    shape, follows = rb.shape(x), rb.rec.batch_dims(x)
    starts, ends = rb.ints(args["starts"], "starts"), rb.ints(args["ends"], "ends")
    axes = rb.ints(args["axes"], "axes") if args.get("axes") is not None else list(range(len(starts)))
    steps = rb.ints(args["steps"], "steps") if args.get("steps") is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= len(shape)
        if step <= 0:
            raise NotLowered("negative slice steps (flips) are not lowered")
        picked = range(shape[axis])[slice(start, end, step)]
        if follows[axis]:
            if (picked.start, picked.stop, step) != (0, shape[axis], 1):
                raise NotLowered("it slices part of the batch dim")
            continue
        if (picked.start, picked.stop, step) != (0, shape[axis], 1):
            index[axis] = slice(picked.start, max(picked.start, picked.stop), step)
    return rb.call(operator.getitem, rb.new(x), tuple(index), name=node.name)


@lowers("OnnxTranspose")
def lower_transpose(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Transpose -> ``torch.permute`` (no ``perm``: the dims reversed)."""
    x = args["input_tensor"]
    perm = list(module.perm) if module.perm is not None else list(range(len(rb.shape(x))))[::-1]
    return rb.call(torch.permute, rb.new(x), tuple(int(p) for p in perm), name=node.name)


def _chain(rb: Rebuild, node: Node, fn: Any, x: Any, dims: list[int]) -> Any:
    out = rb.new(x)
    if not dims:
        return out
    for i, dim in enumerate(dims):
        out = rb.call(fn, out, dim, name=node.name if i == len(dims) - 1 else f"{node.name}_{i}")
    return out


@lowers("OnnxUnsqueezeStaticAxes", "OnnxUnsqueezeDynamicAxes")
def lower_unsqueeze(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Unsqueeze -> ``torch.unsqueeze`` once per axis, in ascending order as onnx2torch applies them."""
    axes = module._axes if "Static" in type(module).__name__ else sorted(rb.ints(args["axes"], "axes"))
    return _chain(rb, node, torch.unsqueeze, args["input_tensor"], [int(a) for a in axes])


@lowers("OnnxSqueezeStaticAxes", "OnnxSqueezeDynamicAxes")
def lower_squeeze(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Squeeze -> ``torch.squeeze`` per axis (descending); no axes: every size-1 dim that is not the batch."""
    x = args["input_tensor"]
    if "Static" in type(module).__name__:
        axes = list(module.axes or [])
    else:
        given = args.get("axes")
        axes = sorted(rb.ints(given, "axes"), reverse=True) if given is not None and rb.static_numel(given) else []
    if not axes:
        follows = rb.rec.batch_dims(x)
        axes = [i for i, d in reversed(list(enumerate(rb.shape(x)))) if d == 1 and not follows[i]]
    return _chain(rb, node, torch.squeeze, x, [int(a) for a in axes])


@lowers("OnnxFlatten")
def lower_flatten(rb: Rebuild, node: Node, module: nn.Module, args: dict[str, Any]) -> Any:
    """Flatten(axis) -> ``torch.flatten`` of the dims before ``axis``, then of those after it."""
    inner = rb.call(torch.flatten, rb.new(args["x"]), 0, module.axis - 1, name=f"{node.name}_outer")
    return rb.call(torch.flatten, inner, 1, name=node.name)


__all__ = ["LOWERINGS"]
