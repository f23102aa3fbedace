"""The CI accuracy gate on a real validation result (demo detector, val subset, MSE calibration)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fx2trt_pipeline.errors import AccuracyGateError, ConfigError
from fx2trt_pipeline.validate.accuracy import AccuracyResult, BackendRun
from fx2trt_pipeline.validate.gate import (
    GateSpec,
    check_parity,
    enforce_parity,
    gate_evaluation,
    load_result,
)
from fx2trt_pipeline.validate.results import BackendRow, Evaluation
from tests.validate.test_accuracy import TEST_INT8_BUDGET, cached_result

SANE = {"engine_tolerance": 0.002, "int8_budget": TEST_INT8_BUDGET}


@pytest.fixture(scope="module")
def result() -> AccuracyResult:
    return cached_result()


def _with_engine_metric(result: AccuracyResult, value: float) -> AccuracyResult:
    """The real result with the engine backend's mAP replaced (a diverging engine)."""
    runs = dict(result.runs)
    backend = result.engine_backend or "network_executor"
    runs[backend] = BackendRun(backend, {**result.runs["simulated"].metrics, "mAP": value}, 0.0)
    return dataclasses.replace(result, runs=runs, engine_backend=backend)


def test_gate_passes_with_sane_thresholds(result: AccuracyResult) -> None:
    gate = check_parity(result, **SANE)
    assert gate, gate.reason
    assert gate.reason.startswith("PASS mAP") and "\n" not in gate.reason
    assert gate.fp32 == result.fp32 and gate.simulated == result.simulated and gate.engine == result.engine
    assert enforce_parity(result, **SANE) == gate


def test_gate_fails_with_impossible_budget_naming_numbers(result: AccuracyResult) -> None:
    gate = check_parity(result, engine_tolerance=0.002, int8_budget=-1.0)
    assert not gate
    line = gate.reason
    assert "\n" not in line and line.startswith("FAIL mAP")
    assert f"{result.fp32:.4f}" in line and f"{result.simulated:.4f}" in line and "-1.0000" in line
    assert "engine" not in line  # parity itself passed: only the failed check is named
    with pytest.raises(AccuracyGateError, match="budget -1.0000"):
        enforce_parity(result, engine_tolerance=0.002, int8_budget=-1.0)


def test_gate_names_both_failures_in_one_line(result: AccuracyResult) -> None:
    diverged = _with_engine_metric(result, result.simulated - 0.05)
    gate = check_parity(diverged, engine_tolerance=0.0, int8_budget=-1.0)
    assert not gate and "\n" not in gate.reason
    assert f"|delta| {0.05:.4f} > tolerance 0.0000" in gate.reason and "budget -1.0000" in gate.reason
    assert gate.engine_delta == pytest.approx(0.05)


def test_gate_without_engine_backend(result: AccuracyResult) -> None:
    no_engine = dataclasses.replace(result, engine_backend=None, engine_reason="no GPU and no TensorRT")
    gate = check_parity(no_engine, **SANE)
    assert not gate and "no engine backend ran (no GPU and no TensorRT)" in gate.reason
    assert check_parity(no_engine, **SANE, require_engine=False)


def test_gate_rejects_bad_thresholds(result: AccuracyResult) -> None:
    with pytest.raises(ConfigError, match="engine_tolerance"):
        check_parity(result, engine_tolerance=-0.1)
    with pytest.raises(ConfigError, match="int8_budget"):
        check_parity(result, int8_budget=float("nan"))
    with pytest.raises(ConfigError, match="top1"):
        check_parity(result, metric="top1")


def test_saved_result_gates_like_the_original(result: AccuracyResult, tmp_path: Path) -> None:
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(result.to_dict()))
    again = load_result(path)
    assert (
        check_parity(again, int8_budget=TEST_INT8_BUDGET).reason
        == check_parity(result, int8_budget=TEST_INT8_BUDGET).reason
    )
    with pytest.raises(ConfigError, match="missing.json"):
        load_result(tmp_path / "missing.json")


def _evaluation(result: AccuracyResult, cosine: float) -> Evaluation:
    rows = [
        BackendRow(k, k, k, dict(r.metrics), cosine_vs_simulated=None if k in ("fp32", "simulated") else cosine)
        for k, r in result.runs.items()
    ]
    return Evaluation(
        result.task,
        result.metric,
        rows,
        result.engine_backend,
        result.engine_reason,
        result.num_samples,
        parity_images=16,
    )


def test_gate_evaluation_runs_every_check_in_order(result: AccuracyResult) -> None:
    ev = _evaluation(result, 0.9999)
    lines = gate_evaluation(ev, GateSpec(min_cosine=0.999, int8_budget=TEST_INT8_BUDGET, min_metric=0.1))
    assert ev.passed and all(line.passed for line in lines)
    assert [str(line).split(":")[0] for line in lines][:2] == ["PASS outputs", "PASS mAP"]
    assert str(lines[-1]).startswith(f"PASS mAP: {result.engine_backend}") and "minimum 0.1000" in str(lines[-1])
    ev = _evaluation(result, 0.95)
    gate_evaluation(ev, GateSpec(min_cosine=0.999, int8_budget=TEST_INT8_BUDGET, min_metric=0.999))
    failed = [line for line in ev.gate_lines if line.startswith("FAIL")]
    assert not ev.passed and len(failed) == 2
    assert "cosine 0.950000 < 0.999 on 16 images" in failed[0] and "< minimum 0.9990" in failed[1]


def test_a_top1_budget_finer_than_one_sample_says_so() -> None:
    """18 photos: one image is 0.0556 of top-1, so the 0.003 budget fails on any single changed image; the
    FAIL line stays a FAIL and says how many samples the budget needs."""
    runs = {k: BackendRun(k, {"top1": v}, 0.0) for k, v in [("fp32", 6 / 18), ("simulated", 5 / 18)]}
    runs["network_executor"] = BackendRun("network_executor", {"top1": 5 / 18}, 0.0)
    small = AccuracyResult("classification", "top1", runs, "network_executor", "no GPU", 18)
    ev = _evaluation(small, 1.0)
    gate_evaluation(ev, GateSpec(int8_budget=0.003))
    failed = [line for line in ev.gate_lines if line.startswith("FAIL")]
    assert not ev.passed and len(failed) == 1
    assert "on 18 samples one sample moves top1 by 0.0556" in failed[0] and "at least 334 samples" in failed[0]
    large = dataclasses.replace(small, num_samples=1000)
    ev = _evaluation(large, 1.0)
    gate_evaluation(ev, GateSpec(int8_budget=0.003))
    assert not ev.passed and not any("one sample moves" in line for line in ev.gate_lines)
