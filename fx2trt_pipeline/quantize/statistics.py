"""Calibration statistics: one pass over the data, every calibrator derived afterwards.

A :class:`TensorStats` holds, for one observed activation (or a group of activations that
share a scale), the exact running max of |x| and a histogram of |x| with ``num_bins`` bins
``[k*w, (k+1)*w)`` whose width ``w`` is a power of two::

    batch -> aminmax (one host sync) -> widen w by doubling if needed -> exact bin counts
                                                       |
    TensorStats(amax, count, log2 w, int64 hist) --merge / all_reduce--> compute_amax(...)

``w`` is always the smallest power of two with ``amax < num_bins * w``, so the state depends only
on the multiset of observed values, never on batch order or on how the data was sharded, and two
states merge exactly: the finer histogram is coarsened to the other's width by summing adjacent
bin pairs (a right shift of the bin index), then the counts add.

Example:
    >>> import torch
    >>> s = TensorStats(num_bins=8)
    >>> s.update(torch.tensor([0.5, -3.0, 1.0]), "conv1.input")
    >>> s.amax, s.bin_width, s.hist.tolist()
    (3.0, 0.5, [0, 1, 1, 0, 0, 0, 1, 0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from fx2trt_pipeline.errors import CalibrationError, ConfigError, InternalError

#: Below this |x| the histogram range stops shrinking (an all-zero tensor still gets a width).
AMAX_FLOOR = 2.0**-40
#: torch.histc counts in the input's float type; float32 counts are exact integers up to 2**24.
_HISTC_CHUNK = 1 << 24
_MAX_BINS = 1 << 20
_LANES = 8
#: The "format" tag of :meth:`TensorStats.to_dict` records.
STATS_FORMAT = "fx2trt.TensorStats/1"


class TensorStats:
    """Exact, mergeable statistics of |x| for one observer.

    Args:
        num_bins: number of histogram bins (2048 matches TensorRT's entropy calibrator).

    Attributes are read-only properties: ``amax`` (exact max |x|), ``count`` (values seen),
    ``bin_width`` (``w``, a power of two; 0.0 before any data), ``log2_width``, ``hist``
    (int64 counts on the CPU), ``num_bins``, ``device`` (where the counts live).

    Example:
        >>> import torch
        >>> a, b = TensorStats(16), TensorStats(16)
        >>> a.update(torch.arange(4.0), "x")
        >>> b.update(torch.tensor([100.0]), "x")
        >>> whole = TensorStats(16)
        >>> whole.update(torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0]), "x")
        >>> a.merge(b) == whole
        True
    """

    __slots__ = ("_amax", "_count", "_hist", "_log2_width", "_num_bins")

    def __init__(self, num_bins: int = 2048) -> None:
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or not 1 <= num_bins <= _MAX_BINS:
            raise ConfigError(f"TensorStats(num_bins=...) must be an int in [1, {_MAX_BINS}], got {num_bins!r}")
        self._num_bins = num_bins
        self._log2_width: int | None = None
        self._amax = 0.0
        self._count = 0
        self._hist = torch.zeros(num_bins, dtype=torch.int64)

    # ----------------------------------------------------------------------------- properties
    @property
    def num_bins(self) -> int:
        """Number of histogram bins."""
        return self._num_bins

    @property
    def amax(self) -> float:
        """Exact running max of |x| over every value seen (0.0 before any data)."""
        return self._amax

    @property
    def count(self) -> int:
        """Number of values seen."""
        return self._count

    @property
    def log2_width(self) -> int | None:
        """``log2(bin_width)``, or None before any data."""
        return self._log2_width

    @property
    def bin_width(self) -> float:
        """Bin width ``w`` (a power of two); 0.0 before any data."""
        return 0.0 if self._log2_width is None else math.ldexp(1.0, self._log2_width)

    @property
    def hist(self) -> torch.Tensor:
        """A CPU copy of the int64 bin counts; bin k holds values in ``[k*w, (k+1)*w)``."""
        return self._hist.to("cpu", copy=True)

    @property
    def device(self) -> torch.device:
        """Device of the internal counts (the device of the first observed tensor)."""
        return self._hist.device

    # ----------------------------------------------------------------------------- updating
    def update(self, x: torch.Tensor, name: str) -> None:
        """Add every value of ``x`` to the statistics.

        Costs one host sync (the batch min/max decides the bin width); counting runs on
        ``x``'s own device.

        Args:
            x: any float tensor (int tensors are converted); empty tensors are ignored.
            name: the observer's name, used in error messages.

        Raises:
            CalibrationError: ``x`` holds NaN or Inf (the statistics are left unchanged).

        Example:
            >>> s = TensorStats(4)
            >>> s.update(torch.tensor([0.1, 0.2]), "fc.input")
            >>> s.count, s.hist.tolist()
            (2, [0, 1, 0, 1])
        """
        if not isinstance(x, torch.Tensor):
            raise CalibrationError(f"Observer {name!r} received a {type(x).__name__}, expected a torch.Tensor.")
        if x.numel() == 0:
            return
        flat = _as_float(x.detach()).reshape(-1)
        lo, hi = torch.aminmax(flat)
        # aminmax propagates NaN and returns +-inf for Inf, so this one sync also checks finiteness.
        lo_f, hi_f = torch.stack((lo, hi)).tolist()
        if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
            raise _non_finite_error(flat, name, tuple(x.shape))
        amax = max(self._amax, -lo_f, hi_f)
        width = log2_width_for(amax, self._num_bins)
        if self._log2_width is not None:
            width = max(width, self._log2_width)  # never narrower than the current width
        counts = _bin_counts(flat, width, self._num_bins, lo_f < 0.0, max(-lo_f, hi_f))
        # Commit only now, so that a failure above leaves the statistics as they were.
        hist = self._hist.to(flat.device) if self._count == 0 else self._hist
        if self._log2_width is not None:
            hist = rebin(hist, width - self._log2_width)
        self._hist = hist + counts.to(hist.device)
        self._log2_width, self._amax, self._count = width, amax, self._count + flat.numel()

    def merge(self, other: TensorStats) -> TensorStats:
        """Add ``other``'s statistics to these, exactly; returns ``self``.

        The result equals the statistics of all values of both, whatever their ranges.

        Raises:
            ConfigError: the two have different ``num_bins``.

        Example:
            >>> a, b = TensorStats(8), TensorStats(8)
            >>> a.update(torch.tensor([1.0]), "x"); b.update(torch.tensor([-7.0]), "x")
            >>> a.merge(b).hist.tolist()
            [0, 1, 0, 0, 0, 0, 0, 1]
        """
        if not isinstance(other, TensorStats):
            raise TypeError(f"TensorStats.merge expects a TensorStats, got {type(other).__name__}")
        if other._num_bins != self._num_bins:
            raise ConfigError(
                f"Cannot merge TensorStats with {other._num_bins} bins into one with {self._num_bins} bins; "
                "collect every shard with the same num_bins."
            )
        if other._count == 0:
            return self
        if self._count == 0:
            self._hist = other._hist.clone()
            self._log2_width, self._amax, self._count = other._log2_width, other._amax, other._count
            return self
        mine_w, theirs_w = int(self._log2_width or 0), int(other._log2_width or 0)  # both set: counts > 0
        width = max(mine_w, theirs_w)
        mine = rebin(self._hist, width - mine_w)
        theirs = rebin(other._hist.to(self._hist.device), width - theirs_w)
        self._hist = mine + theirs
        self._log2_width = width
        self._amax = max(self._amax, other._amax)
        self._count += other._count
        return self

    def clone(self) -> TensorStats:
        """An independent copy (same device)."""
        out = TensorStats(self._num_bins)
        out._log2_width, out._amax, out._count = self._log2_width, self._amax, self._count
        out._hist = self._hist.clone()
        return out

    # ----------------------------------------------------------------------------- (de)serialising
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` restores an equal object.

        Trailing empty bins are left out of ``hist``.

        Example:
            >>> import json
            >>> s = TensorStats(8); s.update(torch.tensor([3.0, 0.25]), "x")
            >>> TensorStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s
            True
        """
        counts = self.hist.tolist()
        while counts and counts[-1] == 0:
            counts.pop()
        return {
            "format": STATS_FORMAT,
            "num_bins": self._num_bins,
            "log2_width": self._log2_width,
            "amax": self._amax,
            "count": self._count,
            "hist": counts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], device: torch.device | None = None) -> TensorStats:
        """Rebuild statistics written by :meth:`to_dict` (counts on ``device``, default CPU).

        Raises:
            CalibrationError: the dict is not a consistent TensorStats record.
        """
        where = "TensorStats.from_dict"
        if not isinstance(data, Mapping) or data.get("format") != STATS_FORMAT:
            raise CalibrationError(f"{where}: not a {STATS_FORMAT} record (format={_get(data, 'format')!r}).")
        missing = [k for k in ("num_bins", "log2_width", "amax", "count", "hist") if k not in data]
        if missing:
            raise CalibrationError(f"{where}: record lacks {missing}.")
        out = cls(int(data["num_bins"]))
        counts = [int(c) for c in data["hist"]]
        count, amax = int(data["count"]), float(data["amax"])
        width = data["log2_width"]
        problems = []
        if len(counts) > out._num_bins:
            problems.append(f"{len(counts)} counts for {out._num_bins} bins")
        if any(c < 0 for c in counts) or sum(counts) != count:
            problems.append(f"counts are negative or do not sum to count={count}")
        if count == 0 and (width is not None or amax != 0.0):
            problems.append("an empty record must have log2_width=None and amax=0")
        if count > 0 and (width is None or int(width) != log2_width_for(amax, out._num_bins)):
            problems.append(f"log2_width={width} does not fit amax={amax!r}")
        if problems:
            raise CalibrationError(f"{where}: inconsistent record: " + "; ".join(problems) + ".")
        hist = torch.zeros(out._num_bins, dtype=torch.int64)
        hist[: len(counts)] = torch.tensor(counts, dtype=torch.int64)
        out._hist = hist.to(device) if device is not None else hist
        out._log2_width = None if width is None else int(width)
        out._amax, out._count = amax, count
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        return (
            self._num_bins == other._num_bins
            and self._log2_width == other._log2_width
            and self._amax == other._amax
            and self._count == other._count
            and torch.equal(self._hist.cpu(), other._hist.cpu())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"TensorStats(num_bins={self._num_bins}, count={self._count}, amax={self._amax!r}, "
            f"bin_width={self.bin_width!r}, device={self.device})"
        )


