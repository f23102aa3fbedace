"""The four calibrators against independent brute-force references."""

import math

import numpy as np
import pytest
import torch

from fx2trt_pipeline.errors import CalibrationError, ConfigError
from fx2trt_pipeline.quantize.calibrators import (
    ENTROPY_EPSILON,
    amax_entropy,
    amax_minmax,
    amax_percentile,
    compute_amax,
    entropy_divergences,
    mse_errors,
)
from fx2trt_pipeline.quantize.statistics import TensorStats


def stats_of(x: torch.Tensor, num_bins: int = 2048) -> TensorStats:
    s = TensorStats(num_bins)
    s.update(x, "obs")
    return s


def sample(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "halfnormal":
        return torch.randn(n, generator=g).abs()
    if kind == "gaussian":
        return torch.randn(n, generator=g) * 2.5
    if kind == "relu":
        return torch.relu(torch.randn(n, generator=g))
    if kind == "laplace":
        u = torch.rand(n, generator=g, dtype=torch.float64) - 0.5
        return (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()
    if kind == "outliers":
        x = torch.randn(n, generator=g)
        x[:5] = torch.tensor([90.0, -120.0, 75.0, 200.0, -64.0])
        return x
    raise ValueError(kind)


def reference_kl(hist: np.ndarray, levels: int = 128, eps: float = ENTROPY_EPSILON) -> np.ndarray:
    """Slow, literal per-candidate KL(P || Q) loop (Migacz, GTC 2017), one candidate at a time."""
    h = hist.astype(np.float64)
    h[0] = h[1]  # the documented zero-spike rule
    out = []
    for i in range(levels, len(h) + 1):
        p = h[:i].copy()
        p[i - 1] += h[i:].sum()
        level = (np.arange(i) * levels) // i
        level_sum = np.bincount(level, weights=h[:i], minlength=levels)
        level_nonzero = np.bincount(level, weights=(p > 0).astype(np.float64), minlength=levels)
        q = np.zeros(i)
        for j in range(i):
            if p[j] > 0 and level_nonzero[level[j]] > 0:
                q[j] = level_sum[level[j]] / level_nonzero[level[j]]
        if h[:i].sum() == 0:
            out.append(math.inf)
            continue
        q[(p > 0) & (q == 0)] = eps  # the documented smoothing
        big_p, big_q = p / p.sum(), q / q.sum()
        m = big_p > 0
        out.append(float(np.sum(big_p[m] * np.log(big_p[m] / big_q[m]))))
    return np.array(out)


def test_minmax_is_the_exact_max() -> None:
    x = sample("outliers", 1000, 0)
    s = stats_of(x)
    assert amax_minmax(s) == compute_amax(s, "minmax") == float(x.abs().max()) == 200.0


@pytest.mark.parametrize("kind", ["halfnormal", "gaussian", "relu", "laplace", "outliers"])
@pytest.mark.parametrize("pct", [50.0, 99.0, 99.9, 99.99, 99.999])
def test_percentile_matches_numpy(kind: str, pct: float) -> None:
    x = sample(kind, 200_000, 1)
    s = stats_of(x)
    ours = compute_amax(s, "percentile", pct)
    ref = float(np.percentile(x.abs().double().numpy(), pct))
    assert abs(ours - ref) <= s.bin_width, (ours, ref, s.bin_width)
    assert ours <= s.amax


def test_percentile_100_is_amax() -> None:
    s = stats_of(sample("gaussian", 1000, 2))
    assert amax_percentile(s, 100.0) == s.amax


@pytest.mark.parametrize("kind, num_bins", [("halfnormal", 2048), ("relu", 512), ("outliers", 2048), ("laplace", 300)])
def test_entropy_matches_slow_reference(kind: str, num_bins: int) -> None:
    x = sample(kind, 50_000, 3)
    s = stats_of(x, num_bins)
    i, kl = entropy_divergences(s)
    ref = reference_kl(s.hist.numpy())
    assert i.tolist() == list(range(128, num_bins + 1))
    np.testing.assert_allclose(kl.numpy(), ref, rtol=1e-7, atol=1e-12)
    # Ties (within 1e-9 relative) go to the smallest candidate, in both.
    best_i = 128 + int(np.flatnonzero(ref <= ref.min() + 1e-9 * abs(ref.min()))[0])
    assert amax_entropy(s) == min(best_i * s.bin_width, s.amax)


def test_entropy_is_not_pinned_by_the_relu_zero_spike() -> None:
    # Half the values are exact zeros. Left in, they would make i = 128 (one bin per level) win
    # for every post-ReLU tensor; the threshold must instead sit in the tail like percentile's.
    s = stats_of(sample("relu", 200_000, 8))
    i, kl = entropy_divergences(s)
    assert int(i[int(torch.argmin(kl))]) > 128
    assert 0.6 * compute_amax(s, "percentile", 99.9) < compute_amax(s, "entropy") <= s.amax
    # The rule looks at bin 0 only: scaling the zero count changes nothing.
    more_zeros = stats_of(torch.cat((sample("relu", 200_000, 8), torch.zeros(500_000))))
    assert compute_amax(more_zeros, "entropy") == compute_amax(s, "entropy")


def test_entropy_candidate_with_empty_range_is_infinite() -> None:
    # Every value sits in the top bins: candidates that keep nothing below them are impossible.
    s = stats_of(torch.full((100,), 1000.0) + torch.rand(100), num_bins=256)
    _, kl = entropy_divergences(s)
    assert math.isinf(kl[0]) and math.isfinite(kl[-1])
    assert compute_amax(s, "entropy") > 900.0


def test_outliers_are_clipped_by_entropy_and_percentile_not_minmax() -> None:
    x = sample("outliers", 200_000, 4)  # N(0, 1) plus five values up to 200
    s = stats_of(x)
    assert compute_amax(s, "minmax") == 200.0
    entropy, pct = compute_amax(s, "entropy"), compute_amax(s, "percentile", 99.99)
    assert 2.5 < entropy < 200.0 / 8, entropy
    assert 3.0 < pct < 5.0, pct
    # Without the outliers the search lands in the same place.
    clean = stats_of(x[5:])
    assert abs(compute_amax(clean, "percentile", 99.99) - pct) < 0.1


def raw_quant_error(x: torch.Tensor, threshold: float) -> float:
    """Mean squared error of quantizing |x| with scale T/127 (round half even, saturate at 127)."""
    v = x.double().abs()
    scale = threshold / 127.0
    return float(((v - torch.clamp(torch.round(v / scale), 0, 127) * scale) ** 2).mean())


@pytest.mark.parametrize("kind", ["halfnormal", "laplace", "outliers"])
def test_mse_model_and_choice_against_raw_samples(kind: str) -> None:
    x = sample(kind, 100_000, 5)
    s = stats_of(x)
    thresholds, errors = mse_errors(s)
    k_best = int(torch.argmin(errors))
    # The histogram model predicts the raw-sample error of every nearby candidate closely.
    window = list(range(max(0, k_best - 30), min(len(thresholds), k_best + 31)))
    raw = np.array([raw_quant_error(x, float(thresholds[k])) for k in window])
    np.testing.assert_allclose(errors[window].numpy(), raw, rtol=0.01)
    # The choice is within a couple of bins of the raw-sample optimum, and as good to 0.1%
    # (the curve is flat there: the raw argmin itself moves a few bins with the sample).
    k_raw = window[int(np.argmin(raw))]
    assert abs(k_best - k_raw) <= 2, (k_best, k_raw)
    assert raw[window.index(k_best)] <= raw.min() * 1.001
    # Far candidates (clipping-dominated and rounding-dominated) are worse in model and raw.
    for k in (k_best // 4, k_best // 2, min(len(thresholds) - 1, 2 * k_best)):
        assert errors[k] > errors[k_best]
        assert raw_quant_error(x, float(thresholds[k])) > raw.min()
    assert compute_amax(s, "mse") == min(float(thresholds[k_best]), s.amax)


def test_mse_keeps_heavy_outliers_entropy_drops_them() -> None:
    # Squared error punishes clipping a value of 200 hard; KL barely notices five values.
    s = stats_of(sample("outliers", 200_000, 6))
    assert compute_amax(s, "mse") > 20.0 > compute_amax(s, "entropy")


def test_all_zero_tensor_gives_positive_amax_for_every_method() -> None:
    s = stats_of(torch.zeros(1000))
    for method in ("minmax", "percentile", "entropy", "mse"):
        assert compute_amax(s, method) > 0.0


def test_errors() -> None:
    s = stats_of(torch.randn(100))
    with pytest.raises(ConfigError, match="'kl'.*minmax.*percentile.*entropy.*mse"):
        compute_amax(s, "kl")
    for bad in (0.0, -1.0, 100.5):
        with pytest.raises(ConfigError, match="percentile"):
            compute_amax(s, "percentile", bad)
    with pytest.raises(CalibrationError, match="no values"):
        compute_amax(TensorStats(), "entropy")
    with pytest.raises(ConfigError, match="at least 128"):
        compute_amax(stats_of(torch.randn(100), num_bins=64), "entropy")
