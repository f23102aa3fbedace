"""What tie-aware parity found (:mod:`.tie_parity` computes it): what is allowed, per region, the whole report.

::

    TieTolerance     what a flip may be (tie window, float16 ulps and allowance, output SQNR floor, noise flips)
    RegionResult     one quantize layer (end of a region) or network output vs the reference
    TieParityReport  every region of one backend, the end-to-end cosine beside its noise floor; truthy on PASS

Example:
    >>> r = RegionResult("q1", ("conv1",), 100, flips=2, tie_flips=2, max_steps=1)
    >>> r.passed, r.describe()
    (True, 'q1: 0 non-tie flip(s) of 100 int8 values (max 1 steps, 2 tie flips) (region layers: conv1)')
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from fx2trt_pipeline.validate.compare import format_table

#: ONNX Runtime with its default graph optimizations rewrites QDQ groups into its own integer kernels
#: (QLinearConv...) whose requantization rounds differently; measured on MobileNetV2 0.53 before integer
#: arithmetic, so its cosine is reported against this advisory threshold and never gated.
DEPLOYMENT_ADVISORY_COSINE = 0.99
#: Float16 ulps (of the quantize's input x) within which a float16 value counts as on a tie (see TieTolerance).
#: One ulp is what a float32 summation order moves an INT8 layer's float16 output by; the bias or residual add
#: after it can cancel, leaving that ulp on a smaller x: measured on MobileNetV2 (ONNX Runtime, 24 photo crops)
#: up to 6.9 ulps of x, so 8.
FLOAT16_TIE_ULPS = 8.0
#: One-step flips off the window a float16 region may still show, per int8 value: a cancelling add can carry an
#: ulp further than any fixed window (measured: 1 of 1,204,224 values on MobileNetV2, 36 photo crops at 224 px,
#: ONNX Runtime); a wrong scale or axis flips percents of the values, by many steps.
FLOAT16_FLIP_RATE = 1e-5


@dataclass(frozen=True)
class TieTolerance:
    """What tie-aware parity allows.

    Attributes:
        tie_window: a flip is a tie flip when the reference ``x / s`` is within this many quantization
            steps of ``k + 0.5`` (float32 summation-order differences stay below 1e-4 steps).
        float16_ulps: where the quantize's input ``x`` is float16 (the reference's tensor dtype), the window
            is ``max(tie_window, float16_ulps * ulp16(x) / s)``: a float32 summation order other than the
            simulated exact sum moves an INT8 layer's float16 output by one float16 ulp when it rounds, and
            the bias add or a residual add after it can carry that ulp to a smaller x (cancellation), hence
            several ulps of x (:data:`FLOAT16_TIE_ULPS`).
        float16_flip_rate: in a float16 region, one-step flips off the window are allowed up to this share of
            its int8 values (:data:`FLOAT16_FLIP_RATE`); never in a float32 region, never more than one step.
        output_min_sqnr_db: network outputs computed from reference int8 inputs must match this well.
        noise_flips: how many of the likeliest tie values to flip for the noise floor (0: skip it).
    """

    tie_window: float = 1e-3
    float16_ulps: float = FLOAT16_TIE_ULPS
    float16_flip_rate: float = FLOAT16_FLIP_RATE
    output_min_sqnr_db: float = 60.0
    noise_flips: int = 3


@dataclass(frozen=True)
class RegionResult:
    """One quantize layer (the end of a region) or network output, compared with the reference."""

    name: str
    layers: tuple[str, ...]
    elements: int
    flips: int = 0
    tie_flips: int = 0
    max_steps: int = 0
    sqnr_db: float | None = None
    missing: bool = False
    allowed: int = 0  # one-step non-tie flips a float16 region may show (TieTolerance.float16_flip_rate)

    @property
    def passed(self) -> bool:
        """No flip beyond ties (and the float16 allowance); outputs within the SQNR floor (the caller); present."""
        return not self.missing and self.flips - self.tie_flips <= self.allowed and self.max_steps <= 1

    def describe(self) -> str:
        """One line: what differs here and which layers feed the region."""
        feeds = f" (region layers: {', '.join(self.layers)})" if self.layers else ""
        if self.missing:
            return (
                f"{self.name}: the backend has no quantize layer with this scale here (a missing Q/DQ pair, "
                f"or a different activation scale){feeds}"
            )
        if self.sqnr_db is not None:
            return f"output {self.name}: SQNR {self.sqnr_db:.1f} dB from reference int8 inputs{feeds}"
        return (
            f"{self.name}: {self.flips - self.tie_flips} non-tie flip(s) of {self.elements} int8 values "
            f"(max {self.max_steps} steps, {self.tie_flips} tie flips"
            + (f", {self.allowed} one-step flips allowed for float16" if self.allowed else "")
            + f"){feeds}"
        )


@dataclass
class TieParityReport:
    """Tie-aware parity of one backend; truthy when every region and output passes."""

    backend: str
    regions: list[RegionResult]
    outputs: list[RegionResult]
    end_to_end_cosine: float
    noise_floor_cosine: float | None
    tolerance: TieTolerance = field(default_factory=TieTolerance)
    deployment_cosine: float | None = None

    def _output_ok(self, r: RegionResult) -> bool:
        return r.sqnr_db is not None and r.sqnr_db >= self.tolerance.output_min_sqnr_db

    def failures(self) -> list[RegionResult]:
        """Failing regions (graph order), then failing outputs."""
        return [r for r in self.regions if not r.passed] + [r for r in self.outputs if not self._output_ok(r)]

    def __bool__(self) -> bool:
        return not self.failures()

    def first_failure(self) -> RegionResult | None:
        """The first region (graph order) that differs beyond ties, else a failing output, else None."""
        failures = self.failures()
        return failures[0] if failures else None

    @property
    def tie_flips(self) -> int:
        """Allowed one-step flips on ties, over all regions."""
        return sum(r.tie_flips for r in self.regions)

    def summary(self) -> str:
        """One line: verdict, flips, end-to-end cosine beside the noise floor."""
        floor = "n/a" if self.noise_floor_cosine is None else f"{self.noise_floor_cosine:.6f}"
        first = self.first_failure()
        verdict = "PASS" if first is None else f"FAIL at {first.describe()}"
        deployment = ""
        if self.deployment_cosine is not None:
            relation = ">=" if self.deployment_cosine >= DEPLOYMENT_ADVISORY_COSINE else "<"
            deployment = (
                f"; ONNX Runtime deployment (default graph optimizations) cosine {self.deployment_cosine:.6f}, "
                f"advisory {relation} {DEPLOYMENT_ADVISORY_COSINE}"
            )
        return (
            f"{self.backend} vs simulated cosine {self.end_to_end_cosine:.6f} (one-step flip noise floor "
            f"{floor}); tie-aware parity over {len(self.regions)} quantize layers: {verdict}, "
            f"{self.tie_flips} tie flip(s){self._float16_note()}{deployment}"
        )

    def _float16_note(self) -> str:
        extra = sum(r.flips - r.tie_flips for r in self.regions if r.allowed and r.passed)
        return f", {extra} one-step float16 flip(s) within the allowance" if extra else ""

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values."""
        first = self.first_failure()
        return {
            "backend": self.backend,
            "passed": bool(self),
            "first_failure": first.name if first else None,
            "first_failure_detail": first.describe() if first else None,
            "tie_flips": self.tie_flips,
            "summary": self.summary(),
            "deployment_cosine": self.deployment_cosine,
            "end_to_end_cosine": self.end_to_end_cosine,
            "noise_floor_cosine": self.noise_floor_cosine,
            "tolerance": asdict(self.tolerance),
            "regions": [asdict(r) for r in self.regions],
            "outputs": [asdict(r) for r in self.outputs],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def __str__(self) -> str:
        rows = [
            (r.name, r.elements, r.flips, r.tie_flips, r.max_steps, "ok" if r.passed else "FAIL")
            for r in self.regions
            if r.flips or r.missing
        ]
        table = format_table(("quantize layer", "values", "flips", "tie flips", "max steps", ""), rows) if rows else ""
        return self.summary() + ("\n" + table if table else "")


__all__ = [
    "DEPLOYMENT_ADVISORY_COSINE",
    "FLOAT16_FLIP_RATE",
    "FLOAT16_TIE_ULPS",
    "RegionResult",
    "TieParityReport",
    "TieTolerance",
]
