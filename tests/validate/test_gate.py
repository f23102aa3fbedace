"""The CI accuracy gate on a real validation result (demo detector, val subset, MSE calibration)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fx2trt_pipeline.errors import AccuracyGateError, ConfigError
from fx2trt_pipeline.validate.gate import GateSpec, enforce_gate, gate_evaluation
from fx2trt_pipeline.validate.results import BackendRow, Evaluation, load_evaluation
from tests.validate.test_accuracy import TEST_INT8_BUDGET, cached_result

SANE = GateSpec(min_cosine=None, engine_tolerance=0.002, int8_budget=TEST_INT8_BUDGET)


@pytest.fixture()
def result() -> Evaluation:
    return copy.deepcopy(cached_result())  # each test gates its own copy


def _with_engine_metric(result: Evaluation, value: float) -> Evaluation:
    """The real result with the engine backend's mAP replaced (a diverging engine)."""
    row = result.row(result.engine_backend or "network_executor")
    assert row is not None
    row.metrics["mAP"] = value
    return result


def _task_line(ev: Evaluation) -> str:
    return next(line for line in ev.gate_lines if line.split(" ", 1)[1].startswith("mAP:"))


def test_gate_passes_with_sane_thresholds(result: Evaluation) -> None:
    gate_evaluation(result, SANE)
    assert result.passed, result.gate_lines
    line = _task_line(result)
    assert line.startswith("PASS mAP") and "\n" not in line
    assert f"fp32 {result.fp32:.4f} - simulated {result.simulated:.4f}" in line
    assert f"engine ({result.engine_backend}) {result.engine:.4f}" in line
    assert enforce_gate(result, SANE) is result
    assert all(r.status == "ok" for r in result.rows if r.ran)


def test_gate_fails_with_impossible_budget_naming_numbers(result: Evaluation) -> None:
    strict = GateSpec(min_cosine=None, engine_tolerance=0.002, int8_budget=-1.0)
    gate_evaluation(result, strict)
    assert not result.passed
    line = _task_line(result)
    assert "\n" not in line and line.startswith("FAIL mAP")
    assert f"{result.fp32:.4f}" in line and f"{result.simulated:.4f}" in line and "-1.0000" in line
    assert "tolerance" not in line  # parity itself passed: only the failed check is named
    assert result.row(result.engine_backend).status == "ok"  # the budget judges INT8, not the engine row
    with pytest.raises(AccuracyGateError, match="budget -1.0000"):
        enforce_gate(result, strict)


def test_gate_names_both_failures_in_one_line_and_marks_the_engine_row(result: Evaluation) -> None:
    diverged = _with_engine_metric(result, result.simulated - 0.05)
    gate_evaluation(diverged, GateSpec(min_cosine=None, engine_tolerance=0.0, int8_budget=-1.0))
    line = _task_line(diverged)
    assert not diverged.passed and "\n" not in line
    assert f"|delta| {0.05:.4f} > tolerance 0.0000" in line and "budget -1.0000" in line
    assert diverged.engine_delta == pytest.approx(0.05)
    engine_row = diverged.row(diverged.engine_backend)
    assert engine_row.status == "failed" and "tolerance" in engine_row.note
    gate_evaluation(diverged, GateSpec(min_cosine=None, engine_tolerance=0.1, int8_budget=1.0))
    assert diverged.passed and engine_row.status == "ok" and engine_row.note == ""  # judged afresh


def test_gate_without_engine_backend(result: Evaluation) -> None:
    result.engine_backend, result.engine_reason = None, "no GPU and no TensorRT"
    for row in result.engine_side:
        row.status, row.note = "skipped", "no TensorRT"
    gate_evaluation(result, SANE)
    assert not result.passed
    assert result.gate_lines == ["FAIL no INT8 backend besides the simulated model ran (no GPU and no TensorRT)"]


def test_gate_rejects_bad_thresholds() -> None:
    with pytest.raises(ConfigError, match="engine_tolerance"):
        GateSpec(engine_tolerance=-0.1)
    with pytest.raises(ConfigError, match="int8_budget"):
        GateSpec(int8_budget=float("nan"))
    with pytest.raises(ConfigError, match="min_metric"):
        GateSpec(min_metric="high")  # type: ignore[arg-type]
    assert GateSpec(int8_budget=-0.01).int8_budget == -0.01  # INT8 must beat FP32: allowed


def test_saved_result_gates_like_the_original(result: Evaluation, tmp_path: Path) -> None:
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps({"passed": True, "lines": ["ignored"], **result.to_dict()}))
    again = load_evaluation(path)
    assert again.to_dict() == result.to_dict()
    gate_evaluation(result, SANE)
    gate_evaluation(again, SANE)
    assert again.gate_lines == result.gate_lines and again.passed == result.passed
    manifest = tmp_path / "fx2trt_run.json"
    manifest.write_text(json.dumps({"evaluation": result.to_dict()}))
    assert load_evaluation(manifest).rows == result.rows
    text = str(result)
    assert f"{result.engine_backend} (engine)" in text and f"{100 * result.fp32:.2f}" in text
    with pytest.raises(ConfigError, match="missing.json"):
        load_evaluation(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="Not a saved evaluation"):
        load_evaluation({"task": "detection"})


