"""Sensitivity and automatic mixed precision on the demo detector (real labels, val subset).

Percentile 99.9 clips every activation hard, so its full-INT8 model loses mAP: the search must keep
layers in float to meet a budget tighter than that loss, or say honestly that it could not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from fx2trt_pipeline.models.centernet import centernet_decode
from fx2trt_pipeline.quantize import qdq_ops
from fx2trt_pipeline.quantize.api import calibrate, convert, prepare
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.tune.mixed_precision import mixed_precision_search
from fx2trt_pipeline.tune.sensitivity import convert_with_skip, layer_sqnr_proxy, output_gain_proxy, quantized_layers
from fx2trt_pipeline.validate.accuracy import detection_evaluator
from fx2trt_pipeline.validate.compare import sqnr_db
from fx2trt_pipeline.validate.demo_detector import DemoSetup
from fx2trt_pipeline.validate.quant_error import quant_error_table
from tests.validate.test_accuracy import cached_setup

CLIPPING = QuantConfig(calibrator="percentile", percentile=99.9, show_progress=False)
#: The search evaluates several candidates: score them on fewer (real) scenes than the validator.
SEARCH_IMAGES = 50


@pytest.fixture(scope="module")
def setup() -> DemoSetup:
    return cached_setup()


@pytest.fixture(scope="module")
def subset(setup: DemoSetup) -> tuple[Callable[[Any], dict[str, float]], float, float]:
    """``(evaluate, fp32 mAP, full-INT8 percentile-99.9 mAP)`` on the first SEARCH_IMAGES val scenes."""
    evaluate = detection_evaluator(setup.val, centernet_decode, max_images=SEARCH_IMAGES)
    return evaluate, evaluate(setup.model)["mAP"], evaluate(convert(setup.prepared, CLIPPING))["mAP"]


def _float_layers_have_no_qdq(qgm: torch.fx.GraphModule, layers: list[str]) -> bool:
    nodes = {n.name: n for n in qgm.graph.nodes}
    for layer in layers:
        node = nodes[layer]
        if any(qdq_ops.is_dequantize(a) for a in node.all_input_nodes):
            return False
        if layer.startswith(("backbone", "deconv", "hm", "wh", "reg")) and node.op != "call_module":
            return False  # a quantized weighted layer is lowered to a functional call with an int8 weight
    return True


def test_quantized_layers_are_the_layers_with_qdq(setup: DemoSetup) -> None:
    layers = quantized_layers(setup.prepared)
    assert "backbone_3" not in layers  # the max-pool only carries its consumer's Q/DQ
    assert {"backbone_0", "deconv_6", "hm_2", "add_1", "add_3"} <= set(layers)
    assert len(layers) == 21 + 3  # 21 convs/deconvs and the 3 residual adds with a quantized skip input


def test_convert_with_skip_reuses_statistics_exactly(setup: DemoSetup) -> None:
    skip = ["deconv_6", "add_1"]
    reused = convert_with_skip(setup.prepared, skip, CLIPPING)
    assert reused is not None
    config = dataclasses.replace(CLIPPING, skip=tuple(skip))
    fresh = prepare(setup.model, (setup.calib_batches[0][:1],), config)
    fresh = convert(calibrate(fresh, setup.calib_batches, show_progress=False))
    x = setup.val[0][0][None]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(reused(x), fresh(x)))
    assert _float_layers_have_no_qdq(reused, skip)
    # A float conv before a residual add moves the add's Q/DQ onto a tensor nobody observed.
    assert convert_with_skip(setup.prepared, ["backbone_5_0_conv2"], CLIPPING) is None


RESIDUAL_CONV2 = ("backbone_5_0_conv2", "backbone_6_0_conv2", "backbone_7_0_conv2")


def test_layer_proxy_charges_maxpool_to_its_consumer(setup: DemoSetup) -> None:
    qgm = convert(setup.prepared, CLIPPING)
    x = setup.calib_batches[0][:8]
    proxy = layer_sqnr_proxy(setup.model, qgm, setup.prepared, (x,))
    assert sorted(proxy) == sorted(quantized_layers(setup.prepared))
    assert all(math.isfinite(v) and 0 < v < 80 for v in proxy.values())
    rows = {r.layer: r.activation_sqnr_db for r in quant_error_table(setup.model, qgm, (x,))}
    assert proxy["backbone_4_0_conv1"] == pytest.approx(min(rows["backbone_4_0_conv1"], rows["backbone_3"]))


def test_output_proxy_is_the_output_noise_removed(setup: DemoSetup) -> None:
    x = setup.calib_batches[0][:8]
    gains = output_gain_proxy(setup.model, setup.prepared, (x,), CLIPPING)  # no calib data: no re-calibration
    assert sorted(gains) == sorted(quantized_layers(setup.prepared))
    assert all(math.isnan(gains[n]) == (n in RESIDUAL_CONV2) for n in gains)
    with torch.no_grad():
        ref = setup.model(x)
        full = convert(setup.prepared, CLIPPING)(x)
        floated = convert_with_skip(setup.prepared, ["wh_2"], CLIPPING)(x)

    def noise(out: tuple[torch.Tensor, ...]) -> float:  # independent: per-output SQNR, back to noise ratios
        return sum(10 ** (-sqnr_db(r, o) / 10) for r, o in zip(ref, out))

    assert gains["wh_2"] == pytest.approx(10 * math.log10(noise(full) / noise(floated)), rel=1e-9)
    assert gains["wh_2"] > 0  # floating the box-size head's last conv removes noise from the wh output


def test_search_meets_a_budget_tighter_than_full_int8(setup: DemoSetup, subset: Any) -> None:
    evaluate, fp32, full = subset
    drop = fp32 - full
    if drop <= 0.002:
        pytest.skip(f"percentile 99.9 costs only {drop:.4f} mAP on this subset: nothing to recover")
    budget = 0.75 * drop  # tighter than full INT8: at least one layer must go float
    result = mixed_precision_search(
        setup.model,
        setup.prepared,
        evaluate,
        budget,
        config=CLIPPING,
        calib_batches=setup.calib_batches,
        proxy_inputs=(setup.calib_batches[0][:16],),
        max_verify=2,
        max_evaluations=5,
        fp32_metric=fp32,
    )
    assert result.int8 == pytest.approx(full, abs=1e-12) and result.fp32 == fp32
    assert result.evaluations <= 5
    measured = [s for s in result.sensitivity if s.metric_if_float is not None]
    assert 1 <= len(measured) <= 2 and [s.proxy_rank for s in measured] == list(range(len(measured)))
    assert all(s.recovered == pytest.approx(s.metric_if_float - full) for s in measured)
    if not result.met_budget:  # allowed, but then it must say so
        assert result.note and "budget NOT met" in str(result)
        return
    assert len(result.float_layers) >= 1 and fp32 - result.final <= budget
    assert set(result.float_layers) <= set(result.config.skip)
    assert _float_layers_have_no_qdq(result.model, result.float_layers)
    # The reported number is real: quantizing from scratch with the reported config reproduces it.
    again = prepare(setup.model, (setup.calib_batches[0][:1],), result.config)
    again = convert(calibrate(again, setup.calib_batches, show_progress=False))
    assert evaluate(again)["mAP"] == pytest.approx(result.final, abs=1e-12)
    text = str(result)
    assert "budget met" in text and all(layer in text for layer in result.float_layers)


def test_search_stops_at_once_when_full_int8_meets_the_budget(setup: DemoSetup, subset: Any) -> None:
    evaluate, fp32, _ = subset
    result = mixed_precision_search(
        setup.model, setup.prepared, evaluate, 1.0, config=CLIPPING, calib_batches=setup.calib_batches, fp32_metric=fp32
    )
    assert result.met_budget and result.float_layers == [] and result.evaluations == 1
    assert result.sensitivity == []  # no proxies computed when there is nothing to recover
    assert result.config.skip == () and result.to_dict()["skip"] == []
