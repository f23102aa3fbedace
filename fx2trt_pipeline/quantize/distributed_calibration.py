"""Calibrate on several processes: each rank observes its shard, the statistics are merged exactly.

::

    rank r: prepare(model) -> observe shard r (fresh statistics) --+
                                                                   +-> all_reduce_stats -> add to the
    rank s: prepare(model) -> observe shard s (fresh statistics) --+    prepared model's statistics
                                                                        (identical on every rank)

Because the statistics merge exactly (power-of-two |x| histograms, see ``statistics.py``), every rank
ends with the statistics one process would have collected from the union of the shards, and
:func:`fx2trt_pipeline.network` derives bit-identical scales on every rank, for every calibrator.

Under ``torchrun`` (one process per GPU, or several CPU processes with gloo)::

    # calibrate.py  --  torchrun --nproc-per-node 4 calibrate.py
    import torch.distributed as dist
    import fx2trt_pipeline as ftp
    from fx2trt_pipeline.quantize.distributed_calibration import calibrate_distributed, shard_for_rank

    dist.init_process_group("nccl")            # "gloo" on CPU; torchrun sets RANK / WORLD_SIZE
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    prepared = ftp.prepare(model.cuda(), (example.cuda(),), ftp.QuantConfig(calibrator="entropy"))
    calibrate_distributed(prepared, shard_for_rank(all_batches))
    qgm = ftp.convert(prepared)                # same scales on every rank
    if dist.get_rank() == 0:
        ftp.save_quant_state(qgm, "model.quant.json")
    dist.destroy_process_group()
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.fx import GraphModule

from fx2trt_pipeline.errors import CalibrationError, ConfigError
from fx2trt_pipeline.quantize.api import PreparedInfo, prepared_info
from fx2trt_pipeline.quantize.bias_correction import ChannelMeanObserver
from fx2trt_pipeline.quantize.distributed import all_reduce_stats
from fx2trt_pipeline.quantize.observe import StatsObserver, iterate_batches
from fx2trt_pipeline.quantize.statistics import TensorStats

T = TypeVar("T")


def shard_for_rank(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """Every ``world_size``-th item starting at ``rank`` (defaults: this process's rank and world size).

    Round-robin keeps the shards within one item of each other in size; the union of all shards is
    ``items``, each item exactly once.

    Example:
        >>> shard_for_rank(list(range(7)), rank=1, world_size=3)
        [1, 4]
    """
    if rank is None or world_size is None:
        if not (dist.is_available() and dist.is_initialized()):
            raise CalibrationError(
                "shard_for_rank needs rank and world_size, or an initialised torch.distributed "
                "process group (torchrun sets one up with dist.init_process_group())."
            )
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"shard_for_rank: rank {rank} is not in [0, world_size={world_size})")
    return list(items[rank::world_size])


def _observers_by_group(prepared: GraphModule, info: PreparedInfo) -> dict[str, list[StatsObserver]]:
    # Observers of one scale group share one TensorStats object; identity maps them back to the group.
    group_of = {id(stats): key for key, stats in info.stats.items()}
    out: dict[str, list[StatsObserver]] = {key: [] for key in info.stats}
    for module in prepared.modules():
        if isinstance(module, StatsObserver) and id(module.stats) in group_of:
            out[group_of[id(module.stats)]].append(module)
    return out


def _point_observers(observers: dict[str, list[StatsObserver]], stats: dict[str, TensorStats]) -> None:
    for key, modules in observers.items():
        for module in modules:
            module.stats = stats[key]


def _observe_shard(prepared: GraphModule, batches: Iterable[Any], show_progress: bool) -> int:
    device = next((p.device for p in prepared.parameters()), torch.device("cpu"))
    seen = 0
    with torch.no_grad():
        for args in iterate_batches(batches, device, show_progress, desc="calibrating shard"):
            if len(args) == 1 and isinstance(args[0], dict):
                prepared(**args[0])
            else:
                prepared(*args)
            seen += 1
    return seen


def calibrate_distributed(
    prepared: GraphModule,
    shard_batches: Iterable[Any],
    group: dist.ProcessGroup | None = None,
    show_progress: bool | None = None,
) -> GraphModule:
    """Calibrate this rank's shard, then merge every rank's statistics exactly; returns ``prepared``.

    Collective: every rank of ``group`` calls it with the same prepared model (same architecture,
    weights and config) and its own shard. A rank may get no batches at all. Afterwards every rank
    holds the statistics of all shards together, so :func:`fx2trt_pipeline.network` gives identical
    scales everywhere. Calling it again adds more data exactly, like :func:`fx2trt_pipeline.calibrate`.
    With ``bias_correction`` the per-channel input means are summed over the ranks too (float64 sums:
    identical on every rank, equal to one process's up to the order of the additions).

    Args:
        prepared: the module returned by :func:`fx2trt_pipeline.prepare` on this rank.
        shard_batches: this rank's calibration batches (see :func:`shard_for_rank`).
        group: process group (default: the world).
        show_progress: tqdm bar (default: the prepared config's ``show_progress``).

    Returns:
        ``prepared``, its statistics now those of every rank's data.

    Raises:
        CalibrationError: torch.distributed is not initialised; a rank failed during its shard (every
            rank raises, naming it, so none waits forever); the shards held no batch at all; or a
            scale group saw no data on any rank. The statistics are unchanged in these cases.
        ConfigError: ``prepared`` is not a prepared module, or its config fits on calibration data kept by
            one process (``adaround``, ``calibrator="auto_per_group"``), which ranks cannot merge.

    Example (on every rank, after ``dist.init_process_group``)::

        prepared = ftp.prepare(model, (example,))
        calibrate_distributed(prepared, shard_for_rank(batches))
        qgm = ftp.convert(prepared)
    """
    info = prepared_info(prepared)
    _refuse_data_kept_on_one_rank(info)
    _require_distributed()
    observers = _observers_by_group(prepared, info)
    means_before = _snapshot(info.means)
    # Fresh statistics for this pass: merging the ranks' *new* data only, then adding it to what the
    # model already holds, keeps repeated calls exact (old data is never counted once per rank).
    fresh = {key: TensorStats(stats.num_bins) for key, stats in info.stats.items()}
    _point_observers(observers, fresh)
    try:
        outcome = _observe_shard_safely(
            prepared, shard_batches, info.config.show_progress if show_progress is None else show_progress
        )
    finally:
        _point_observers(observers, info.stats)
    try:
        total = _batches_on_all_ranks(outcome, group)
    except CalibrationError:
        _restore(info.means, means_before)
        raise
    device = next((p.device for p in prepared.parameters()), torch.device("cpu"))
    _all_reduce_means(info.means, means_before, device, group)
    combined = _merged_with(info.stats, all_reduce_stats(fresh, group))
    info.stats.clear()
    info.stats.update(combined)
    _point_observers(observers, info.stats)
    info.batches_seen += total
    return prepared


def _refuse_data_kept_on_one_rank(info: PreparedInfo) -> None:
    settings = (("adaround=True", info.config.adaround), ('calibrator="auto_per_group"', bool(info.samples)))
    kept = [name for name, on in settings if on]
    if kept:
        raise ConfigError(
            f"QuantConfig({', '.join(kept)}) fits on calibration samples that one process keeps, which "
            "calibrate_distributed cannot merge across ranks (each rank would derive another model). "
            "Calibrate on one process with fx2trt_pipeline.calibrate, or drop these settings."
        )


_MeansState = dict[str, tuple[torch.Tensor | None, int]]


def _snapshot(means: dict[str, ChannelMeanObserver] | None) -> _MeansState:
    return {k: (None if o.total is None else o.total.clone(), o.count) for k, o in (means or {}).items()}


def _restore(means: dict[str, ChannelMeanObserver] | None, before: _MeansState) -> None:
    for key, (total, count) in before.items():
        means[key].total, means[key].count = total, count  # type: ignore[index]


def _all_reduce_means(
    means: dict[str, ChannelMeanObserver] | None,
    before: _MeansState,
    device: torch.device,
    group: dist.ProcessGroup | None,
) -> None:
    """Sum every rank's new per-channel input sums and counts (bias correction) into each rank's observers."""
    if not means:
        return
    keys = sorted(means)  # the same order on every rank
    widths = torch.tensor([0 if means[k].total is None else means[k].total.numel() for k in keys], device=device)
    dist.all_reduce(widths, op=dist.ReduceOp.MAX, group=group)  # a rank may not have reached a layer
    parts = []
    for key, width in zip(keys, widths.tolist()):
        old_total, old_count = before[key]
        new = means[key].total
        delta = torch.zeros(width, dtype=torch.float64, device=device)
        if new is not None:
            delta += new - (old_total if old_total is not None else 0.0)
        parts.append(torch.cat((delta, torch.tensor([float(means[key].count - old_count)], device=device))))
    packed = torch.cat(parts)
    dist.all_reduce(packed, group=group)
    start = 0
    for key, width in zip(keys, widths.tolist()):
        delta, count = packed[start : start + width], int(packed[start + width])
        start += width + 1
        old_total, old_count = before[key]
        if width:
            means[key].total = delta if old_total is None else old_total + delta
        means[key].count = old_count + count


def _require_distributed() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise CalibrationError(
            "calibrate_distributed needs torch.distributed: call "
            "torch.distributed.init_process_group(...) on every rank first (torchrun sets the "
            "environment for it), or use fx2trt_pipeline.calibrate in a single process."
        )


@dataclass(frozen=True)
class _ShardOutcome:
    """What this rank's calibration pass did: batches seen, or the error that stopped it."""

    seen: int = 0
    error: str | None = None
    exc: BaseException | None = None
    traceback: str = ""


def _observe_shard_safely(prepared: GraphModule, batches: Iterable[Any], show_progress: bool) -> _ShardOutcome:
    """:func:`_observe_shard`, with a failure caught: it is reported to every rank, so none blocks."""
    try:
        return _ShardOutcome(seen=_observe_shard(prepared, batches, show_progress))
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return _ShardOutcome(error=error, exc=exc, traceback=traceback.format_exc())


def _batches_on_all_ranks(outcome: _ShardOutcome, group: dist.ProcessGroup | None) -> int:
    """Total batches over all ranks; raises on every rank when any rank failed or all shards were empty."""
    outcomes: list[tuple[str | None, int] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(outcomes, (outcome.error, outcome.seen), group=group)
    failed = [(rank, out[0]) for rank, out in enumerate(outcomes) if out is not None and out[0] is not None]
    if failed:
        detail = "; ".join(f"rank {rank}: {msg}" for rank, msg in failed)
        local_tb = f"\nThis rank's traceback:\n{outcome.traceback}" if outcome.traceback else ""
        raise CalibrationError(
            f"Distributed calibration failed on {len(failed)} rank(s): {detail}. The "
            "statistics were left unchanged." + local_tb
        ) from outcome.exc
    total = sum(out[1] for out in outcomes if out is not None)
    if total == 0:
        raise CalibrationError(
            "The calibration shards of all ranks are empty: give at least one rank one batch "
            "of real inputs (e.g. shard_for_rank(batches) over 4-32 batches)."
        )
    return total


def _merged_with(held: dict[str, TensorStats], merged: dict[str, TensorStats]) -> dict[str, TensorStats]:
    """The statistics already held plus every rank's new data; every scale group must have data."""
    combined = {key: held[key].clone().merge(merged[key]) for key in held}
    empty = [key for key, stats in combined.items() if stats.count == 0]
    if empty:
        raise CalibrationError(
            f"Scale group(s) {empty} saw no data on any rank; the branches that produce them "
            "never ran. Calibrate with data that exercises them or skip them."
        )
    return combined


__all__ = ["calibrate_distributed", "shard_for_rank"]
