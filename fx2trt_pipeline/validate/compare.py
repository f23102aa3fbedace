"""Compare the outputs of two runners: one small function per metric, a result object per comparison.

The metrics are computed in float64 on flattened tensors. :func:`compare_outputs` checks every
output against its :class:`Tolerance` and returns a :class:`ComparisonResult` that is truthy when
all pass and prints as a table (like Polygraphy's ``--check-error-stat`` summaries).

Example:
    >>> import torch
    >>> from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs
    >>> ref = {"logits": torch.tensor([1.0, 2.0, 3.0])}
    >>> result = compare_outputs(ref, {"logits": torch.tensor([1.0, 2.0, 3.001])}, Tolerance(min_cosine=0.9999))
    >>> bool(result), round(result["logits"].max_abs_error, 4)
    (True, 0.001)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch

from fx2trt_pipeline.errors import ConfigError


def _flat64(t: torch.Tensor) -> torch.Tensor:
    # A torch.ao qint8 tensor cannot be cast: compare the real values it stands for.
    t = t.dequantize() if t.is_quantized else t
    return t.detach().reshape(-1).to("cpu", torch.float64)


def _pair(ref: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _flat64(ref), _flat64(test)


def cosine_similarity(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Cosine of the angle between the flattened tensors (1.0 when both are all zeros).

    Example:
        >>> cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))  # doctest: +ELLIPSIS
        0.7071...
    """
    a, b = _pair(ref, test)
    na, nb = a.norm(), b.norm()
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float((a @ b) / (na * nb))


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(|ref|^2 / |ref - test|^2)`` in dB (inf if equal).

    Example:
        >>> round(sqnr_db(torch.tensor([1.0, 1.0]), torch.tensor([1.1, 0.9])), 1)
        20.0
    """
    a, b = _pair(ref, test)
    noise = float(((a - b) ** 2).sum())
    signal = float((a**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def max_abs_error(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Largest ``|ref - test|`` (0.0 for empty tensors)."""
    a, b = _pair(ref, test)
    return float((a - b).abs().max()) if a.numel() else 0.0


