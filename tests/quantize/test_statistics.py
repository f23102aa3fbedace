"""TensorStats: exact |x| histograms against numpy, exact merges, serialisation, bad data."""

import json
import math

import numpy as np
import pytest
import torch

from fx2trt_pipeline.errors import CalibrationError, ConfigError, InternalError
from fx2trt_pipeline.quantize.statistics import (
    AMAX_FLOOR,
    TensorStats,
    _bin_counts,
    _counts_bincount,
    _counts_histc,
    _counts_plain_bincount,
    counting_method,
    log2_width_for,
    rebin,
)


def reference_hist(values: np.ndarray, width: float, num_bins: int) -> np.ndarray:
    """Independent reference: floor(|x| / w) then bincount, in float64 / int64 numpy."""
    idx = np.floor(np.abs(values.astype(np.float64)) / width).astype(np.int64)
    assert idx.max() < num_bins, "test data outside the histogram range"
    return np.bincount(idx, minlength=num_bins)


def stats_of(*tensors: torch.Tensor, num_bins: int = 2048) -> TensorStats:
    s = TensorStats(num_bins)
    for t in tensors:
        s.update(t, "obs")
    return s


def _edge_values() -> torch.Tensor:
    """Values exactly on bin edges k*w and one ulp below them, where an inexact rule would slip."""
    w = 2.0**-3  # num_bins=64, amax 7.5 -> w = 1/8
    edges = torch.arange(0, 60, dtype=torch.float32) * w
    below = torch.nextafter(edges[1:], torch.zeros(()))
    return torch.cat((edges, -edges, below, -below, torch.tensor([7.5])))


DATA = {
    "gaussian": lambda g: torch.randn(4, 3, 17, 19, generator=g),
    "relu": lambda g: torch.relu(torch.randn(5000, generator=g)) * 3.0,
    "edges": lambda g: _edge_values(),
    "integers": lambda g: torch.randint(-300, 300, (4000,), generator=g).float(),
    "float64": lambda g: torch.randn(3000, generator=g, dtype=torch.float64) * 1e-3,
    "float16": lambda g: (torch.randn(3000, generator=g) * 100).half(),
    "int64": lambda g: torch.randint(-(2**40), 2**40, (1000,), generator=g),
    "transposed": lambda g: torch.randn(64, 48, generator=g).t(),
}


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("num_bins", [64, 2048, 1000, 5000])
def test_counts_match_numpy_reference(kind: str, num_bins: int) -> None:
    x = DATA[kind](torch.Generator().manual_seed(1))
    s = stats_of(x, num_bins=num_bins)
    values = x.double().numpy().ravel()
    amax = float(np.abs(values).max())
    assert s.amax == amax
    assert s.count == values.size
    # The width rule: the smallest power of two with amax < num_bins * w.
    assert amax < num_bins * s.bin_width and not amax < num_bins * s.bin_width / 2
    assert s.bin_width == 2.0**s.log2_width
    np.testing.assert_array_equal(s.hist.numpy(), reference_hist(values, s.bin_width, num_bins))
    assert s.hist.dtype == torch.int64


@pytest.mark.parametrize("signed", [False, True])
def test_histc_path_matches_bincount_path(signed: bool) -> None:
    # The non-CPU counting path (histc in float), run on CPU tensors: same exact integers.
    x = _edge_values() if signed else _edge_values().abs()
    scaled = x * 8.0  # w = 1/8
    for num_bins in (64, 100):
        a = _counts_bincount(scaled.clone(), num_bins, signed)
        b = _counts_histc(scaled.clone(), num_bins, signed)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("signed", [False, True])
def test_deterministic_bincount_path_matches_reference(signed: bool) -> None:
    # The counting CUDA uses under torch.use_deterministic_algorithms(True), run on CPU tensors.
    x = _edge_values() if signed else _edge_values().abs()
    for num_bins in (64, 100):
        counts = _counts_plain_bincount(x * 8.0, num_bins, signed)
        np.testing.assert_array_equal(counts.numpy(), reference_hist(x.numpy(), 1 / 8, num_bins))
        torch.testing.assert_close(counts, _counts_histc(x * 8.0, num_bins, signed), rtol=0, atol=0)


