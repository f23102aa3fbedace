"""Typed builders for shape work: sizes, reshape, (un)squeeze, permute and slicing, dynamic-shape safe.

A dimension is a Python ``int`` when TensorRT knows it at build time and a 1-element int64 ITensor
(gathered from an IShapeLayer) when it is dynamic (``-1`` in ``ITensor.shape``). Builders take lists mixing
both, so ``x.view(x.size(0), -1)`` works with a dynamic batch: all-static targets become ``reshape_dims``,
anything else a shape tensor fed to ``IShuffleLayer`` input 1.

Example:
    >>> from fx2trt_pipeline.network.shape_builders import flatten_dims
    >>> flatten_dims((-1, 64, 7, 7), 1, -1)
    [-1, 3136]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.context import ConversionContext, ITensor

Dim = Union[int, ITensor]


def rank(x: ITensor) -> int:
    """Number of dimensions of an ITensor."""
    return len(x.shape)


def dims_of(x: ITensor) -> tuple[int, ...]:
    """Build-time dimensions of an ITensor, ``-1`` where dynamic."""
    return tuple(int(d) for d in x.shape)


def normalize_dim(dim: int, ndim: int, name: str) -> int:
    """``dim`` in ``[0, ndim)`` (negative dims count from the end) or a ConversionError."""
    if not -ndim <= dim < max(ndim, 1):
        raise ConversionError(f"{name}: dimension {dim} out of range for a rank-{ndim} tensor")
    return dim % ndim if ndim else 0


def shape_of(ctx: ConversionContext, name: str, x: ITensor) -> ITensor:
    """The 1-d int64 shape tensor of ``x`` (an IShapeLayer named ``<name>.shape``)."""
    return ctx.add(ctx.network.add_shape(x), ctx.name(name, "shape")).get_output(0)


def dim_size(ctx: ConversionContext, name: str, x: ITensor, dim: int) -> Dim:
    """Size of ``x`` along ``dim``: an int when static, else a 1-element int64 ITensor.

    One element rather than 0-d so it concatenates straight into shape vectors.
    """
    dim = normalize_dim(dim, rank(x), name)
    size = dims_of(x)[dim]
    if size >= 0:
        return size
    index = ctx.constant(np.array([dim], dtype=np.int64), ctx.name(name, f"dim{dim}_index"))
    gather = ctx.network.add_gather(shape_of(ctx, ctx.name(name, f"dim{dim}"), x), index, 0)
    return ctx.add(gather, ctx.name(name, f"dim{dim}")).get_output(0)


def sizes(ctx: ConversionContext, name: str, x: ITensor) -> list[Dim]:
    """All sizes of ``x`` (ints where static, 1-element ITensors where dynamic)."""
    return [dim_size(ctx, name, x, i) for i in range(rank(x))]


def shape_vector(ctx: ConversionContext, name: str, parts: Sequence[Dim]) -> ITensor:
    """A 1-d int64 shape tensor from ints and 0-d/1-d int ITensors (``<name>.shape_vector``)."""
    pieces: list[ITensor] = []
    pending: list[int] = []

    def flush() -> None:
        if pending:
            pieces.append(ctx.constant(np.array(pending, dtype=np.int64), ctx.name(name, f"dims{len(pieces)}")))
            pending.clear()

    for part in parts:
        if isinstance(part, (int, np.integer)):
            pending.append(int(part))
            continue
        flush()
        if rank(part) == 0:
            part = unsqueeze(ctx, ctx.name(name, f"dims{len(pieces)}"), part, [0])
        if part.dtype != ctx.trt.int64:
            part = ctx.add(
                ctx.network.add_cast(part, ctx.trt.int64), ctx.name(name, f"dims{len(pieces)}_i64")
            ).get_output(0)
        pieces.append(part)
    flush()
    if len(pieces) == 1:
        return pieces[0]
    return ctx.add(ctx.network.add_concatenation(pieces), ctx.name(name, "shape_vector")).get_output(0)


def reshape(ctx: ConversionContext, name: str, x: ITensor, target: Sequence[Dim]) -> ITensor:
    """``x.reshape(target)``; ``target`` may hold one ``-1`` and dynamic (ITensor) sizes."""
    layer = ctx.network.add_shuffle(x)
    if layer is None:
        return ctx.add(layer, name, "reshape")
    layer.zero_is_placeholder = False  # torch reads 0 as a real zero-sized dim, not "copy"
    if all(isinstance(d, (int, np.integer)) for d in target):
        layer.reshape_dims = tuple(int(d) for d in target)
    else:
        layer.set_input(1, shape_vector(ctx, name, target))
    return ctx.add(layer, name, "reshape").get_output(0)


def flatten_dims(shape: Sequence[int], start: int, end: int) -> list[int]:
    """Static reshape target of ``flatten(start, end)`` when only the flattened span may be dynamic."""
    ndim = len(shape)
    start, end = start % ndim if ndim else 0, end % ndim if ndim else 0
    span = shape[start : end + 1]
    merged = -1 if any(d < 0 for d in span) else int(np.prod(span, dtype=np.int64))
    return [*shape[:start], merged, *shape[end + 1 :]]


def flatten(ctx: ConversionContext, name: str, x: ITensor, start: int = 0, end: int = -1) -> ITensor:
    """``torch.flatten(x, start, end)`` with static or dynamic dims outside the flattened span."""
    ndim = rank(x)
    if ndim == 0:
        return reshape(ctx, name, x, [1])
    start, end = normalize_dim(start, ndim, name), normalize_dim(end, ndim, name)
    if start > end:
        raise ConversionError(f"{name}: flatten start_dim {start} > end_dim {end}")
    shape = dims_of(x)
    outside = [*shape[:start], *shape[end + 1 :]]
    if all(d >= 0 for d in outside):
        target: list[Dim] = flatten_dims(shape, start, end)
    else:
        span = shape[start : end + 1]
        merged: Dim = -1 if any(d < 0 for d in span) else int(np.prod(span, dtype=np.int64))
        target = [
            *(dim_size(ctx, name, x, i) for i in range(start)),
            merged,
            *(dim_size(ctx, name, x, i) for i in range(end + 1, ndim)),
        ]
    return reshape(ctx, name, x, target)


def unsqueeze(ctx: ConversionContext, name: str, x: ITensor, axes: Sequence[int]) -> ITensor:
    """Insert size-1 dims at ``axes`` (positions in the output) with an IUnsqueezeLayer."""
    out_rank = rank(x) + len(axes)
    axes_np = np.array(sorted(normalize_dim(a, out_rank, name) for a in axes), dtype=np.int64)
    axes_t = ctx.constant(axes_np, ctx.name(name, "axes"))
    return ctx.add(ctx.network.add_unsqueeze(x, axes_t), name, "unsqueeze").get_output(0)


def squeeze(ctx: ConversionContext, name: str, x: ITensor, axes: Sequence[int]) -> ITensor:
    """Remove the size-1 dims ``axes`` with an ISqueezeLayer."""
    axes_np = np.array(sorted(normalize_dim(a, rank(x), name) for a in axes), dtype=np.int64)
    axes_t = ctx.constant(axes_np, ctx.name(name, "axes"))
    return ctx.add(ctx.network.add_squeeze(x, axes_t), name, "squeeze").get_output(0)


def permute(ctx: ConversionContext, name: str, x: ITensor, perm: Sequence[int]) -> ITensor:
    """``x.permute(perm)`` as an IShuffleLayer transpose."""
    ndim = rank(x)
    perm = [normalize_dim(p, ndim, name) for p in perm]
    if sorted(perm) != list(range(ndim)):
        raise ConversionError(f"{name}: {perm} is not a permutation of {ndim} dims")
    layer = ctx.network.add_shuffle(x)
    if layer is not None:
        layer.first_transpose = tuple(perm)
    return ctx.add(layer, name, "permute").get_output(0)


def expand_rank(ctx: ConversionContext, name: str, x: ITensor, target_rank: int) -> ITensor:
    """Prepend size-1 dims so ``x`` has ``target_rank`` dims (numpy broadcasting alignment)."""
    missing = target_rank - rank(x)
    return x if missing <= 0 else unsqueeze(ctx, name, x, list(range(missing)))


def slice_tensor(
    ctx: ConversionContext,
    name: str,
    x: ITensor,
    starts: Sequence[int],
    lengths: Sequence[Dim],
    steps: Sequence[int],
) -> ITensor:
    """An ISliceLayer; ``lengths`` may contain dynamic (ITensor) sizes."""
    static = all(isinstance(n, (int, np.integer)) for n in lengths)
    layer = ctx.network.add_slice(x, tuple(starts), tuple(int(n) if static else 1 for n in lengths), tuple(steps))
    if layer is not None and not static:
        layer.set_input(2, shape_vector(ctx, name, lengths))
    return ctx.add(layer, name, "slice").get_output(0)


def python_slice(index: slice, size: int) -> tuple[int, int, int]:
    """``(start, length, step)`` of ``index`` on a static dim of ``size``."""
    start, stop, step = index.indices(size)
    if step <= 0:
        raise ConversionError("negative slice steps are not supported (torch does not allow them either)")
    return start, max(0, (stop - start + step - 1) // step), step


def is_full_slice(index: Any) -> bool:
    """True for ``:`` (no start, stop or step)."""
    return isinstance(index, slice) and index.start is None and index.stop is None and index.step in (None, 1)


def index_tensor(ctx: ConversionContext, name: str, x: ITensor, index: Any) -> ITensor:
    """``x[index]`` for ints, slices, ``None`` and ``Ellipsis`` (basic indexing, no tensor indices)."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items):
        raise ConversionError(f"{name}: only int / slice / None / ... indices are supported, got {index!r}")
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    if items.count(Ellipsis) > 1:
        raise ConversionError(f"{name}: an index can hold at most one Ellipsis")
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * max(0, rank(x) - used)
    return _apply_index(ctx, name, x, items)