def mean_abs_error(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Mean ``|ref - test|`` (0.0 for empty tensors)."""
    a, b = _pair(ref, test)
    return float((a - b).abs().mean()) if a.numel() else 0.0


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria for one output; ``None`` disables a check.

    Attributes:
        min_cosine: smallest acceptable cosine similarity.
        min_sqnr_db: smallest acceptable SQNR in dB.
        max_abs: largest acceptable max abs error.
        max_mean_abs: largest acceptable mean abs error.
    """

    min_cosine: float | None = 0.9999
    min_sqnr_db: float | None = None
    max_abs: float | None = None
    max_mean_abs: float | None = None


@dataclass
class OutputStats:
    """Statistics and verdict of one compared output."""

    name: str
    shape: tuple[int, ...]
    cosine: float = math.nan
    sqnr_db: float = math.nan
    max_abs_error: float = math.nan
    mean_abs_error: float = math.nan
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failures


def compare_tensors(name: str, ref: torch.Tensor, test: torch.Tensor, tolerance: Tolerance) -> OutputStats:
    """Statistics of one output and the checks of ``tolerance`` that it fails."""
    stats = OutputStats(name, tuple(ref.shape))
    if tuple(ref.shape) != tuple(test.shape):
        stats.failures.append(f"shape {tuple(test.shape)} != reference {tuple(ref.shape)}")
        return stats
    for label, t in (("reference", ref), ("test", test)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            stats.failures.append(f"{label} has NaN/Inf values")
    stats.cosine = cosine_similarity(ref, test)
    stats.sqnr_db = sqnr_db(ref, test)
    stats.max_abs_error = max_abs_error(ref, test)
    stats.mean_abs_error = mean_abs_error(ref, test)
    # NaN compares False, so "not (x >= limit)" also catches a NaN metric.
    if tolerance.min_cosine is not None and not stats.cosine >= tolerance.min_cosine:
        stats.failures.append(f"cosine {stats.cosine:.6f} < {tolerance.min_cosine}")
    if tolerance.min_sqnr_db is not None and not stats.sqnr_db >= tolerance.min_sqnr_db:
        stats.failures.append(f"SQNR {stats.sqnr_db:.2f} dB < {tolerance.min_sqnr_db} dB")
    if tolerance.max_abs is not None and not stats.max_abs_error <= tolerance.max_abs:
        stats.failures.append(f"max abs error {stats.max_abs_error:.3g} > {tolerance.max_abs}")
    if tolerance.max_mean_abs is not None and not stats.mean_abs_error <= tolerance.max_mean_abs:
        stats.failures.append(f"mean abs error {stats.mean_abs_error:.3g} > {tolerance.max_mean_abs}")
    return stats


@dataclass
class ComparisonResult:
    """Per-output statistics of a comparison; truthy when every output passed and none is missing.

    Attributes:
        outputs: statistics in reference order.
        missing: reference outputs the test runner did not produce.
        ref_name, test_name: labels of the compared runners (for the table header).
    """

    outputs: list[OutputStats]
    missing: list[str] = field(default_factory=list)
    ref_name: str = "reference"
    test_name: str = "test"

    def __bool__(self) -> bool:
        return not self.missing and all(s.passed for s in self.outputs)

    def __getitem__(self, name: str) -> OutputStats:
        for s in self.outputs:
            if s.name == name:
                return s
        raise KeyError(name)

    def __iter__(self) -> Iterator[OutputStats]:
        return iter(self.outputs)

    @property
    def failures(self) -> list[str]:
        """One line per failed check, ``"<output>: <reason>"``."""
        lines = [f"{s.name}: {f}" for s in self.outputs for f in s.failures]
        return lines + [f"{name}: missing from {self.test_name}" for name in self.missing]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (infinite SQNR stays a float: ``json`` writes it as ``Infinity``)."""
        return {
            "ref": self.ref_name,
            "test": self.test_name,
            "passed": bool(self),
            "missing": self.missing,
            "outputs": [dict(asdict(s), passed=s.passed) for s in self.outputs],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        header = f"{self.test_name} vs {self.ref_name}: {'PASS' if self else 'FAIL'}"
        rows = [
            (
                s.name,
                "x".join(map(str, s.shape)) or "scalar",
                f"{s.cosine:.6f}",
                f"{s.sqnr_db:.2f}",
                f"{s.max_abs_error:.3g}",
                f"{s.mean_abs_error:.3g}",
                "ok" if s.passed else "; ".join(s.failures),
            )
            for s in self.outputs
        ]
        rows += [(name, "-", "-", "-", "-", "-", f"missing from {self.test_name}") for name in self.missing]
        return (
            header
            + "\n"
            + format_table(("output", "shape", "cosine", "SQNR dB", "max abs", "mean abs", "status"), rows)
        )


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned plain-text table with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare_outputs(
    ref: Mapping[str, torch.Tensor],
    test: Mapping[str, torch.Tensor],
    tolerances: Tolerance | Mapping[str, Tolerance] | None = None,
    *,
    ref_name: str = "reference",
    test_name: str = "test",
) -> ComparisonResult:
    """Compare every reference output with the test output of the same name.

    Args:
        ref: reference outputs by name (e.g. the simulated INT8 GraphModule).
        test: outputs under test (e.g. the network executor or an engine); extra names are ignored.
        tolerances: one :class:`Tolerance` for all outputs, or a mapping by output name whose
            ``"*"`` entry (else ``Tolerance()``) applies to outputs it does not name.
        ref_name, test_name: labels for the printed table.

    Returns:
        A :class:`ComparisonResult`, truthy when all outputs pass.

    Raises:
        ConfigError: ``tolerances`` names outputs that ``ref`` does not have.

    Example:
        >>> r = compare_outputs({"y": torch.ones(3)}, {"y": torch.zeros(3)}, {"y": Tolerance(max_abs=0.5)})
        >>> bool(r), r.failures
        (False, ['y: cosine 0.000000 < 0.9999', 'y: max abs error 1 > 0.5'])
    """
    if isinstance(tolerances, Mapping):
        unknown = sorted(set(tolerances) - set(ref) - {"*"})
        if unknown:
            raise ConfigError(
                f"tolerances name outputs that the reference does not have: {unknown}; outputs are {sorted(ref)}"
            )
        default = tolerances.get("*", Tolerance())
        per_output = {name: tolerances.get(name, default) for name in ref}
    else:
        per_output = {name: tolerances or Tolerance() for name in ref}
    stats = [compare_tensors(name, ref[name], test[name], per_output[name]) for name in ref if name in test]
    return ComparisonResult(stats, [name for name in ref if name not in test], ref_name, test_name)