def test_counting_method_avoids_histc_in_deterministic_mode() -> None:
    # CUDA's histc raises under torch.use_deterministic_algorithms(True); bincount does not.
    assert counting_method("cuda", deterministic=True) == "bincount"
    assert counting_method("cuda", deterministic=False) == "histc"
    assert counting_method("cpu", deterministic=True) == counting_method("cpu", deterministic=False) == "lanes"
    x = torch.randn(3000, generator=torch.Generator().manual_seed(3))
    free = stats_of(x, num_bins=100)
    torch.use_deterministic_algorithms(True)
    try:
        assert stats_of(x, num_bins=100) == free
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("counter", [_counts_bincount, _counts_histc, _counts_plain_bincount])
def test_out_of_range_values_are_an_error_not_dropped(counter) -> None:
    # 9.0 at w = 1 needs bin 9 of 8: histc would drop it and the lane layout would count it in the next
    # lane; the guard checks the batch max before counting, on every device and method.
    x = torch.tensor([1.0, 9.0])
    with pytest.raises(InternalError, match=r"max \|x\| = 9.0 falls beyond 8 bins"):
        _bin_counts(x, 0, 8, False, 9.0)
    if counter is _counts_plain_bincount:
        with pytest.raises(InternalError, match="beyond 8 bins"):
            counter(x, 8, False)
    else:  # what the guard protects against: histc loses 9.0, the lanes count it in bin 1 of lane 1
        counts = counter(x, 8, False)
        assert counts.numel() == 8 and (int(counts.sum()) == 1 or int(counts[1]) == 2)


def test_more_than_2_pow_24_zeros_are_counted_exactly() -> None:
    # float32 counters stop at 2**24 (16777216 + 1 == 16777216): post-ReLU zeros reach that.
    n_zero = (1 << 24) + 3_000_001
    x = torch.zeros(n_zero + 4)
    x[-4:] = torch.tensor([1.0, 2.0, -3.0, 0.25])
    s = stats_of(x, num_bins=2048)
    assert s.count == n_zero + 4
    assert s.hist[0].item() == n_zero
    assert int(s.hist.sum()) == n_zero + 4
    expected = reference_hist(x[-4:].numpy(), s.bin_width, 2048)
    expected[0] += n_zero
    np.testing.assert_array_equal(s.hist.numpy(), expected)
    # The histc (CUDA) path chunks its float counts for the same reason.
    counts = _counts_histc(x * 2.0**-s.log2_width, 2048, signed=True)
    np.testing.assert_array_equal(counts.numpy(), expected)


def test_width_doubles_when_a_batch_exceeds_the_range() -> None:
    s = TensorStats(16)
    s.update(torch.tensor([0.1, 0.9]), "x")
    assert s.bin_width == 2.0**-4
    s.update(torch.tensor([-100.0]), "x")
    assert s.bin_width == 8.0 and s.amax == 100.0
    np.testing.assert_array_equal(s.hist.numpy(), reference_hist(np.array([0.1, 0.9, 100.0]), 8.0, 16))


def test_log2_width_for_boundaries() -> None:
    for n in (1, 7, 8, 100, 2048):
        for amax in (1e-30, 0.3, 1.0, 4.0, 7.999, 8.0, 1000.0, 3.0e38):
            e = log2_width_for(amax, n)
            a = max(amax, AMAX_FLOOR)
            assert a < n * 2.0**e and not a < n * 2.0 ** (e - 1), (n, amax, e)


def test_rebin_sums_adjacent_bins() -> None:
    h = torch.arange(1, 9, dtype=torch.int64)
    assert rebin(h, 1).tolist() == [3, 7, 11, 15, 0, 0, 0, 0]
    assert rebin(h, 2).tolist() == [10, 26, 0, 0, 0, 0, 0, 0]
    assert rebin(h, 100).tolist() == [36, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("num_bins", [2048, 100])
def test_merge_of_halves_equals_whole(num_bins: int) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20000, generator=g)
    whole = stats_of(x, num_bins=num_bins)
    a, b = stats_of(x[:10000], num_bins=num_bins), stats_of(x[10000:], num_bins=num_bins)
    assert a.clone().merge(b) == whole
    assert b.clone().merge(a) == whole


