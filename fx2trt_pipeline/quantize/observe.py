"""Insert statistics observers at every Q/DQ point and run calibration batches through them.

One pass over the data collects, per scale group, the exact statistics every calibrator needs
(see ``statistics.TensorStats``), so switching calibrators never re-runs the model.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.quantize.observe import iterate_batches
    >>> [tuple(b[0].shape) for b in iterate_batches([torch.zeros(2, 3)], torch.device("cpu"), False)]
    [(2, 3)]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.errors import CalibrationError
from fx2trt_pipeline.quantize.bias_correction import ChannelMeanObserver
from fx2trt_pipeline.quantize.calibrator_choice import SampleObserver
from fx2trt_pipeline.quantize.config import AUTO_PER_GROUP
from fx2trt_pipeline.quantize.placement import Placement
from fx2trt_pipeline.quantize.statistics import TensorStats

OBSERVER_SUFFIX = "_observer"


class StatsObserver(nn.Module):
    """Identity module that feeds every tensor it sees into a (possibly shared) ``TensorStats``."""

    def __init__(self, name: str, stats: TensorStats) -> None:
        super().__init__()
        self.observed_name = name
        self.stats = stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise CalibrationError(
                f"Observer '{self.observed_name}' expected a float tensor but got {type(x).__name__} "
                f"{getattr(x, 'dtype', '')}; keep this node out of quantization with QuantConfig.skip."
            )
        self.stats.update(x.detach(), self.observed_name)
        return x


def insert_observers(gm: GraphModule, placement: Placement) -> dict[str, TensorStats]:
    """Add one observer after each Q/DQ point (in place); returns the statistics by scale group."""
    stats = {key: TensorStats() for key in placement.groups}
    nodes = {n.name: n for n in gm.graph.nodes}
    last_placeholder = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    for point in placement.points.values():
        node = nodes[point.tensor]
        obs_name = point.tensor + OBSERVER_SUFFIX
        gm.add_submodule(obs_name, StatsObserver(point.tensor, stats[point.group]))
        with gm.graph.inserting_after(last_placeholder if node.op == "placeholder" else node):
            obs = gm.graph.call_module(obs_name, (node,))
        node.replace_all_uses_with(obs, delete_user_cb=lambda user: user is not obs)
    gm.graph.lint()
    gm.recompile()
    return stats


def insert_channel_mean_observers(gm: GraphModule, placement: Placement) -> dict[str, ChannelMeanObserver]:
    """Observe the per-channel input mean of every quantized conv / linear layer (bias correction)."""
    means = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    for wp in placement.weights.values():
        layer = nodes[wp.layer]
        if wp.kind not in ("conv", "linear") or not isinstance(layer.args[0], torch.fx.Node):
            continue
        obs = ChannelMeanObserver(wp.layer, channel_last=wp.kind == "linear")
        name = wp.layer + "_mean" + OBSERVER_SUFFIX
        gm.add_submodule(name, obs)
        with gm.graph.inserting_before(layer):
            layer.args = (gm.graph.call_module(name, (layer.args[0],)),) + tuple(layer.args[1:])
        means[wp.layer] = obs
    gm.graph.lint()
    gm.recompile()
    return means


def insert_sample_observers(gm: GraphModule, placement: Placement) -> dict[str, SampleObserver]:
    """Keep a few calibration samples of every tensor whose group chooses its calibrator per group."""
    samples = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    last_placeholder = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    for point in placement.points.values():
        if placement.groups[point.group].calibrator != AUTO_PER_GROUP:
            continue
        node = nodes[point.tensor]
        samples[point.tensor] = SampleObserver()
        name = point.tensor + "_sample" + OBSERVER_SUFFIX
        gm.add_submodule(name, samples[point.tensor])
        with gm.graph.inserting_after(last_placeholder if node.op == "placeholder" else node):
            obs = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(obs, delete_user_cb=lambda user: user is not obs)
    gm.graph.lint()
    gm.recompile()
    return samples


def remove_observers(gm: GraphModule) -> None:
    """Delete every observer node and module (in place)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(
            gm.get_submodule(node.target), (StatsObserver, ChannelMeanObserver, SampleObserver)
        ):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()


def iterate_batches(
    batches: Iterable[Any], device: torch.device, show_progress: bool, desc: str = "calibrating"
) -> Iterator[tuple[Any, ...]]:
    """Yield calibration batches as argument tuples on ``device``, with a tqdm bar.

    A batch may be a tensor, a tuple/list of tensors (several model inputs) or a dict of keyword
    tensors (given as a one-element tuple holding the dict).
    """
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    if show_progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc=desc, unit="batch", leave=False)
    for batch in batches:
        if isinstance(batch, torch.Tensor):
            yield (batch.to(device),)
        elif isinstance(batch, (tuple, list)):
            yield tuple(b.to(device) if isinstance(b, torch.Tensor) else b for b in batch)
        elif isinstance(batch, dict):
            yield ({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()},)
        else:
            raise CalibrationError(
                f"Calibration batches must be tensors, tuples of tensors or dicts; got {type(batch).__name__}"
            )


def run_calibration(
    gm: GraphModule, batches: Iterable[Any], stats: dict[str, TensorStats], show_progress: bool = True
) -> int:
    """Run every batch through the observed graph; returns the number of batches seen.

    Raises:
        CalibrationError: no batches at all, or a scale group saw no data (its branch never ran).
    """
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    seen = 0
    with torch.no_grad():
        for args in iterate_batches(batches, device, show_progress):
            if len(args) == 1 and isinstance(args[0], dict):
                gm(**args[0])
            else:
                gm(*args)
            seen += 1
    if seen == 0:
        raise CalibrationError(
            "The calibration data is empty: pass at least one batch (e.g. 4-32 batches of "
            "real inputs preprocessed exactly like inference data)."
        )
    empty = [k for k, s in stats.items() if s.count == 0]
    if empty:
        raise CalibrationError(
            f"Scale group(s) {empty} saw no data during calibration; the branches that "
            "produce them never ran. Calibrate with data that exercises them or skip them."
        )
    return seen


def flat_inputs(example_inputs: Sequence[Any]) -> tuple[Any, ...]:
    """Normalise ``example_inputs`` (tensor or sequence) to a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def keeping_first(batches: Iterable[Any], kept: list[Any], count: int) -> Iterator[Any]:
    """Yield ``batches``, keeping the first ones in ``kept`` until it holds ``count`` (for AdaRound's fit)."""
    for batch in batches:
        if len(kept) < count:
            kept.append(batch)
        yield batch


def first_batch_as_example(batches: Iterable[Any]) -> tuple[Iterable[Any], Sequence[Any] | None]:
    """``(batches, first batch as example inputs)``, the first batch not consumed from ``batches``."""
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return [], None
    example = first if isinstance(first, (torch.Tensor, tuple, list)) else None
    return itertools.chain([first], iterator), example
