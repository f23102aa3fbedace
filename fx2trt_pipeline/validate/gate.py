"""The CI accuracy gate: engine vs simulated parity and the INT8 budget, as an exit code.

Two checks on an :class:`~fx2trt_pipeline.validate.accuracy.AccuracyResult` (metric values in [0, 1],
so 0.003 is 0.3 mAP points):

* parity: ``|metric(engine) - metric(simulated)| <= engine_tolerance``; the engine must compute the
  model the quantizer simulated, so this is tight;
* budget: ``metric(FP32) - metric(INT8) <= int8_budget``; the price of quantization.

``check_parity`` returns a :class:`GateResult` (truthy on pass, one-line ``reason``);
``enforce_parity`` raises :class:`~fx2trt_pipeline.errors.AccuracyGateError`; ``run_gate`` / ``main``
print the line and return the exit code for a CLI (``fx2trt validate``,
``python -m fx2trt_pipeline.validate.gate``).

Example:
    >>> from fx2trt_pipeline.validate.gate import check_parity
    >>> gate = check_parity(result, engine_tolerance=0.002, int8_budget=0.003)   # doctest: +SKIP
    >>> print(gate.reason)                                                       # doctest: +SKIP
    PASS mAP: engine (network_executor) 0.5730 vs simulated 0.5730 (|delta| 0.0000 <= 0.0020); ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from fx2trt_pipeline.errors import AccuracyGateError, ConfigError, ExitCode, Fx2TrtError
from fx2trt_pipeline.validate.accuracy import AccuracyResult

#: A real engine may reorder float accumulations; 0.2 mAP points covers that, not a wrong layer.
DEFAULT_ENGINE_TOLERANCE = 0.002
#: The project's INT8 target: at most 0.3 mAP points below FP32.
DEFAULT_INT8_BUDGET = 0.003
#: Exit codes of :func:`run_gate` / :func:`main`.
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = ExitCode.PASS, ExitCode.GATE_FAILED, ExitCode.BAD_INPUT


@dataclass(frozen=True)
class GateResult:
    """Verdict of :func:`check_parity`; truthy when both checks pass.

    Attributes:
        passed: both checks passed.
        reason: one line naming every failed check with its numbers (or the passing numbers).
        metric: the compared metric.
        fp32, simulated, engine: its values (``engine`` is ``None`` when no engine backend ran).
        engine_backend: which backend stood for the engine.
        engine_delta, int8_drop: ``|engine - simulated|`` and ``fp32 - simulated``.
        engine_tolerance, int8_budget: the thresholds used.
    """

    passed: bool
    reason: str
    metric: str
    fp32: float
    simulated: float
    engine: float | None
    engine_backend: str | None
    engine_delta: float | None
    int8_drop: float
    engine_tolerance: float
    int8_budget: float

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)

    def raise_for_failure(self) -> GateResult:
        """Raise :class:`AccuracyGateError` with :attr:`reason` unless passed; returns ``self``."""
        if not self.passed:
            raise AccuracyGateError(self.reason)
        return self


def _check_threshold(name: str, value: float, allow_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or \
            (value < 0 and not allow_negative):
        kind = "a number" if allow_negative else "a non-negative number"
        raise ConfigError(f"{name} must be {kind} in metric units (0.003 = 0.3 points), got {value!r}")
    return float(value)


def check_parity(result: AccuracyResult, engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE,
                 int8_budget: float = DEFAULT_INT8_BUDGET, *, metric: str | None = None,
                 require_engine: bool = True) -> GateResult:
    """Gate a validation result: engine parity with the simulated model and the INT8 budget.

    Args:
        result: from :func:`~fx2trt_pipeline.validate.accuracy.validate_detector` (or ``_classifier``).
        engine_tolerance: largest allowed ``|engine - simulated|`` (metric units: 0.002 = 0.2 points).
        int8_budget: largest allowed ``fp32 - simulated`` (negative: INT8 must beat FP32 by that much).
        metric: metric to compare (default: the result's primary metric, ``mAP`` / ``top1``).
        require_engine: fail when no engine backend ran (a gate that cannot check parity must not pass).

    Returns:
        A :class:`GateResult`, truthy when both checks pass; ``reason`` is one line.

    Raises:
        ConfigError: a negative/NaN threshold, or ``metric`` missing from the result.

    Example:
        >>> gate = check_parity(result, engine_tolerance=0.002, int8_budget=-1.0)  # doctest: +SKIP
        >>> bool(gate), gate.reason                                               # doctest: +SKIP
        (False, 'FAIL mAP: INT8 mAP drop fp32 0.5729 - simulated 0.5730 = -0.0001 > budget -1.0000')
    """
    tol = _check_threshold("engine_tolerance", engine_tolerance)
    budget = _check_threshold("int8_budget", int8_budget, allow_negative=True)
    name = metric or result.metric
    fp32, sim = result.value("fp32", name), result.value("simulated", name)
    if fp32 is None or sim is None:
        raise ConfigError(f"The result has no {name!r} metric for fp32/simulated; it has "
                          f"{sorted(result.runs['simulated'].metrics)}.")
    backend = result.engine_backend
    engine = result.value(backend, name) if backend is not None else None
    delta = None if engine is None else abs(engine - sim)
    drop = fp32 - sim
    failures: list[str] = []
    if engine is None:
        if require_engine:
            failures.append(f"no engine backend ran ({result.engine_reason})")
    elif not delta <= tol + 1e-12:  # "not <=" also fails NaN
        failures.append(f"engine ({backend}) {name} {engine:.4f} vs simulated {sim:.4f}: |delta| {delta:.4f} "
                        f"> tolerance {tol:.4f}")
    if not drop <= budget + 1e-12:
        failures.append(f"INT8 {name} drop fp32 {fp32:.4f} - simulated {sim:.4f} = {drop:.4f} "
                        f"> budget {budget:.4f}")
    if failures:
        reason = f"FAIL {name}: " + "; ".join(failures)
    else:
        parity = "engine not checked" if engine is None else \
            f"engine ({backend}) {engine:.4f} vs simulated {sim:.4f} (|delta| {delta:.4f} <= {tol:.4f})"
        reason = (f"PASS {name}: {parity}; fp32 {fp32:.4f} - simulated {sim:.4f} = {drop:.4f} "
                  f"<= budget {budget:.4f}")
    return GateResult(not failures, reason, name, fp32, sim, engine, backend, delta, drop, tol, budget)


def enforce_parity(result: AccuracyResult, engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE,
                   int8_budget: float = DEFAULT_INT8_BUDGET, **kwargs: Any) -> GateResult:
    """:func:`check_parity`, raising :class:`AccuracyGateError` (message: the one-line reason) on failure.

    Example:
        >>> enforce_parity(result, int8_budget=0.003)   # doctest: +SKIP
    """
    return check_parity(result, engine_tolerance, int8_budget, **kwargs).raise_for_failure()


def load_result(source: AccuracyResult | Mapping[str, Any] | str | Path) -> AccuracyResult:
    """An :class:`AccuracyResult` from itself, its ``to_dict()`` or a JSON file holding that dict.

    Raises:
        ConfigError: the file is missing, not JSON, or not a saved result.
    """
    if isinstance(source, AccuracyResult):
        return source
    if isinstance(source, Mapping):
        return AccuracyResult.from_dict(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot read the accuracy result {path}: {exc}. Write it with "
                          "AccuracyResult.to_dict() (e.g. main(['--demo', '--save-result', PATH])).") from exc
    return AccuracyResult.from_dict(data)


def run_gate(result: AccuracyResult | Mapping[str, Any] | str | Path,
             engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE, int8_budget: float = DEFAULT_INT8_BUDGET, *,
             metric: str | None = None, require_engine: bool = True, stream: TextIO | None = None) -> int:
    """Gate a result and print the one-line verdict; the exit code for a CLI.

    Args:
        result: an :class:`AccuracyResult`, its dict, or a JSON file with that dict.
        engine_tolerance, int8_budget, metric, require_engine: as in :func:`check_parity`.
        stream: where the verdict line goes (default stdout).

    Returns:
        ``0`` pass, ``1`` gate failed, ``2`` the result or thresholds are invalid (message printed).

    Example:
        >>> raise SystemExit(run_gate("accuracy.json", int8_budget=0.003))   # doctest: +SKIP
    """
    out = stream or sys.stdout
    try:
        gate = check_parity(load_result(result), engine_tolerance, int8_budget, metric=metric,
                            require_engine=require_engine)
    except Fx2TrtError as exc:
        print(f"ERROR {exc}", file=out)
        return EXIT_ERROR
    print(gate.reason, file=out)
    return EXIT_PASS if gate else EXIT_FAIL


def build_parser() -> argparse.ArgumentParser:
    """The gate's argument parser (a CLI can embed it as a subcommand)."""
    p = argparse.ArgumentParser(prog="fx2trt-accuracy-gate", description=__doc__.split("\n\n")[0])
    p.add_argument("result", nargs="?", help="JSON written by AccuracyResult.to_dict() (omit with --demo)")
    p.add_argument("--demo", action="store_true", help="validate the shipped demo detector now")
    p.add_argument("--calibrator", default="mse", help="--demo: calibrator (minmax/percentile/entropy/mse)")
    p.add_argument("--percentile", type=float, default=99.99, help="--demo: its percentile")
    p.add_argument("--max-images", type=int, default=None, help="--demo: score only the first N val images")
    p.add_argument("--backend", action="append", default=None, help="--demo: engine backend(s); default auto")
    p.add_argument("--save-result", default=None, help="--demo: also write the AccuracyResult JSON here")
    p.add_argument("--engine-tolerance", type=float, default=DEFAULT_ENGINE_TOLERANCE)
    p.add_argument("--int8-budget", type=float, default=DEFAULT_INT8_BUDGET)
    p.add_argument("--metric", default=None, help="metric to gate (default: the result's primary one)")
    p.add_argument("--allow-no-engine", action="store_true", help="pass without an engine backend")
    return p


def main(argv: Sequence[str] | None = None, stream: TextIO | None = None) -> int:
    """CLI entry point: gate a saved result or (``--demo``) validate the demo detector; returns the exit code.

    Example:
        >>> main(["accuracy.json", "--int8-budget", "0.003"])   # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    out = stream or sys.stdout
    if args.demo == (args.result is not None):
        print("ERROR give either a result JSON or --demo", file=out)
        return EXIT_ERROR
    source: Any = args.result
    if args.demo:
        from fx2trt_pipeline.atomic_io import atomic_write_bytes
        from fx2trt_pipeline.validate.demo_detector import validate_demo_detector

        try:
            source = validate_demo_detector(args.calibrator, args.percentile, max_images=args.max_images,
                                            backends=args.backend or "auto")
        except Fx2TrtError as exc:
            print(f"ERROR {exc}", file=out)
            return EXIT_ERROR
        print(source, file=out)
        if args.save_result:
            atomic_write_bytes(Path(args.save_result), json.dumps(source.to_dict(), indent=2).encode())
    return run_gate(source, args.engine_tolerance, args.int8_budget, metric=args.metric,
                    require_engine=not args.allow_no_engine, stream=out)


if __name__ == "__main__":
    sys.exit(main())
