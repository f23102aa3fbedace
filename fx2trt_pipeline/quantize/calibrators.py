"""Activation calibrators: an amax (clipping threshold) from one :class:`TensorStats`.

Every method reads only the exact histogram of |x| and the exact max, so any of them can be
applied after a single calibration pass, and again with other settings, without re-running
the model. The quantizer turns the result into a per-tensor scale ``amax / 127``.

=========== ===================================================================================
minmax      the exact max |x|.
percentile  the upper edge of the bin where the cumulative count reaches ``percentile`` %.
entropy     TensorRT's KL-divergence threshold search (legacy IInt8EntropyCalibrator2).
mse         the bin edge minimising the expected squared error of int8 quantization.
=========== ===================================================================================

Example:
    >>> import torch
    >>> from fx2trt_pipeline.quantize.statistics import TensorStats
    >>> s = TensorStats()
    >>> s.update(torch.linspace(-1.0, 1.0, 10001), "x")
    >>> compute_amax(s, "minmax"), round(compute_amax(s, "percentile", 99.0), 3)
    (1.0, 0.99)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from types import MappingProxyType

import torch

from fx2trt_pipeline.errors import CalibrationError, ConfigError
from fx2trt_pipeline.quantize.config import CALIBRATORS
from fx2trt_pipeline.quantize.statistics import AMAX_FLOOR, TensorStats

#: int8 levels on one side of zero; the activation scale is amax / QMAX.
QMAX = 127
#: Quantization levels of |x| in TensorRT's entropy search (the talk's 128).
ENTROPY_LEVELS = 128
#: Counts given to Q's empty last bin when outliers make P's last bin nonzero (MXNet/TVM use 1e-4).
ENTROPY_EPSILON = 1e-4
#: Divergences / errors this close (relative) to the minimum count as tied with it.
TIE_RTOL = 1e-9
_MSE_BLOCK = 128  # candidates per block: bounds the (candidates x bins) temporaries to ~2 MB


def compute_amax(stats: TensorStats, method: str, percentile: float = 99.99) -> float:
    """The activation amax that ``method`` chooses from ``stats``; always > 0.

    Args:
        stats: statistics of the observed tensor(s).
        method: ``"minmax" | "percentile" | "entropy" | "mse"``.
        percentile: used by ``"percentile"`` only, in (0, 100].

    Raises:
        ConfigError: unknown method or bad percentile.
        CalibrationError: ``stats`` saw no data.

    Example:
        >>> s = TensorStats(); s.update(torch.tensor([0.5, -2.0]), "x")
        >>> compute_amax(s, "minmax")
        2.0
    """
    fn = _METHODS.get(method)
    if fn is None:
        raise ConfigError(f"Unknown calibration method {method!r}; choose one of {CALIBRATORS}.")
    if method == "percentile":
        return amax_percentile(stats, percentile)
    return fn(stats)


def amax_minmax(stats: TensorStats) -> float:
    """The exact max |x| seen (floored to a tiny positive value for all-zero tensors).

    Example:
        >>> s = TensorStats(); s.update(torch.tensor([3.0, -4.5]), "x")
        >>> amax_minmax(s)
        4.5
    """
    _require_data(stats)
    return max(stats.amax, AMAX_FLOOR)


def amax_percentile(stats: TensorStats, percentile: float = 99.99) -> float:
    """The |x| below which ``percentile`` % of the values lie, read from the histogram.

    Returns the upper edge of the first bin at which the cumulative count reaches
    ``percentile`` % of all values (at most one bin width above the exact percentile), capped
    at the exact max.

    Example:
        >>> s = TensorStats(); s.update(torch.arange(1000.0), "x")
        >>> amax_percentile(s, 50.0)
        499.5
    """
    _require_data(stats)
    p = float(percentile)
    if not 0.0 < p <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile!r}")
    # Rank arithmetic on the decimal the user wrote: 99.9 / 100 * 200000 is 199800.00000000003 in
    # floats, which would demand one value more and can move the answer by a bin.
    needed = max(1, math.ceil(Fraction(repr(p)) * stats.count / 100))
    cum = torch.cumsum(stats.hist, 0)
    k = min(int(torch.searchsorted(cum, torch.tensor([needed], dtype=torch.int64))[0]), stats.num_bins - 1)
    return max(min((k + 1) * stats.bin_width, stats.amax), AMAX_FLOOR)


def entropy_divergences(stats: TensorStats, num_levels: int = ENTROPY_LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P || Q) for every candidate bin count ``i`` of TensorRT's entropy search.

    See :func:`amax_entropy` for the algorithm. Returns ``(i, kl)``: the candidate bin counts
    ``num_levels .. num_bins`` (int64) and their divergences (float64, ``inf`` where Q is zero
    on a bin where P is not).

    Example:
        >>> s = TensorStats(256); s.update(torch.randn(10000), "x")
        >>> i, kl = entropy_divergences(s)
        >>> i[0].item(), i[-1].item(), bool(torch.isfinite(kl[-1]))
        (128, 256, True)
    """
    _require_data(stats)
    n, L = stats.num_bins, _checked_levels(stats, num_levels)
    h = stats.hist.to(torch.float64)
    # The zero spike: see amax_entropy. Bin 0 takes bin 1's count for the search.
    h[0] = h[1]
    zero = torch.zeros(1, dtype=torch.float64)
    total = float(h.sum())
    if total == 0:  # every value was in bin 0: any candidate reproduces the data
        return torch.arange(L, n + 1), torch.zeros(n + 1 - L, dtype=torch.float64)
    # Prefix sums of the counts and of the number of nonzero bins, side by side for one gather.
    prefix = torch.cat(
        (torch.zeros(1, 2, dtype=torch.float64), torch.cumsum(torch.stack((h, (h > 0).to(torch.float64)), 1), 0))
    )
    cum = prefix[:, 0]  # cum[k] = sum(h[:k])
    cum_hlogh = torch.cat((zero, torch.cumsum(_xlogx(h), 0)))

    i = torch.arange(L, n + 1)
    inside = cum[i]
    tail = total - inside  # the outliers, folded into P's last bin
    last = h[i - 1] + tail
    p_log_p = cum_hlogh[i - 1] + _xlogx(last)

    q_sum, nonzero = _level_sums(prefix, h, i, L, tail)
    p_sum = q_sum.clone()
    p_sum[:, -1] += tail

    has_q = q_sum > 0
    log_q = torch.where(has_q, torch.log(q_sum.clamp(min=1.0) / nonzero.clamp(min=1.0)), 0.0)
    # The only bin where P > 0 and Q == 0 is P's last one, when its level is empty in hist but
    # outliers were folded into it. Give Q there ENTROPY_EPSILON counts (MXNet/TVM smooth zero bins
    # the same way) so that clipping a few far outliers costs a finite divergence.
    empty_last = (~has_q[:, -1]) & (tail > 0)
    log_q[:, -1] = torch.where(empty_last, math.log(ENTROPY_EPSILON), log_q[:, -1])
    q_total = inside + torch.where(empty_last, ENTROPY_EPSILON, 0.0)
    cross = (p_sum * log_q).sum(1)
    # sum_j P_j log(P_j/Q_j) with P = p/total, Q = q/q_total; every other level with mass has a
    # nonzero bin to spread it over, so sum(q) == q_total.
    kl = (p_log_p - cross) / total - math.log(total) + torch.log(q_total.clamp(min=ENTROPY_EPSILON))
    kl = torch.where(inside == 0, math.inf, kl)  # nothing below the threshold: no Q at all
    return i, kl


