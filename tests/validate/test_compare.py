"""Metrics and compare_outputs against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.compare import (
    Tolerance,
    compare_outputs,
    cosine_similarity,
    max_abs_error,
    mean_abs_error,
    sqnr_db,
)


def test_metrics_on_known_values():
    ref, test = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])
    assert cosine_similarity(ref, test) == pytest.approx(21 / (5 * math.sqrt(18)))
    assert sqnr_db(ref, test) == pytest.approx(10 * math.log10(25 / 1))
    assert max_abs_error(ref, test) == 1.0
    assert mean_abs_error(ref, test) == 0.5
    assert sqnr_db(ref, ref) == math.inf
    assert cosine_similarity(torch.zeros(3), torch.zeros(3)) == 1.0
    assert cosine_similarity(torch.zeros(3), torch.ones(3)) == 0.0
    assert sqnr_db(torch.zeros(2), torch.ones(2)) == -math.inf


def test_metrics_accept_int8_and_mixed_devices_and_shapes():
    q = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
    assert cosine_similarity(q, q.float()) == pytest.approx(1.0)
    assert max_abs_error(q, q.reshape(-1).float() + 1) == 1.0
    assert mean_abs_error(torch.empty(0), torch.empty(0)) == 0.0


def test_compare_outputs_passes_and_prints_a_table():
    ref = {"logits": torch.randn(4, 10), "boxes": torch.randn(4, 4)}
    test = {k: v + 1e-6 for k, v in ref.items()}
    result = compare_outputs(ref, test, ref_name="simulated", test_name="executor")
    assert result and not result.failures
    assert [s.name for s in result] == ["logits", "boxes"]
    assert result["boxes"].shape == (4, 4) and result["boxes"].max_abs_error < 2e-6
    text = str(result)
    assert text.splitlines()[0] == "executor vs simulated: PASS"
    assert "logits" in text and "4x10" in text and "cosine" in text
    data = json.loads(result.to_json())
    assert data["passed"] is True and data["outputs"][0]["name"] == "logits"


def test_per_output_tolerances_default_and_failures():
    ref = {"a": torch.ones(4), "b": torch.ones(4)}
    test = {"a": torch.ones(4) * 1.1, "b": torch.ones(4) * 1.1}
    result = compare_outputs(ref, test, {"a": Tolerance(max_abs=0.05), "*": Tolerance(min_sqnr_db=15)})
    assert not result
    assert result.failures == ["a: max abs error 0.1 > 0.05"]  # "b" has SQNR 20 dB >= 15
    assert result["b"].passed and result["b"].sqnr_db == pytest.approx(20.0)
    assert compare_outputs(ref, test, Tolerance(min_cosine=None, max_mean_abs=0.2))


def test_shape_mismatch_nan_and_missing_outputs_fail():
    ref = {"a": torch.ones(2, 3), "b": torch.ones(3), "c": torch.ones(1)}
    test = {"a": torch.ones(3, 2), "b": torch.tensor([1.0, float("nan"), 1.0])}
    result = compare_outputs(ref, test)
    assert not result
    assert "a: shape (3, 2) != reference (2, 3)" in result.failures
    assert any(f.startswith("b: test has NaN/Inf values") for f in result.failures)
    assert "c: missing from test" in result.failures
    assert "missing from test" in str(result)


def test_unknown_tolerance_names_are_rejected():
    with pytest.raises(ConfigError, match="typo"):
        compare_outputs({"a": torch.ones(1)}, {"a": torch.ones(1)}, {"typo": Tolerance()})
