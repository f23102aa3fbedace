"""Placement by plan cost on MobileNetV2: every candidate is rebuilt and judged on TensorRT's own plan.

The per-layer choice alone is not trusted (layers interact through their Q/DQ), so the test checks what the search
promises on the real rebuilt plans: the chosen placement's estimate is at most the faster of all-INT8 and
all-float on every GPU, or it is the best of everything tried."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_builder import plan_at_opt_shape
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.plan.cost import estimates
from fx2trt_pipeline.plan.placement_search import search_placement
from fx2trt_pipeline.quantize.state import get_quant_state

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")
GPUS = ("RTX 4090", "L4")


@pytest.fixture(scope="module")
def searched() -> dict:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(2, 3, 96, 96)
    cfg = ftp.QuantConfig(show_progress=False, calibrator="minmax")
    prepared = ftp.prepare(model, (x,), cfg)
    ftp.calibrate(prepared, [x])
    qgm = ftp.convert(prepared)
    spec = [InputSpec("x", (1, 3, 96, 96))]
    nodes = list(get_quant_state(qgm).placement.weights)
    built: dict = {}

    def plan_of(keep: frozenset[str]):
        skip = tuple(n for n in nodes if n not in keep)
        built[keep] = plan_at_opt_shape(ftp.convert(prepared, dataclasses.replace(cfg, skip=skip)), spec)
        return built[keep]

    int8 = plan_at_opt_shape(qgm, spec)
    floats = plan_at_opt_shape(ftp.convert(prepared, dataclasses.replace(cfg, skip=("*",))), spec)
    result = search_placement(int8, floats, nodes, plan_of, GPUS)
    return {"result": result, "int8": int8, "float": floats, "nodes": nodes, "built": built}


def test_the_chosen_placement_is_no_slower_than_either_extreme_or_the_best_tried(searched) -> None:
    result, int8, floats = searched["result"], searched["int8"], searched["float"]
    e_int8, e_float = estimates(int8, GPUS), estimates(floats, GPUS)
    chosen = estimates(result.chosen.plan, GPUS)
    assert chosen == result.chosen.seconds  # the score comes from the candidate's own plan
    if result.chosen.score <= 1.0:
        assert all(chosen[g] <= min(e_int8[g], e_float[g]) * (1 + 1e-9) for g in GPUS)
    else:
        assert result.chosen.score == min(c.score for c in result.candidates)
    # every mixed candidate was really rebuilt: its plan runs INT8 exactly the layers it keeps
    for c in result.candidates[2:]:
        assert c.plan is searched["built"][frozenset(c.keep_int8)]
        assert c.plan.summary()["int8_compute_layers"] == len(c.keep_int8)


def test_the_search_reports_every_candidate_and_says_when_it_is_no_int8_engine(searched) -> None:
    result = searched["result"]
    labels = [c.label for c in result.candidates]
    assert labels[:2] == ["all INT8 (TensorRT's rules)", "all FP32"]
    assert result.candidates[0].keep_int8 == tuple(searched["nodes"]) and result.candidates[1].keep_int8 == ()
    lines = result.lines()
    assert len(lines) == len(result.candidates) + 1 and "not a measurement" in lines[-1]
    if not result.is_int8_engine:
        assert "this is not an INT8 engine" in lines[-1]
    record = result.to_dict()
    assert record["chosen"] == result.chosen.label and record["per_node"]["rows"]