def _evaluation(metrics: dict[str, dict[str, float]], cosine: float, samples: int, metric: str) -> Evaluation:
    rows = [
        BackendRow(k, k, k, dict(m), cosine_vs_simulated=None if k in ("fp32", "simulated") else cosine)
        for k, m in metrics.items()
    ]
    task = "detection" if metric == "mAP" else "classification"
    return Evaluation(task, metric, rows, "network_executor", "no GPU", samples, parity_images=16)


def test_gate_evaluation_runs_every_check_in_order(result: Evaluation) -> None:
    metrics = {r.key: r.metrics for r in result.rows if r.ran}
    ev = _evaluation(metrics, 0.9999, result.num_samples, "mAP")
    lines = gate_evaluation(ev, GateSpec(min_cosine=0.999, int8_budget=TEST_INT8_BUDGET, min_metric=0.1))
    assert ev.passed and all(line.passed for line in lines)
    assert [str(line).split(":")[0] for line in lines][:2] == ["PASS outputs", "PASS mAP"]
    assert str(lines[-1]).startswith("PASS mAP: network_executor") and "minimum 0.1000" in str(lines[-1])
    ev = _evaluation(metrics, 0.95, result.num_samples, "mAP")
    gate_evaluation(ev, GateSpec(min_cosine=0.999, int8_budget=TEST_INT8_BUDGET, min_metric=0.999))
    failed = [line for line in ev.gate_lines if line.startswith("FAIL")]
    assert not ev.passed and len(failed) == 2
    assert "cosine 0.950000 < 0.999 on 16 images" in failed[0] and "< minimum 0.9990" in failed[1]
    row = ev.row("network_executor")
    assert row.status == "failed" and row.note == "output cosine vs simulated below 0.999"


def test_a_top1_budget_finer_than_one_sample_says_so() -> None:
    """18 photos: one image is 0.0556 of top-1, so the 0.003 budget fails on any single changed image; the
    FAIL line stays a FAIL and says how many samples the budget needs."""
    metrics = {"fp32": {"top1": 6 / 18}, "simulated": {"top1": 5 / 18}, "network_executor": {"top1": 5 / 18}}
    ev = _evaluation(metrics, 1.0, 18, "top1")
    gate_evaluation(ev, GateSpec(int8_budget=0.003))
    failed = [line for line in ev.gate_lines if line.startswith("FAIL")]
    assert not ev.passed and len(failed) == 1
    assert "on 18 samples one sample moves top1 by 0.0556" in failed[0] and "at least 334 samples" in failed[0]
    ev = _evaluation(metrics, 1.0, 1000, "top1")
    gate_evaluation(ev, GateSpec(int8_budget=0.003))
    assert not ev.passed and not any("one sample moves" in line for line in ev.gate_lines)


def test_fidelity_budgets_and_changed_predictions_are_gated() -> None:
    """24 photos, 5 predictions changed, top-1 unchanged (66.67 -> 66.67): the headline says so, the PASS says
    the top-1 budget is finer than one image, and --min-agreement / --min-fp32-cosine catch what top-1 hid."""
    int8 = {"top1": 16 / 24, "agree_top1": 19 / 24}
    metrics = {"fp32": {"top1": 16 / 24}, "simulated": dict(int8), "network_executor": dict(int8)}
    ev = _evaluation(metrics, 1.0, 24, "top1")
    ev.row("network_executor").cosine_vs_fp32 = 0.963
    gate_evaluation(ev, GateSpec(int8_budget=0.001))
    task = next(line for line in ev.gate_lines if line.startswith("PASS top1"))
    assert ev.passed and "5 of 24 predictions changed vs FP32" in task
    assert "the budget 0.10 pt is finer than 1 image of 24 (4.17 pt)" in task
    gate_evaluation(ev, GateSpec(int8_budget=0.001, min_agreement=0.98, min_fp32_cosine=0.99))
    failed = [line for line in ev.gate_lines if line.startswith("FAIL")]
    assert not ev.passed and len(failed) == 2
    assert "agree_top1 0.7917 (19 of 24 predictions as FP32) < minimum 0.9800" in failed[0]
    assert "output cosine vs FP32 0.963000 < minimum 0.99" in failed[1]
    assert ev.row("network_executor").status == "failed"
    gate_evaluation(ev, GateSpec(int8_budget=0.001, min_agreement=0.75, min_fp32_cosine=0.95))
    assert ev.passed and any(line.startswith("PASS agreement") for line in ev.gate_lines)
    with pytest.raises(ConfigError, match="min_agreement"):
        GateSpec(min_agreement=-0.5)