def _checked_levels(stats: TensorStats, num_levels: int) -> int:
    n, L = stats.num_bins, int(num_levels)
    if not 1 <= L <= n:
        raise ConfigError(
            f"The entropy calibrator needs at least {L} histogram bins, the statistics have {n}; "
            f"collect them with TensorStats(num_bins>={L})."
        )
    return L


def _level_sums(
    prefix: torch.Tensor, h: torch.Tensor, i: torch.Tensor, L: int, tail: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate ``i`` and level: the count merged into the level and the nonzero bins it spreads over."""
    # Level l takes bins j with floor(j * L / i) == l, i.e. j in [ceil(l*i/L), ceil((l+1)*i/L)).
    edges = torch.div(torch.arange(L + 1)[None, :] * i[:, None] + (L - 1), L, rounding_mode="floor")
    per_level = torch.diff(prefix[edges], dim=1)  # (candidates, levels, [count, nonzero bins])
    q_sum, nonzero = per_level[..., 0], per_level[..., 1]
    # P's last bin can be nonzero through the outliers alone; Q is spread over P's nonzero bins.
    nonzero[:, -1] += ((h[i - 1] == 0) & (tail > 0)).to(torch.float64)
    return q_sum, nonzero


def amax_entropy(stats: TensorStats, num_levels: int = ENTROPY_LEVELS) -> float:
    """TensorRT's entropy (KL-divergence) threshold, from the |x| histogram.

    The algorithm of TensorRT's legacy ``IInt8EntropyCalibrator2``, as presented by Szymon
    Migacz, "8-bit Inference with TensorRT" (GTC 2017); MXNet's and TVM's
    ``_get_optimal_threshold`` describe the same search. For every candidate bin count ``i``
    from ``num_levels`` (128) to ``num_bins``:

    1. reference P = ``hist[:i]``, with the outlier mass ``hist[i:].sum()`` added to its last
       bin (clipping moves those values to the threshold);
    2. candidate Q = ``hist[:i]`` merged into ``num_levels`` quantization levels (bin j goes to
       level ``floor(j * num_levels / i)``, so each level covers an equal share of [0, i*w) as
       int8 levels do), then expanded back by spreading each level's count evenly over the bins
       of that level where P is nonzero;
    3. ``KL(P || Q)`` of the normalised distributions.

    Q lacks the outlier mass that P carries in its last bin: that is how clipping enters the
    divergence, balanced against the rounding loss of merging bins into levels. When every bin of
    the last level is empty (sparse, far outliers, the case this calibrator exists for) Q is 0
    where P is not and the literal algorithm gives an infinite divergence, so a threshold could
    never clip them. There, like MXNet's and TVM's smoothing, Q gets ``ENTROPY_EPSILON`` counts
    on that bin; nowhere else can Q be 0 where P is not, so nothing else is smoothed.

    Bin 0 enters the search with bin 1's count (as in NVIDIA's pytorch-quantization). After a
    ReLU it holds the exact zeros, often half of all values, which int8 represents exactly; kept,
    that spike dominates P, and spreading it over the other bins of level 0 costs so much that
    the smallest candidate (i = 128, one bin per level) always wins: measured on MobileNetV2
    with real photos, that clipped post-ReLU6 activations at 0.25-1.0 instead of ~1-6 and
    dropped top-1 agreement with FP32 to 9%.

    The candidate with the smallest divergence wins; on ties (within ``TIE_RTOL``, as when
    adding empty bins changes nothing) the smallest, which has the finest step. This implementation
    evaluates all candidates at once from prefix sums: O(num_bins * num_levels), no Python loop.

    Threshold: ``i * w``, the upper edge of P's last bin, capped at the exact max. The talk
    writes ``(i + 0.5) * w``; we return the edge because [0, i*w) is exactly the range the
    divergence was evaluated for (NVIDIA's pytorch-quantization also returns the bin edge). The
    two differ by half a bin: half an int8 step at i = 128, 1/32 of one at i = 2048.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> s = TensorStats(); s.update(torch.cat((torch.randn(100000), torch.tensor([80.0]))), "x")
        >>> amax_entropy(s)  # i = 128 bins of width 1/16, the smallest candidate; amax is 80
        8.0
    """
    i, kl = entropy_divergences(stats, num_levels)
    best = int(i[_first_minimum(kl)])
    return max(min(best * stats.bin_width, stats.amax), AMAX_FLOOR)


def mse_errors(stats: TensorStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected squared int8 quantization error for every candidate threshold T = k * w.

    Model: each bin's values are spread uniformly over the bin; a threshold T quantizes with
    scale ``s = T / 127``: values below T get the rounding error of ``round(x / s) * s``, values
    above T the clipping error ``(x - T)**2``. Both are integrated exactly over each bin
    (rounding through the closed-form integral of the squared saw-tooth), which stays right
    when a quantization step spans only a few bins, where bin centres would alias.
    Symmetric: the extra level at -128 is ignored, as |x| does not know the sign.

    Returns ``(thresholds, errors)`` for k = 1 .. last nonzero bin + 1, float64, errors per value.

    Example:
        >>> s = TensorStats(); s.update(torch.rand(1000), "x")
        >>> t, e = mse_errors(s)
        >>> bool(e[-1] < e[len(e) // 2])
        True
    """
    _require_data(stats)
    h = stats.hist.to(torch.float64)
    w = stats.bin_width
    k_max = int(torch.nonzero(h).max()) + 1
    h = h[:k_max]
    k = torch.arange(1, k_max + 1, dtype=torch.float64)
    thresholds = k * w
    centres = (torch.arange(k_max, dtype=torch.float64) + 0.5) * w

    # Clipping, bins j >= k: E[(x - T)^2] = (c_j - T)^2 + w^2/12 for x uniform in bin j.
    d, b, a = _sums_above(h), _sums_above(h * centres), _sums_above(h * centres * centres)
    clip = a - 2.0 * thresholds * b + thresholds**2 * d + (w * w / 12.0) * d

    rounding = torch.empty(k_max, dtype=torch.float64)
    bin_edges = torch.arange(k_max + 1, dtype=torch.float64) * w
    density = h / w
    for start in range(0, k_max, _MSE_BLOCK):
        stop = min(start + _MSE_BLOCK, k_max)
        step = thresholds[start:stop, None] / QMAX
        integral = _sawtooth_integral(bin_edges[None, : stop + 1], step)
        per_bin = torch.diff(integral, dim=1).mul_(density[:stop])
        # Candidate k = start + 1 + row sums the bins below it: columns <= row + start.
        rounding[start:stop] = per_bin.tril_(start).sum(1)
    return thresholds, (rounding + clip.clamp(min=0.0)) / float(stats.count)


def amax_mse(stats: TensorStats) -> float:
    """The threshold T (a bin edge) minimising the expected squared int8 error; see :func:`mse_errors`.

    Example:
        >>> s = TensorStats(); s.update(torch.cat((torch.rand(100000), torch.full((10,), 50.0))), "x")
        >>> round(amax_mse(s), 3) < 50.0
        True
    """
    thresholds, errors = mse_errors(stats)
    best = float(thresholds[_first_minimum(errors)])
    return max(min(best, stats.amax), AMAX_FLOOR)


def _first_minimum(values: torch.Tensor) -> int:
    """Index of the first value within ``TIE_RTOL`` of the minimum (rounding must not break ties)."""
    low = float(values.min())
    return int(torch.nonzero(values <= low + TIE_RTOL * abs(low))[0])


def _sums_above(v: torch.Tensor) -> torch.Tensor:
    """``out[k-1] = sum(v[k:])`` for candidates k = 1..len(v)."""
    return torch.flip(torch.cumsum(torch.flip(v, (0,)), 0), (0,)) - v


def _sawtooth_integral(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Integral from 0 to x of (t - step * round(t / step))**2 dt, in closed form."""
    # In place, in the order of step**3 * (periods / 12 + (frac**3 + 1/8) / 3 - 1/24): the (candidates x bins)
    # temporaries are what the mse search spends its time on.
    u = (x / step).add_(0.5)
    periods = torch.floor(u)
    frac = u.sub_(periods).sub_(0.5)
    frac.pow_(3).add_(0.125).div_(3.0)
    return periods.div_(12.0).add_(frac).sub_(1.0 / 24.0).mul_(step**3)


def _xlogx(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v > 0, v * torch.log(v.clamp(min=1.0)), 0.0)


def _require_data(stats: TensorStats) -> None:
    if not isinstance(stats, TensorStats):
        raise TypeError(f"expected TensorStats, got {type(stats).__name__}")
    if stats.count == 0:
        raise CalibrationError(
            "These statistics saw no values: no calibration batch reached the observed tensor. Check "
            "that the calibration data yields batches and that this layer runs in forward()."
        )


_METHODS: Mapping[str, Callable[[TensorStats], float]] = MappingProxyType(
    {
        "minmax": amax_minmax,
        "percentile": amax_percentile,
        "entropy": amax_entropy,
        "mse": amax_mse,
    }
)