def log2_width_for(amax: float, num_bins: int) -> int:
    """The smallest integer e with ``max(amax, AMAX_FLOOR) < num_bins * 2**e``.

    Example:
        >>> log2_width_for(3.0, 8), log2_width_for(4.0, 8)
        (-1, 0)
    """
    value = max(float(amax), AMAX_FLOOR)
    _, exp = math.frexp(value)  # value < 2**exp, exactly
    e = exp - (num_bins.bit_length() - 1)  # num_bins >= 2**(bit_length-1), so e always fits
    # e - 1 fits only when num_bins is not a power of two; e - 2 never does.
    return e - 1 if value < math.ldexp(float(num_bins), e - 1) else e


def rebin(hist: torch.Tensor, doublings: int) -> torch.Tensor:
    """Counts of ``hist`` at ``2**doublings`` times the bin width (adjacent bins summed).

    Example:
        >>> rebin(torch.tensor([1, 2, 3, 4]), 1).tolist()
        [3, 7, 0, 0]
    """
    if doublings < 0:
        raise InternalError(f"rebin cannot refine a histogram (doublings={doublings})")
    if doublings == 0:
        return hist
    n = hist.numel()
    # Beyond bit_length doublings every bin maps to bin 0; capping avoids huge shifts.
    shift = min(doublings, n.bit_length())
    target = torch.arange(n, device=hist.device) >> shift
    return torch.zeros_like(hist).index_add_(0, target, hist)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype in (torch.float32, torch.float64):
        return x
    if x.is_floating_point() or x.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16):
        return x.to(torch.float32)  # exact for every value of these types
    return x.to(torch.float64)