def _index_window(ctx: ConversionContext, name: str, x: ITensor, dim: int, item: int | slice) -> tuple[int, Dim, int]:
    """``(start, length, step)`` that an int or slice selects on ``dim`` of ``x``."""
    size = dims_of(x)[dim]
    if isinstance(item, int):
        if size < 0 and item < 0:
            raise ConversionError(f"{name}: negative index {item} on dynamic dim {dim}")
        if size >= 0 and not -size <= item < size:
            raise ConversionError(f"{name}: index {item} out of range for dim {dim} of size {size}")
        return (item if size < 0 else item % size), 1, 1
    if is_full_slice(item):
        return 0, (size if size >= 0 else dim_size(ctx, name, x, dim)), 1
    if size < 0:
        raise ConversionError(f"{name}: slicing dynamic dim {dim} with {item} is not supported")
    return python_slice(item, size)


def _apply_index(ctx: ConversionContext, name: str, x: ITensor, items: list[Any]) -> ITensor:
    shape = dims_of(x)
    windows: list[tuple[int, Dim, int]] = []
    drop: list[int] = []  # dims indexed by an int
    new_axes: list[int] = []  # output positions of None
    out_pos = 0
    for item in items:
        if item is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        dim = len(windows)
        if dim >= len(shape):
            raise ConversionError(f"{name}: too many indices for a rank-{len(shape)} tensor")
        windows.append(_index_window(ctx, name, x, dim, item))
        if isinstance(item, int):
            drop.append(dim)
        else:
            out_pos += 1
    # trailing dims not named by the index are kept whole
    windows += [_index_window(ctx, name, x, dim, slice(None)) for dim in range(len(windows), len(shape))]
    starts, lengths, steps = (list(v) for v in zip(*windows)) if windows else ([], [], [])
    trivial = (
        all(s == 0 for s in starts)
        and all(st == 1 for st in steps)
        and all(isinstance(n, int) and n == d for n, d in zip(lengths, shape))
    )
    out = (
        x
        if trivial
        else slice_tensor(ctx, ctx.name(name, "slice") if (drop or new_axes) else name, x, starts, lengths, steps)
    )
    if drop:
        out = squeeze(ctx, ctx.name(name, "squeeze") if new_axes else name, out, drop)
    if new_axes:
        out = unsqueeze(ctx, name, out, new_axes)
    if out is x:
        out = ctx.add(ctx.network.add_identity(x), name, "identity").get_output(0)
    return out
