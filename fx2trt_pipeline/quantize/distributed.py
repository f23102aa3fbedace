"""Merge per-rank calibration statistics exactly with torch.distributed collectives.

Each rank calibrates its shard of the data; :func:`all_reduce_stats` then gives every rank the
statistics of all shards, bit for bit what one process would have collected from all the data::

    check names (all_gather_object) -> MAX [log2 width, amax] -> rebin locally -> SUM [hist, count]

Three collectives in all, whatever the number of observers (each step packs every observer
into one tensor). Works with gloo (CPU tensors) and NCCL (tensors on the current CUDA device).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.distributed as dist

from fx2trt_pipeline.errors import CalibrationError
from fx2trt_pipeline.quantize.statistics import STATS_FORMAT, TensorStats, rebin


def all_reduce_stats(
    stats: Mapping[str, TensorStats], group: dist.ProcessGroup | None = None
) -> dict[str, TensorStats]:
    """The statistics of every rank merged, identical on all ranks of ``group``.

    Collective: every rank of ``group`` must call it with the same names and ``num_bins``.
    The inputs are not modified; the results are new objects whose counts live on the device
    of the corresponding input (CPU for names a rank never observed).

    Args:
        stats: this rank's statistics by observer / scale-group name.
        group: the process group (default: the world).

    Returns:
        ``{name: merged TensorStats}``, equal to the statistics of all ranks' data together.

    Raises:
        CalibrationError: torch.distributed is not initialised, or the ranks disagree on the
            names or bin counts (raised on every rank, so none is left waiting).

    Example (run on every rank after ``dist.init_process_group("gloo", ...)``)::

        stats = calibrate_my_shard(model, shard)          # {name: TensorStats}
        stats = all_reduce_stats(stats)                   # same result on every rank
        amax = {k: compute_amax(s, "entropy") for k, s in stats.items()}
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise CalibrationError(
            "all_reduce_stats needs torch.distributed: call torch.distributed.init_process_group(...) "
            "on every rank first, or merge statistics in one process with TensorStats.merge."
        )
    names = sorted(stats)
    _check_same_layout(stats, names, group)
    if not names:
        return {}
    device = _collective_device(group)
    widths, amaxes = _common_width_and_amax(stats, names, device, group)
    pieces = _summed_counts(stats, names, widths, device, group)
    return {k: _merged(stats[k], piece, width, amax) for k, piece, width, amax in zip(names, pieces, widths, amaxes)}


def _common_width_and_amax(
    stats: Mapping[str, TensorStats], names: list[str], device: torch.device, group: dist.ProcessGroup | None
) -> tuple[list[float], list[float]]:
    """Step 1 (MAX): the common width is the coarsest one (widths follow amax, so it fits the max amax).

    float64 holds the small integer exponents exactly; -inf marks "no data on this rank".
    """
    rows_meta = [[_width_or_inf(stats[k]), stats[k].amax] for k in names]
    meta = torch.tensor(rows_meta, dtype=torch.float64, device=device)
    dist.all_reduce(meta, op=dist.ReduceOp.MAX, group=group)
    return meta[:, 0].tolist(), meta[:, 1].tolist()


def _summed_counts(
    stats: Mapping[str, TensorStats],
    names: list[str],
    widths: list[float],
    device: torch.device,
    group: dist.ProcessGroup | None,
) -> list[torch.Tensor]:
    """Step 2 (SUM): every local histogram coarsened to the common width, counts added across ranks.

    Observers may differ in num_bins, so all ``[hist..., count]`` rows go into one flat tensor; the
    result is split back into one row per name.
    """
    rows = []
    for k, width in zip(names, widths):
        s = stats[k]
        hist = s.hist  # CPU copy
        if s.log2_width is not None:
            hist = rebin(hist, int(width) - s.log2_width)
        rows.append(torch.cat((hist, torch.tensor([s.count], dtype=torch.int64))))
    summed = torch.cat(rows).to(device)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=group)
    return list(summed.cpu().split([row.numel() for row in rows]))


def _merged(local: TensorStats, piece: torch.Tensor, width: float, amax: float) -> TensorStats:
    """The merged statistics from a summed ``[hist..., count]`` row, on the device of ``local``."""
    count = int(piece[-1])
    record = {
        "format": STATS_FORMAT,
        "num_bins": local.num_bins,
        "log2_width": None if count == 0 else int(width),
        "amax": amax,
        "count": count,
        "hist": piece[:-1].tolist(),
    }
    # from_dict re-checks the invariants (counts sum, width fits amax) of the merged state.
    return TensorStats.from_dict(record, device=local.device)


def _width_or_inf(s: TensorStats) -> float:
    return -math.inf if s.log2_width is None else float(s.log2_width)


def _check_same_layout(stats: Mapping[str, TensorStats], names: list[str], group: dist.ProcessGroup | None) -> None:
    layout = [(k, stats[k].num_bins) for k in names]
    gathered: list[list[tuple[str, int]] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, layout, group=group)
    reference = dict(gathered[0] or [])
    problems = []
    for rank, other in enumerate(gathered[1:], start=1):
        theirs = dict(other or [])
        missing, extra = sorted(set(reference) - set(theirs)), sorted(set(theirs) - set(reference))
        if missing:
            problems.append(f"rank {rank} lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            problems.append(f"rank {rank} has extra {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        bins = sorted(k for k in set(reference) & set(theirs) if reference[k] != theirs[k])
        if bins:
            problems.append(f"rank {rank} uses other num_bins for {bins[:5]}")
    if problems:
        raise CalibrationError(
            "all_reduce_stats: the ranks' statistics do not line up (compared with rank 0): "
            + "; ".join(problems)
            + ". Every rank must observe the same prepared model with the same TensorStats(num_bins)."
        )


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    if dist.get_backend(group) == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