def counting_method(device_type: str, deterministic: bool) -> str:
    """How :func:`_bin_counts` counts on a device: ``"lanes"``, ``"histc"`` or ``"bincount"``.

    CPU: integer bincount over interleaved lanes (fastest there). CUDA and other devices: ``histc``,
    which needs no host sync, except under ``torch.use_deterministic_algorithms(True)``, where CUDA's
    ``histc`` raises (its atomic float adds are non-deterministic) and plain integer ``bincount``,
    deterministic and exact, is used instead.

    Example:
        >>> counting_method("cpu", False), counting_method("cuda", False), counting_method("cuda", True)
        ('lanes', 'histc', 'bincount')
    """
    if device_type == "cpu":
        return "lanes"
    return "bincount" if deterministic else "histc"


def _bin_counts(flat: torch.Tensor, log2_width: int, num_bins: int, signed: bool, batch_amax: float) -> torch.Tensor:
    """Exact int64 counts of floor(|flat| / 2**log2_width), all of which must be < num_bins."""
    # The range check is on the batch's exact max |x|, known on the host already: histc silently drops
    # out-of-range values and the lane layout would spill them into the next lane, so a check of the
    # counts afterwards could never fire. Scaling by a power of two is exact, so this is exact too.
    if not math.ldexp(batch_amax, -log2_width) < num_bins:
        raise InternalError(
            f"max |x| = {batch_amax!r} falls beyond {num_bins} bins of width 2**{log2_width}; width rule violated"
        )
    # Multiplying by a power of two is exact, so truncating the product is exactly floor(|x|/w).
    scaled = torch.mul(flat, math.ldexp(1.0, -log2_width))
    method = counting_method(flat.device.type, torch.are_deterministic_algorithms_enabled())
    if method == "lanes":
        return _counts_bincount(scaled, num_bins, signed)
    if method == "bincount":
        return _counts_plain_bincount(scaled, num_bins, signed)
    return _counts_histc(scaled, num_bins, signed)


