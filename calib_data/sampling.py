"""Deterministic calibration batches from any map-style dataset."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from tqdm.auto import tqdm

from fx2trt_pipeline.errors import CalibrationError


def calibration_batches(
    dataset: Any,
    num_samples: int | None,
    batch_size: int,
    seed: int = 0,
    show_progress: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield float32 batches of ``num_samples`` items drawn deterministically from ``dataset``.

    The same ``(dataset, num_samples, seed)`` always selects the same items in the same order,
    so two calibrations (or the shards of one) are reproducible. An item may be a tensor or a
    tuple whose first element is the input (e.g. ``(image, image_id)``); the rest is dropped.
    The last batch may be smaller.

    Args:
        dataset: Any object with ``__len__`` and ``__getitem__``.
        num_samples: How many items to use; ``None`` uses all of them in dataset order.
        batch_size: Items per yielded batch.
        seed: Seed of the random subset.
        show_progress: Show a tqdm bar (one step per batch).

    Yields:
        ``(B, ...)`` float32 tensors.

    Raises:
        CalibrationError: empty dataset, ``num_samples`` larger than the dataset, items of
            different shapes, or items with NaN/Inf (names the offending item index).

    Example:
        >>> import numpy as np
        >>> from fx2trt_pipeline.calib_data import NumpyDataset
        >>> ds = NumpyDataset(np.zeros((10, 3, 8, 8), np.float32))
        >>> [b.shape[0] for b in calibration_batches(ds, 5, batch_size=2, show_progress=False)]
        [2, 2, 1]
    """
    if not isinstance(dataset, Sized) or len(dataset) == 0:
        raise CalibrationError(f"Calibration dataset {type(dataset).__name__} is empty.")
    n = len(dataset)
    if batch_size <= 0:
        raise CalibrationError(f"batch_size must be positive, got {batch_size}.")
    if num_samples is None:
        indices = list(range(n))
    elif not 0 < num_samples <= n:
        raise CalibrationError(
            f"num_samples={num_samples} but the calibration dataset has {n} items; "
            f"pass num_samples between 1 and {n} (or None for all)."
        )
    else:
        # randperm on a private generator: never touches (or depends on) the global RNG state
        g = torch.Generator().manual_seed(seed)
        indices = torch.randperm(n, generator=g)[:num_samples].tolist()
    num_batches = (len(indices) + batch_size - 1) // batch_size
    with tqdm(total=num_batches, desc="calibration", unit="batch", disable=not show_progress) as bar:
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            yield _stack([_as_input(dataset[i], i) for i in chunk], chunk)
            bar.update(1)


def _as_input(item: Any, index: int) -> torch.Tensor:
    if isinstance(item, (tuple, list)):
        item = item[0]
    if not isinstance(item, torch.Tensor):
        try:
            item = torch.as_tensor(item)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CalibrationError(f"Calibration item {index} is a {type(item).__name__}, not a tensor.") from exc
    item = item.float()
    if not torch.isfinite(item).all():
        raise CalibrationError(f"Calibration item {index} contains NaN or Inf; fix or drop it.")
    return item


def _stack(items: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
    shape = items[0].shape
    for x, i in zip(items, indices):
        if x.shape != shape:
            raise CalibrationError(
                f"Calibration item {i} has shape {tuple(x.shape)} but item {indices[0]} has {tuple(shape)}; "
                "give the PreprocessSpec a fixed size so items can be batched."
            )
    return torch.stack(items)
