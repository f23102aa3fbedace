"""Adaptive rounding of weights (AdaRound, Nagel et al., ICML 2020), layer by layer, CPU friendly.

Rounding each weight to the nearest int8 level is optimal per weight but not for the layer's output:
AdaRound chooses, for every weight, floor or ceil so as to reconstruct the float layer's output on
calibration data. Per layer: ``min_V ||W x - W~(V) x||^2 + lambda * mean(1 - |2 h(V) - 1|^beta)`` with
``W~ = s * clamp(floor(W / s) + h(V), -127, 127)``, ``h`` the rectified sigmoid and ``beta`` annealed
from 20 to 2 after a warm-up so that ``h`` ends at 0 or 1. The reconstruction term is divided by
round-to-nearest's, so one ``lambda`` fits layers of any output scale; with few iterations a strong
``lambda`` is what makes ``h`` binary in time. The inputs ``x`` are the float model's: with the
activation Q/DQ applied as well, the fit chased the input rounding noise of the calibration rows and
did not carry over to other data (measured: -10 % error on the calibration rows, +-1 % elsewhere).
The per-channel scales ``s`` are the usual ones and stay unchanged (weights that round to the extreme
level +-127 keep it), so only the integers change and the reference graph is the same.

CPU cost is bounded: ``rows`` input positions are sampled per layer from the kept calibration batches
(one float forward collects them all), and each layer runs ``iterations`` Adam steps on that
``rows x (in_channels * kernel)`` matrix, grouped convolutions as batched matrix products. Layers with
fewer sampled rows than weights per output channel (e.g. a classifier fed with a small batch) keep
round-to-nearest: their reconstruction would be underdetermined.

Example:
    >>> import torch
    >>> h = rectified_sigmoid(torch.tensor([-10.0, 0.0, 10.0]))
    >>> [round(v, 3) for v in h.tolist()]
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.quantize.observe import iterate_batches
from fx2trt_pipeline.quantize.placement import Placement

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (the paper's values)
#: Weight of the rounding regulariser (mean over weights) against the reconstruction loss, which is
#: normalised by round-to-nearest's so that one setting serves layers of any output scale.
REG_WEIGHT = 10.0
WARMUP = 0.2  # fraction of iterations without the rounding regulariser
BETA_START, BETA_END = 20.0, 2.0
SMALL_STEP = 1 << 23  # multiply-adds per optimisation step below which one thread is faster


@dataclass(frozen=True)
class AdaRoundSettings:
    """Bounds of the per-layer optimisation."""

    iterations: int = 200
    rows: int = 1024
    learning_rate: float = 1e-2
    seed: int = 0


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``clamp(sigmoid(v) * (zeta - gamma) + gamma, 0, 1)``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _rows(layer: nn.Module, x: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` random rows of the layer's input as a matrix (positions, groups, in/groups * kernel)."""
    if isinstance(layer, nn.Linear):
        flat = x.reshape(-1, 1, x.shape[-1])
    else:
        cols = (
            F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
            if x.dim() == 4
            else x.reshape(x.shape[0], -1, 1)
        )
        flat = cols.transpose(1, 2).reshape(-1, layer.groups, cols.shape[1] // layer.groups)
    pick = torch.randperm(flat.shape[0], generator=gen)[:count]
    return flat[pick]


def _supported(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros")


def collect_rows(
    gm: GraphModule, placement: Placement, batches: Iterable[Any], settings: AdaRoundSettings
) -> dict[str, torch.Tensor]:
    """Sampled input rows of every quantized conv2d / linear layer, from float forwards of ``batches``."""
    gen = torch.Generator().manual_seed(settings.seed)
    rows: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for wp in placement.weights.values():
        layer = gm.get_submodule(wp.module)
        if wp.kind in ("conv", "linear") and _supported(layer):

            def hook(module: nn.Module, args: tuple, name: str = wp.layer) -> None:
                rows.setdefault(name, []).append(_rows(module, args[0].detach(), settings.rows, gen))

            hooks.append(layer.register_forward_pre_hook(hook))
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            for args in iterate_batches(batches, device, False):
                gm(**args[0]) if len(args) == 1 and isinstance(args[0], dict) else gm(*args)
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v)[: settings.rows] for k, v in rows.items()}


@contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """One intra-op thread for small steps: waking a thread pool costs more than such a step (and far more
    on a loaded machine, where pool threads spin); larger layers keep torch's setting."""
    before = torch.get_num_threads()
    if work < SMALL_STEP:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def round_layer(
    layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, x: torch.Tensor, settings: AdaRoundSettings
) -> torch.Tensor:
    """AdaRound integers for one layer given its sampled input rows ``x`` (positions, groups, k)."""
    groups = x.shape[1]
    w = layer.weight.detach().float()
    wm = w.reshape(groups, w.shape[0] // groups, -1)  # (groups, out/groups, k)
    s = scale.reshape(groups, -1, 1)
    ratio = wm / s
    floor = torch.floor(ratio)
    rest = (ratio - floor).clamp(0.01, 0.99)
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).requires_grad_(True)
    x = x.transpose(0, 1).contiguous()  # (groups, positions, k): one batched matmul per step
    target = torch.bmm(x, wm.transpose(1, 2))
    opt = torch.optim.Adam([v], lr=settings.learning_rate)
    warm = int(settings.iterations * WARMUP)
    with _threads_for(x.numel() * wm.shape[1]):
        _optimise(v, opt, floor, s, x, target, warm, settings.iterations)
    with torch.no_grad():
        chosen = (floor + (rectified_sigmoid(v) >= 0.5).float()).clamp(-127, 127).reshape(q.shape)
    keep = q.abs() == 127  # the extreme level defines the scale: keep it
    return torch.where(keep, q.float(), chosen).to(torch.int8)


def _optimise(
    v: torch.Tensor,
    opt: torch.optim.Optimizer,
    floor: torch.Tensor,
    s: torch.Tensor,
    xq: torch.Tensor,
    target: torch.Tensor,
    warm: int,
    iterations: int,
) -> None:
    """Adam on the rounding variables: reconstruction, plus the annealed rounding regulariser after warm-up."""

    def reconstruction(w: torch.Tensor) -> torch.Tensor:
        return (torch.bmm(xq, w.transpose(1, 2)) - target).pow(2).sum(-1).mean()

    with torch.no_grad():  # the loss of round-to-nearest: 1.0 on the normalised scale
        nearest = reconstruction(torch.clamp(floor + (rectified_sigmoid(v) >= 0.5).float(), -127, 127) * s)
    norm = 1.0 / max(float(nearest), 1e-30)
    for it in range(iterations):
        h = rectified_sigmoid(v)
        loss = reconstruction(torch.clamp(floor + h, -127, 127) * s) * norm
        if it >= warm:
            frac = (it - warm) / max(1, iterations - warm)
            beta = BETA_END + 0.5 * (BETA_START - BETA_END) * (1 + math.cos(frac * math.pi))
            loss = loss + REG_WEIGHT * (1 - (2 * h - 1).abs().pow(beta)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def reconstruction_error(layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared output error of int8 weights ``q`` against the float layer on rows ``x``."""
    groups = x.shape[1]
    w = layer.weight.detach().float().reshape(groups, layer.weight.shape[0] // groups, -1)
    wq = q.float().reshape(w.shape) * scale.reshape(groups, -1, 1)
    x = x.transpose(0, 1)
    return float((torch.bmm(x, wq.transpose(1, 2)) - torch.bmm(x, w.transpose(1, 2))).pow(2).mean())


def adaround_weights(
    gm: GraphModule, placement: Placement, batches: Iterable[Any], settings: AdaRoundSettings
) -> dict[str, torch.Tensor]:
    """AdaRound int8 weights for every eligible quantized layer of the float graph ``gm`` (not modified)."""
    from fx2trt_pipeline.quantize.reference import quantize_weight

    rows = collect_rows(gm, placement, batches, settings)
    out = {}
    for name, x in rows.items():
        wp = placement.weights[name]
        layer = gm.get_submodule(wp.module)
        if wp.axis != 0 or x.shape[0] < layer.weight[0].numel():
            continue  # per-tensor weights or too few rows for this many weights per channel: keep nearest
        q, scale = quantize_weight(layer.weight, wp.axis)
        torch.manual_seed(settings.seed)
        out[name] = round_layer(layer, q, scale, x, settings)
    return out


__all__ = [
    "AdaRoundSettings",
    "adaround_weights",
    "collect_rows",
    "reconstruction_error",
    "rectified_sigmoid",
    "round_layer",
]