def _counts_bincount(scaled: torch.Tensor, num_bins: int, signed: bool) -> torch.Tensor:
    # Integer bincount counts in int64 natively and beats histc ~2x on a few CPU cores. Its loop
    # increments one counter per value; runs of equal bins (the zeros after a ReLU) serialise on
    # that counter, so consecutive values go to _LANES interleaved copies of the histogram.
    wide = _LANES * num_bins > (1 << 15) - 1
    idx = scaled.to(torch.int32 if wide else torch.int16)
    if signed:
        idx.abs_()  # trunc(-y) == -trunc(y), so |trunc(y)| == floor(|y|)
    body = idx.numel() // _LANES * _LANES  # a ragged tail stays in lane 0
    idx[:body].view(-1, _LANES).add_(torch.arange(0, _LANES * num_bins, num_bins, dtype=idx.dtype))
    return torch.bincount(idx, minlength=_LANES * num_bins).view(_LANES, num_bins).sum(0)


def _counts_plain_bincount(scaled: torch.Tensor, num_bins: int, signed: bool) -> torch.Tensor:
    # Deterministic on CUDA (no weights), exact int64 counts; it syncs to size its output, which the
    # deterministic mode accepts. A bin index >= num_bins would lengthen the output: checked, not sliced.
    idx = scaled.to(torch.int64)
    if signed:
        idx.abs_()
    counts = torch.bincount(idx, minlength=num_bins)
    if counts.numel() != num_bins:
        raise InternalError(f"bin index {counts.numel() - 1} beyond {num_bins} bins; width rule violated")
    return counts


def _counts_histc(scaled: torch.Tensor, num_bins: int, signed: bool) -> torch.Tensor:
    # bincount on CUDA syncs (it reads min/max back); histc over a fixed range does not. Its float
    # counts are exact integers only up to 2**24 per call, hence the chunks. With a power-of-two
    # number of bins over [0, bins) the kernel's bin arithmetic is exact for these values.
    if signed:
        scaled.abs_()  # a temporary of ours
    bins = 1 << (num_bins - 1).bit_length()
    counts = torch.zeros(num_bins, dtype=torch.int64, device=scaled.device)
    for chunk in scaled.split(_HISTC_CHUNK):
        counts += torch.histc(chunk, bins=bins, min=0, max=bins)[:num_bins].to(torch.int64)
    return counts


def _non_finite_error(flat: torch.Tensor, name: str, shape: tuple[int, ...]) -> CalibrationError:
    n_nan = int(torch.isnan(flat).sum())
    n_inf = int(torch.isinf(flat).sum())
    return CalibrationError(
        f"Observer {name!r} saw {n_nan} NaN and {n_inf} Inf value(s) in a calibration batch of shape "
        f"{list(shape)} ({flat.numel()} values). Check the calibration inputs (normalisation, NaN in the "
        "data, wrong dtype) and whether a layer upstream of this tensor overflows (e.g. float16 "
        "activations, exploding weights); the statistics were left unchanged."
    )


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, Mapping) else type(data).__name__