def test_merge_with_very_different_ranges_and_orders() -> None:
    g = torch.Generator().manual_seed(4)
    small = torch.rand(5000, generator=g) * 1e-3
    big = torch.randn(5000, generator=g) * 1e4
    whole = stats_of(torch.cat((small, big)))
    assert stats_of(small).merge(stats_of(big)) == whole
    assert stats_of(big).merge(stats_of(small)) == whole
    # Batch order and batch splitting do not matter either.
    assert stats_of(small, big) == whole and stats_of(big, small) == whole
    pieces = list(torch.cat((big, small)).split(777))
    assert stats_of(*pieces) == whole
    assert whole.hist.sum().item() == whole.count == 10000


def test_merge_edge_cases() -> None:
    x = torch.tensor([1.0, -2.0])
    s = stats_of(x)
    assert s.clone().merge(TensorStats()) == s
    assert TensorStats().merge(s) == s
    assert TensorStats().merge(TensorStats()) == TensorStats()
    with pytest.raises(ConfigError, match="512 bins"):
        s.merge(TensorStats(512))


def test_to_dict_round_trip_is_exact() -> None:
    g = torch.Generator().manual_seed(5)
    s = stats_of(torch.randn(3000, generator=g) * math.pi, torch.tensor([1e-7, 123.456]))
    back = TensorStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.amax == s.amax and back.bin_width == s.bin_width
    assert TensorStats.from_dict(json.loads(json.dumps(TensorStats(64).to_dict()))) == TensorStats(64)
    assert back != stats_of(torch.tensor([1.0]))


def test_from_dict_rejects_inconsistent_records() -> None:
    good = stats_of(torch.tensor([0.5, 3.0])).to_dict()
    with pytest.raises(CalibrationError, match="do not sum"):
        TensorStats.from_dict({**good, "count": good["count"] + 1})
    with pytest.raises(CalibrationError, match="does not fit"):
        TensorStats.from_dict({**good, "log2_width": good["log2_width"] + 1})
    with pytest.raises(CalibrationError, match="format"):
        TensorStats.from_dict({k: v for k, v in good.items() if k != "format"})


@pytest.mark.parametrize("bad, n_nan, n_inf", [(float("nan"), 3, 0), (float("inf"), 0, 3), (-float("inf"), 0, 3)])
def test_non_finite_values_name_the_observer(bad: float, n_nan: int, n_inf: int) -> None:
    s = stats_of(torch.tensor([1.0, 2.0]))
    before = s.clone()
    x = torch.ones(2, 5)
    x[0, :3] = bad
    with pytest.raises(CalibrationError) as info:
        s.update(x, "layer3.0.conv1.input")
    msg = str(info.value)
    assert "'layer3.0.conv1.input'" in msg
    assert f"{n_nan} NaN and {n_inf} Inf" in msg
    assert "normalisation" in msg and "overflow" in msg
    assert s == before


def test_zero_and_empty_tensors() -> None:
    s = stats_of(torch.zeros(10))
    assert s.amax == 0.0 and s.count == 10 and s.hist[0].item() == 10
    assert s.bin_width > 0 and 2048 * s.bin_width > AMAX_FLOOR
    s.update(torch.empty(0), "x")
    assert s.count == 10
    assert TensorStats().bin_width == 0.0 and TensorStats().log2_width is None


def test_bad_num_bins() -> None:
    for bad in (0, -3, 2.0, True, 1 << 21):
        with pytest.raises(ConfigError, match="num_bins"):
            TensorStats(bad)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_counts_under_deterministic_algorithms() -> None:
    # CUDA's histc raises in this mode; the statistics count with bincount instead, to the same integers.
    x = torch.randn(4, 16, 33, 31, generator=torch.Generator().manual_seed(7)) * 5
    cpu = stats_of(x)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="histc"):
            torch.histc(x.cuda(), bins=8, min=0, max=8)
        assert stats_of(x.cuda()) == cpu
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_update_equals_cpu_update() -> None:
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(8, 16, 32, 32, generator=g) * (10.0**k) for k in range(3)]
    cpu = stats_of(*xs)
    cuda = stats_of(*(x.cuda() for x in xs))
    assert cuda.device.type == "cuda"
    assert cuda == cpu
    zeros = torch.zeros((1 << 24) + 5, device="cuda")
    assert stats_of(zeros).hist[0].item() == (1 << 24) + 5
