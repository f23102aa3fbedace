"""Per-scale-group calibrator choice by the consumer layer's output error (``"auto_per_group"``).

The global calibrator search (``tune/calibrator_search.py``) scores whole models on a task metric; this
picks, for each scale group separately, the calibrator whose threshold disturbs the layers that read
the group least. Every candidate threshold comes from the group's one set of statistics (minmax,
percentile 99.9 / 99.99 / 99.999, mse, entropy); to score them, a few calibration samples of each
observed tensor are kept during the same single pass (:class:`SampleObserver`, one sample per batch,
at most :data:`SAMPLES`), and each candidate is charged the squared output error it causes in every
consumer: ``||conv(fq(x) - x)||^2`` (float weights, no bias) for conv / linear consumers, and
``||fq(x) - x||^2`` where the quantized tensor itself is the consumer's output (residual adds,
pooling). Clipping a large value costs in proportion to the weights it meets, which the input-side MSE
calibrator cannot see.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.quantize.calibrator_choice import fake_quant
    >>> [round(v, 4) for v in fake_quant(torch.tensor([0.3, 5.0]), amax=1.27).tolist()]  # 5.0 saturates
    [0.3, 1.27]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from fx2trt_pipeline.errors import CalibrationError
from fx2trt_pipeline.quantize.calibrators import compute_amax
from fx2trt_pipeline.quantize.config import AUTO_PER_GROUP
from fx2trt_pipeline.quantize.placement import Placement, ScaleGroup
from fx2trt_pipeline.quantize.statistics import TensorStats

#: Calibration samples kept per observed tensor (one per batch): enough to rank thresholds, cheap to run.
SAMPLES = 2
#: (calibrator, percentile) candidates; a tie goes to the earlier (simpler) one.
CANDIDATES: tuple[tuple[str, float], ...] = (
    ("minmax", 99.99),
    ("percentile", 99.9),
    ("percentile", 99.99),
    ("percentile", 99.999),
    ("mse", 99.99),
    ("entropy", 99.99),
)


class SampleObserver(nn.Module):
    """Identity module keeping the first sample of each of the first ``keep`` batches it sees."""

    def __init__(self, keep: int = SAMPLES) -> None:
        super().__init__()
        self.keep = keep
        self.samples: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.samples) < self.keep and isinstance(x, torch.Tensor) and x.dim() > 0:
            self.samples.append(x.detach()[:1].clone())
        return x


@dataclass(frozen=True)
class GroupChoice:
    """The calibrator chosen for one group and the output error of each candidate."""

    label: str
    amax: float
    errors: dict[str, float]


def fake_quant(x: torch.Tensor, amax: float) -> torch.Tensor:
    """``dequantize(quantize(x))`` with the per-tensor scale ``amax / 127``, as the reference model does."""
    scale = max(float(amax), 2.0**-30) / 127.0
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


def _label(method: str, percentile: float) -> str:
    return f"percentile {percentile:g}" if method == "percentile" else method


def _consumer_error(gm: GraphModule, node: Node, path: tuple[int, ...], err: torch.Tensor) -> float:
    """Squared output error of ``node`` caused by the input error ``err`` (float weights, no bias)."""
    if node.op == "call_module" and path == (0,):
        layer = gm.get_submodule(str(node.target))
        if isinstance(layer, nn.Linear):
            return float(F.linear(err, layer.weight).pow(2).sum())
        if type(layer) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[layer.weight.dim() - 2]
            out = conv(err, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
            return float(out.pow(2).sum())
    return float(err.pow(2).sum())


@torch.no_grad()
def choose_group(
    gm: GraphModule, placement: Placement, group: ScaleGroup, stats: TensorStats, samples: dict[str, SampleObserver]
) -> GroupChoice:
    """The candidate threshold with the least summed consumer output error on the kept samples."""
    missing = [t for t in group.members if t not in samples or not samples[t].samples]
    if missing:
        raise CalibrationError(
            f"Calibrator {AUTO_PER_GROUP!r} for scale group '{group.key}' has no calibration "
            f"samples of {missing[:3]}; prepare() with this calibrator and calibrate again."
        )
    nodes = {n.name: n for n in gm.graph.nodes}
    errors: dict[str, float] = {}
    amaxes: dict[str, float] = {}
    for method, percentile in CANDIDATES:
        label = _label(method, percentile)
        amax = compute_amax(stats, method, percentile)
        amaxes[label] = amax
        same = next((k for k, v in amaxes.items() if v == amax and k != label), None)
        if same is not None:  # an identical threshold scores identically
            errors[label] = errors[same]
            continue
        total = 0.0
        for tensor in group.members:
            for x in samples[tensor].samples:
                err = fake_quant(x, amax) - x
                total += sum(_consumer_error(gm, nodes[c], p, err) for c, p in placement.points[tensor].uses)
        errors[label] = total
    best = min(errors, key=errors.__getitem__)  # the first of equal minima: the simpler calibrator
    return GroupChoice(best, amaxes[best], errors)


__all__ = ["AUTO_PER_GROUP", "CANDIDATES", "GroupChoice", "SampleObserver", "choose_group", "fake_quant"]
