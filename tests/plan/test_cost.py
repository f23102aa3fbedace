"""Roofline cost over real TensorRT plans: resnet18 and mobilenet_v2 (random weights, 224 px, batch 1), INT8 and float.

The INT8 plans come from our quantized networks, the float plans from plain ``symbolic_trace`` graphs (float32
today; the same code takes float16 plans). Builds run on CPU (TensorRT-RTX's ahead-of-time plan, logged).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
from fx2trt_pipeline.engine.engine_plan import EnginePlan
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.plan.cost import (
    LAUNCH_OVERHEAD_S,
    compute_node,
    estimate,
    estimates,
    layer_estimate,
    match_compute_layers,
    node_costs,
)
from fx2trt_pipeline.plan.cost_placement import choose_placement
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS, GPUS, gpu

SHAPE = (1, 3, 224, 224)


@dataclass(frozen=True)
class Plans:
    model: torch.nn.Module
    int8: EnginePlan
    float: EnginePlan


def _plan(gm: torch.fx.GraphModule) -> EnginePlan:
    builder = create_builder()
    spec = [InputSpec("x", SHAPE)]
    _, network, _ctx = network_from_graph_module(gm, spec, builder=builder)
    _, plan = engine_and_plan_from_network(builder, network, spec)
    assert plan is not None
    return plan


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def plans(request: pytest.FixtureRequest) -> Plans:
    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)().eval()
    x = torch.randn(SHAPE)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    return Plans(model, _plan(qgm), _plan(torch.fx.symbolic_trace(model)))


def _both(plans: Plans) -> list[tuple[EnginePlan, dict[str, str]]]:
    return [(plans.int8, {}), (plans.float, match_compute_layers(plans.int8, plans.float))]


def test_rollups_equal_the_plans_totals(plans: Plans) -> None:
    for plan in (plans.int8, plans.float):
        layers = estimate(plan, "L4").layers
        assert sum(e.bytes for e in layers) == plan.total_bytes()
        # the plan's own MAC roll-up covers its correlation / gemm layers; ours adds the fused float convs
        assert sum(x.macs(plan.batch) for x in plan.compute_layers()) == sum(plan.macs_by_dtype().values())
        assert sum(e.macs for e in layers) >= sum(plan.macs_by_dtype().values())
    # the INT8 plan has no fused compute layer: both roll-ups agree exactly
    assert sum(e.macs for e in estimate(plans.int8, "L4").layers) == sum(plans.int8.macs_by_dtype().values())
    # every conv / linear of the model is one compute layer in each plan (float ones fused as runtime_fusion)
    n = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in plans.model.modules())
    assert sum(1 for x in plans.int8.layers if x.compute_kind) == n
    assert sum(1 for x in plans.float.layers if x.compute_kind) == n


def test_estimate_is_the_sum_of_layer_rooflines(plans: Plans) -> None:
    for plan in (plans.int8, plans.float):
        est = estimate(plan, "RTX 4090")
        assert "not a measurement" in est.label and "TensorRT's plan" in est.label
        assert est.seconds_per_item == pytest.approx(sum(e.seconds for e in est.layers) / plan.batch)
        assert set(estimates(plan)) == set(DEFAULT_GPUS)
        # slower memory and math: an L4 is never estimated faster than an RTX 4090 on the same plan
        assert estimates(plan)["L4"] > estimates(plan)["RTX 4090"]


def test_zero_mac_layer_costs_bytes_over_bandwidth(plans: Plans) -> None:
    kgen = next(x for x in plans.int8.layers if x.type == "kgen")
    for spec in GPUS.values():
        e = layer_estimate(kgen, spec, plans.int8.batch)
        assert e.macs == 0 and e.compute_s == 0
        assert e.seconds == pytest.approx(kgen.nbytes(1) / spec.memory_bandwidth + LAUNCH_OVERHEAD_S)


def test_node_costs_cover_every_compute_layer_once(plans: Plans) -> None:
    keys = []
    for plan, names in _both(plans):
        costs = node_costs(plan, "A10", names)
        keys.append(set(costs))
        compute = [k.name for c in costs.values() for k in c.kernels if k.role == "compute"]
        assert sorted(compute) == sorted(x.name for x in plan.layers if x.compute_kind)
        shares: defaultdict[str, float] = defaultdict(float)
        for c in costs.values():
            for k in c.kernels:
                shares[k.name] += k.share
        assert max(shares.values()) <= 1 + 1e-9  # a shared kernel is split, never charged twice
        assert sum(c.bytes for c in costs.values()) <= plan.bytes_per_item() * (1 + 1e-12)
        assert sum(c.seconds for c in costs.values()) <= estimate(plan, "A10").seconds_per_item * (1 + 1e-12)
    # every float compute layer found its node: the same nodes in both plans
    assert keys[0] == keys[1]


def test_conv_macs_by_hand_against_the_plan(plans: Plans) -> None:
    def by_hand(name: str, out_hw: int, c_in: int | None = None) -> int:
        """out_h * out_w * C_out * C_in / groups * k * k from the torch module (C_in as padded when given)."""
        conv = plans.model.get_submodule(name)
        c_in = conv.in_channels if c_in is None else c_in
        return out_hw * out_hw * conv.out_channels * c_in // conv.groups * math.prod(conv.kernel_size)

    def planned(plan: EnginePlan, node: str, names: dict[str, str]) -> int:
        layer = next(x for x in plan.layers if x.compute_kind and (names.get(x.name) or compute_node(x)) == node)
        return layer.macs(plan.batch)

    (int8, _), (flt, names) = _both(plans)
    if isinstance(plans.model, torchvision.models.ResNet):
        # an unpadded 3x3 conv: 56*56*64*64*9 in both plans
        assert planned(int8, "layer1_0_conv1", {}) == by_hand("layer1.0.conv1", 56) == 115_605_504
        # the RGB stem: TensorRT pads INT8 input channels 3 -> 4, so the INT8 plan counts 4/3 of the true MACs
        assert planned(int8, "conv1", {}) == by_hand("conv1", 112, c_in=4) == 157_351_936
        assert planned(flt, "conv1", names) == by_hand("conv1", 112) == 118_013_952
    else:
        # a depthwise 3x3 (32 groups of 1): the INT8 plan runs it as groups of 4 on a 4x expanded input
        assert planned(flt, "features_1_conv_0_0", names) == by_hand("features.1.conv.0.0", 112) == 3_612_672
        assert planned(int8, "features_1_conv_0_0", {}) == 4 * by_hand("features.1.conv.0.0", 112)
        assert planned(int8, "features_0_0", {}) == by_hand("features.0.0", 112, c_in=4)


@pytest.mark.parametrize("plans", ["mobilenet_v2"], indirect=True)
def test_placement_on_mobilenet_keeps_depthwise_convs_in_float(plans: Plans) -> None:
    depthwise = [
        name.replace(".", "_")
        for name, m in plans.model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    ]
    assert len(depthwise) == 17
    choice = choose_placement(plans.int8, plans.float, DEFAULT_GPUS)
    rows = {r.node: r for r in choice.rows}
    assert not choice.unmatched and len(rows) == 53  # 52 convs and the classifier
    int8_costs = node_costs(plans.int8, "L4")
    for node in depthwise:
        # measured: each INT8 depthwise moves 2.5-2.9x the bytes of its float32 form (features_1_conv_0_0:
        # 8.53 MB vs 3.21 MB): the expansion kernel writes a 4x Int8 copy of its input, the conv writes
        # float32 and a separate epilogue reads it back, where float fuses conv + BN + ReLU6 in one kernel
        assert rows[node].int8_bytes > 2.4 * rows[node].float_bytes
        assert [k.role for k in int8_costs[node].kernels] == ["compute", "expansion", "epilogue"]
        assert node in choice.keep_float
    # measured against float32 (not FP16): only the last 1x1 conv and the classifier stay INT8, where the
    # float32 weights (1280x320, 1280x1000) cost more bytes than the INT8 form's extra kernel
    assert choice.keep_int8 == ("features_18_0", "classifier_1")
    assert "FP32" in choice.summary_line() and "not a measurement" in choice.summary_line()
    assert choice.to_dict()["rows"][0]["node"] == "features_0_0"


def test_gpu_table() -> None:
    assert {"RTX 4090", "L40S", "L4", "A10"} <= set(GPUS) and set(DEFAULT_GPUS) <= set(GPUS)
    for spec in GPUS.values():
        # dense figures: INT8 at twice FP16 (FP32 accumulate) on datacenter parts, four times on GeForce
        ratio = spec.int8_tensor_ops / spec.fp16_tensor_flops
        assert min(abs(ratio - 2), abs(ratio - 4)) < 0.05, spec.name
        assert spec.fp16_acc16_tensor_flops >= spec.fp16_tensor_flops > spec.fp32_flops
        assert spec.source.startswith("NVIDIA") and "recalled" in spec.provenance
    with pytest.raises(ConfigError, match="known: RTX 4090"):
        gpu("RTX 9999")
