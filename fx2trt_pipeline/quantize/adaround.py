"""Adaptive rounding of weights (AdaRound, Nagel et al., ICML 2020) with quantized inputs, layer by layer.

Rounding each weight to the nearest int8 level is optimal per weight but not for the layer's output:
AdaRound chooses, for every weight, floor or ceil. Layers are taken in graph order, and each one is fitted
to what it gets in the quantized model, with every earlier layer already rounded and every activation
Q/DQ applied, against the float model's output ("asymmetric reconstruction", section 4.3 of the paper):

    min_V  sum over positions ||W~(V) x_q - W x||^2  +  lambda * mean(1 - |2 h(V) - 1|^beta)

with ``W~ = s * clamp(floor(W / s) + h(V), -127, 127)``, ``h`` the rectified sigmoid and ``beta``
annealed from 20 to 2 after a warm-up so that ``h`` ends at 0 or 1. A layer's rounding can then cancel
part of the error its input already carries, which fitting float inputs cannot (on MobileNetV2 with real
weights, docs/benchmarks.md: float inputs made the output worse, quantized inputs pass cosine 0.99).

The sum runs over *every* output position of the kept calibration batches, through the input second
moments of :mod:`fx2trt_pipeline.quantize.layer_inputs` (``(groups, k, k)`` matrices), so a step costs
``out * k`` multiply-adds per input value of the kernel, not per sampled row. The reconstruction term is
divided by round-to-nearest's, so one ``lambda`` fits layers of any output scale. A layer with fewer than
:data:`POSITIONS_PER_WEIGHT` positions per weight of an output channel keeps round-to-nearest (the
classifier of a small calibration batch): its fit would be underdetermined and would not carry over to
other data. The per-channel scales ``s`` stay unchanged (weights at the extreme level +-127 keep it),
so only the integers change and the reference graph is the same.

Example:
    >>> import torch
    >>> h = rectified_sigmoid(torch.tensor([-10.0, 0.0, 10.0]))
    >>> [round(v, 3) for v in h.tolist()]
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.quantize.layer_inputs import InputGram, kernel_shape, lockstep_inputs, output_positions
from fx2trt_pipeline.quantize.placement import Placement

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (the paper's values)
#: Weight of the rounding regulariser (mean over weights) against the reconstruction loss, which is
#: normalised by round-to-nearest's so that one setting serves layers of any output scale.
REG_WEIGHT = 10.0
WARMUP = 0.2  # fraction of iterations without the rounding regulariser
BETA_START, BETA_END = 20.0, 2.0
#: Output positions needed per weight of an output channel before a layer is fitted.
POSITIONS_PER_WEIGHT = 8
SMALL_STEP = 1 << 23  # multiply-adds per optimisation step below which one thread is faster


@dataclass(frozen=True)
class AdaRoundSettings:
    """Bounds of the per-layer optimisation."""

    iterations: int = 200
    learning_rate: float = 1e-2


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``clamp(sigmoid(v) * (zeta - gamma) + gamma, 0, 1)``."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def eligible(layer: nn.Module) -> bool:
    """Conv2d with zero padding given as numbers, or Linear: the layers whose input moments we collect."""
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)


class _Loss:
    """``sum ||W~ x_q - W x||^2 / positions`` as a function of ``W~`` (``(groups, out/groups, k)``)."""

    def __init__(self, w: torch.Tensor, gram: InputGram) -> None:
        n = max(gram.positions, 1)
        self.w = w
        self.qq = (gram.qq / n).to(w.dtype)
        self.qe_w = ((gram.qe / n).to(w.dtype) @ w.transpose(1, 2)).transpose(1, 2)  # W qe^T, per group
        self.const = float(((w.double() @ (gram.ee / n)) * w.double()).sum())

    def __call__(self, wt: torch.Tensor) -> torch.Tensor:
        d = wt - self.w
        return ((d @ self.qq) * d).sum() + 2 * (d * self.qe_w).sum() + self.const


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


def _grouped(layer: nn.Module, t: torch.Tensor) -> torch.Tensor:
    groups, k = kernel_shape(layer)
    return t.reshape(groups, -1, k)


def round_layer(
    layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, gram: InputGram, settings: AdaRoundSettings
) -> torch.Tensor:
    """AdaRound int8 weights of one layer, given its input moments ``gram`` (round-to-nearest is ``q``)."""
    w = _grouped(layer, layer.weight.detach().float())
    s = scale.to(w).reshape(w.shape[0], -1, 1)
    loss = _Loss(w, gram)
    floor = torch.floor(w / s)
    rest = (w / s - floor).clamp(0.01, 0.99)
    v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=settings.learning_rate)
    nearest = _grouped(layer, q.float()) * s
    norm = 1.0 / max(float(loss(nearest)), 1e-30)
    warm = int(settings.iterations * WARMUP)
    with _threads_for(w.numel() * w.shape[-1]), torch.enable_grad():
        for it in range(settings.iterations):
            h = rectified_sigmoid(v)
            total = loss(torch.clamp(floor + h, -127, 127) * s) * norm
            if it >= warm:
                frac = (it - warm) / max(1, settings.iterations - warm)
                beta = BETA_END + 0.5 * (BETA_START - BETA_END) * (1 + math.cos(frac * math.pi))
                total = total + REG_WEIGHT * (1 - (2 * h - 1).abs().pow(beta)).mean()
            opt.zero_grad()
            total.backward()
            opt.step()
    with torch.no_grad():
        chosen = (floor + (rectified_sigmoid(v) >= 0.5).float()).clamp(-127, 127).reshape(q.shape)
    keep = q.abs() == 127  # the extreme level defines the scale: keep it
    return torch.where(keep, q.float(), chosen).to(torch.int8)


def reconstruction_error(layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, gram: InputGram) -> float:
    """Mean squared output error of int8 weights ``q`` (quantized inputs) against the float layer
    (float inputs), over the positions and output channels that ``gram`` was collected on."""
    w = _grouped(layer, layer.weight.detach().double())
    wq = _grouped(layer, q.double()) * scale.double().reshape(w.shape[0], -1, 1)
    return float(_Loss(w, gram)(wq)) / layer.weight.shape[0]


def adaround_sequentially(
    quantized: GraphModule,
    float_gm: GraphModule,
    placement: Placement,
    batches: Iterable[tuple[Any, ...]],
    settings: AdaRoundSettings,
    on_rounded: Callable[[str, torch.Tensor], None] | None = None,
) -> dict[str, torch.Tensor]:
    """AdaRound every eligible per-channel conv2d / linear layer of the reference graph ``quantized``, in
    graph order, in place: its ``<layer>_weight_int8`` buffer gets the chosen integers before the next
    layer's inputs are collected. ``float_gm`` is the float graph it was built from (not modified).
    ``on_rounded(layer, q)`` runs after each change (bias correction refits the bias there).

    Returns:
        The chosen int8 weights per layer that changed.
    """
    layers = {
        wp.layer: wp
        for wp in placement.weights.values()
        if wp.kind in ("conv", "linear") and wp.axis == 0 and eligible(float_gm.get_submodule(wp.module))
    }
    chosen = {}
    for name, pairs in lockstep_inputs(float_gm, quantized, list(layers), batches):
        layer = float_gm.get_submodule(layers[name].module)
        _, k = kernel_shape(layer)
        if sum(output_positions(layer, x) for x, _ in pairs) < POSITIONS_PER_WEIGHT * k:
            continue
        gram = InputGram.of(layer)
        for x, xq in pairs:
            gram.add(layer, x, xq)
        buffer = getattr(quantized, f"{name}_weight_int8")
        q = round_layer(layer, buffer, getattr(quantized, f"{name}_weight_scale"), gram, settings)
        if torch.equal(q, buffer):
            continue
        buffer.copy_(q)
        chosen[name] = q
        if on_rounded is not None:
            on_rounded(name, q)
    return chosen


__all__ = [
    "AdaRoundSettings",
    "adaround_sequentially",
    "eligible",
    "reconstruction_error",
    "rectified_sigmoid",
    "round_layer",
]
