"""Placement lint on real networks: every rule flags a graph that breaks it (naming the FX node) and passes a
clean variant; ftp.quantize_model's resnet18 / mobilenet_v2 give no placement findings.

TensorRT's plan (TensorRT-RTX 1.7.1, ahead-of-time plan of a CPU build) is measured broken vs fixed: a float
residual skip costs bytes; per-input concat scales and a Q between conv and ReLU cost no kernel and no bytes
beyond their scale constants, only one more rounding step inside the fused epilogue kernel (asserted as such)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.fx import GraphModule, Node

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_plan import EnginePlan

if not trt_api.is_available():
    pytest.skip("no TensorRT library installed", allow_module_level=True)

from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network  # noqa: E402
from fx2trt_pipeline.network.inputs import InputSpec  # noqa: E402
from fx2trt_pipeline.network.network import network_from_graph_module  # noqa: E402
from fx2trt_pipeline.plan.lint import LINT_RULES, LintFinding, lint_network  # noqa: E402
from tests.converters.qdq_graph import (  # noqa: E402
    _insert_qdq_after,
    amax_of,
    ao_reference,
    lower_weights,
    quantize_weighted_inputs,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

#: Rules ftp.quantize_model's default placement must never break (int8_channels_not_multiple_of_16 is advice,
#: qdq_around_float_only_op does not apply to CNNs).
PLACEMENT_RULES = {
    "half_quantized_weighted_op",
    "concat_scales_differ",
    "q_between_conv_and_activation",
    "qdq_on_network_output",
    "residual_identity_not_quantized",
    "small_int8_island",
}


def example(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def build_network(gm: GraphModule, x: torch.Tensor) -> tuple[Any, Any, Any, list[InputSpec]]:
    specs = [InputSpec("x", tuple(x.shape))]
    builder, network, ctx = network_from_graph_module(gm, specs, builder=create_builder())
    return builder, network, ctx, specs


def lint(gm: GraphModule, x: torch.Tensor) -> list[LintFinding]:
    _, network, _ctx, _ = build_network(gm, x)
    return lint_network(network)


def flagged(findings: list[LintFinding], rule: str) -> list[str]:
    return [f.node for f in findings if f.rule == rule]


def plan_of(gm: GraphModule, x: torch.Tensor) -> EnginePlan:
    builder, network, ctx, specs = build_network(gm, x)
    _, plan = engine_and_plan_from_network(builder, network, specs)
    del ctx
    assert plan is not None
    return plan


def cost(plan: EnginePlan) -> tuple[int, float]:
    return plan.summary()["engine_layers"], plan.total_bytes()


def roundings(plan: EnginePlan) -> int:
    """Quantize steps in the plan: TensorRT names a fused kernel after its ops (``...MulMinMaxRounCast...``)."""
    return sum(layer.name.count("RounCast") for layer in plan.layers)


def assert_cost_is_a_requantize(broken: EnginePlan, fixed: EnginePlan) -> None:
    """What TensorRT-RTX 1.7's ahead-of-time plan (CPU build) shows for an extra Q/DQ pair inside an INT8 chain:
    no extra kernel and no extra activation bytes (only its 4-byte scale constants); the pair folds into the
    fused epilogue kernel as one more round-to-int8 step (a precision cost, not a speed one)."""
    (broken_layers, broken_bytes), (fixed_layers, fixed_bytes) = cost(broken), cost(fixed)
    assert broken_layers == fixed_layers, (broken_layers, fixed_layers)
    assert 0 < broken_bytes - fixed_bytes <= 64, (broken_bytes, fixed_bytes)  # scale constants only
    assert roundings(broken) > roundings(fixed), [layer.name for layer in broken.layers]


def node(gm: GraphModule, name: str) -> Node:
    return next(n for n in gm.graph.nodes if n.name == name)


def scale_of(gm: GraphModule, x: torch.Tensor, name: str) -> float:
    return max(amax_of(gm, (x,))[name], 1e-6) / 127


def qdq(gm: GraphModule, after: str, scale: float, users: list[str] | None = None) -> None:
    """A Q/DQ pair after node ``after`` for ``users`` (all users when None), named ``<after>_q`` / ``_dq``."""
    _insert_qdq_after(gm, node(gm, after), scale, None if users is None else [node(gm, u) for u in users])
    gm.recompile()


class Fn(nn.Module):
    def __init__(self, forward: Callable[..., Any], **modules: nn.Module) -> None:
        super().__init__()
        self.fn = forward
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self, x)


def traced(module: nn.Module) -> GraphModule:
    return torch.fx.symbolic_trace(module.eval())


def two_convs() -> GraphModule:
    """x -> c1 -> relu -> c2 in float; ``quantized(two_convs(), x)`` is the clean placement."""
    return traced(Fn(lambda s, x: s.c2(F.relu(s.c1(x))), c1=nn.Conv2d(16, 32, 3, padding=1), c2=nn.Conv2d(32, 32, 3)))


def quantized(gm: GraphModule, x: torch.Tensor, edit: Callable[[GraphModule], None] | None = None) -> GraphModule:
    """Q/DQ on every conv / linear data input, an optional placement edit, then int8 weights."""
    quantize_weighted_inputs(gm, (x,))
    if edit is not None:
        edit(gm)
    return lower_weights(gm)


# ---- rule 1 -----------------------------------------------------------------------------------------------------


def test_half_quantized_weighted_op() -> None:
    x = example(1, 16, 8, 8)
    data_only = quantize_weighted_inputs(two_convs(), (x,))  # weights stay float kernels
    assert flagged(lint(data_only, x), "half_quantized_weighted_op") == ["c1", "c2"]
    weight_only = lower_weights(two_convs())  # int8 weights, no activation Q/DQ
    findings = lint(weight_only, x)
    assert flagged(findings, "half_quantized_weighted_op") == ["c1", "c2"]
    assert "the weight is int8 + DQ but the data input has no Q/DQ" in findings[0].message
    fc = traced(Fn(lambda s, x: s.fc(x), fc=nn.Linear(32, 32)))
    assert flagged(lint(lower_weights(fc), example(4, 32)), "half_quantized_weighted_op") == ["fc"]
    assert lint(quantized(two_convs(), x), x) == []


# ---- rule 2 -----------------------------------------------------------------------------------------------------


def concat_net(shared: bool) -> tuple[GraphModule, torch.Tensor]:
    """Two conv+ReLU branches concatenated into a third conv; branch outputs quantized per input (their own
    amax, as a per-tensor calibrator gives) or with one shared scale (the concat's amax). The 2x on one branch
    makes sure the two amax differ."""
    m = Fn(
        lambda s, x: s.c(torch.cat([F.relu(s.a(x)), 2.0 * F.relu(s.b(x))], 1)),
        a=nn.Conv2d(16, 32, 3, padding=1),
        b=nn.Conv2d(16, 32, 3, padding=1),
        c=nn.Conv2d(64, 32, 3, padding=1),
    )
    gm, x = traced(m), example(1, 16, 16, 16)
    cat_scale = scale_of(gm, x, "cat")

    def edit(g: GraphModule) -> None:
        for branch in ("relu", "mul"):
            qdq(g, branch, cat_scale if shared else scale_of(g, x, branch), ["cat"])

    return quantized(gm, x, edit), x


def test_concat_scales_differ_is_flagged_and_the_plan_requantizes() -> None:
    broken, x = concat_net(shared=False)
    findings = lint(broken, x)
    assert flagged(findings, "concat_scales_differ") == ["cat"], findings
    assert "relu_dq" in findings[0].message and "mul_dq" in findings[0].message
    fixed, _ = concat_net(shared=True)
    assert lint(fixed, x) == []
    # Measured: 6 engine layers both, 320,028 vs 320,012 bytes; the fused ReLU+concat kernel rounds each branch
    # twice (to its own scale, then to the concat's) instead of once.
    assert_cost_is_a_requantize(plan_of(broken, x), plan_of(fixed, x))


# ---- rule 3 -----------------------------------------------------------------------------------------------------


def conv_q_relu(broken: bool) -> tuple[GraphModule, torch.Tensor]:
    gm, x = two_convs(), example(1, 16, 16, 16)
    scale = scale_of(gm, x, "c1")
    return quantized(gm, x, (lambda g: qdq(g, "c1", scale, ["relu"])) if broken else None), x


def test_q_between_conv_and_relu_is_flagged_and_the_plan_requantizes() -> None:
    broken, x = conv_q_relu(broken=True)
    findings = lint(broken, x)
    assert [str(f).split(":")[0] for f in findings] == ["LINT q_between_conv_and_activation c1_q"], findings
    fixed, _ = conv_q_relu(broken=False)
    assert lint(fixed, x) == []
    # Measured: 5 engine layers both, 196,624 vs 196,616 bytes; c1's epilogue kernel is MulAdd-MulMinMaxRounCast-
    # CastMul-Relu-MulMinMaxRounCast (rounds before and after the ReLU) instead of MulAdd-Relu-MulMinMaxRounCast.
    assert_cost_is_a_requantize(plan_of(broken, x), plan_of(fixed, x))


def test_torch_ao_places_q_between_conv_and_relu6() -> None:
    """torch.ao's TensorRT backend config fuses conv+ReLU but not conv+ReLU6 (hardtanh): it quantizes between."""
    x = example(1, 16, 8, 8)
    relu6 = ao_reference(nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU6(), nn.Conv2d(32, 32, 3)), (x,))
    findings = lint(relu6, x)
    assert flagged(findings, "q_between_conv_and_activation") == ["quantize_per_tensor_1"], findings
    assert "'_0'" in findings[0].message and "CLIP" in findings[0].message
    assert flagged(findings, "qdq_on_network_output")  # torch.ao also dequantizes the graph output
    relu = ao_reference(nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3)), (x,))
    assert not flagged(lint(relu, x), "q_between_conv_and_activation")


# ---- rule 4 -----------------------------------------------------------------------------------------------------


def test_qdq_on_network_output() -> None:
    gm, x = two_convs(), example(1, 16, 8, 8)
    scale = scale_of(gm, x, "c2")
    broken = quantized(gm, x, lambda g: qdq(g, "c2", scale))
    assert [str(f).split(":")[0] for f in lint(broken, x)] == ["LINT qdq_on_network_output c2_dq"]
    assert lint(quantized(two_convs(), x), x) == []


# ---- rule 5 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "kind"), [(nn.LayerNorm(32), "NORMALIZATION"), (nn.Softmax(-1), "SOFTMAX"), (nn.GELU(), "GELU_ERF")]
)
def test_qdq_around_float_only_op(op: nn.Module, kind: str) -> None:
    def make() -> GraphModule:
        return traced(Fn(lambda s, x: s.fc2(s.op(s.fc1(x))), fc1=nn.Linear(32, 32), op=op, fc2=nn.Linear(32, 32)))

    x = example(2, 8, 32)
    gm = make()
    scale = scale_of(gm, x, "fc1")
    findings = lint(quantized(gm, x, lambda g: qdq(g, "fc1", scale, ["op"])), x)
    assert flagged(findings, "qdq_around_float_only_op") == ["fc1_dq"], findings
    assert kind in findings[0].message
    assert lint(quantized(make(), x), x) == []


def deconv_network(spatial: int, quantize: bool) -> tuple[Any, Any, list[np.ndarray]]:
    """x -> [Q -> DQ] -> deconvolution with an [int8 + DQ] kernel, built with the TensorRT API."""
    trt = trt_api.get_trt()
    builder = create_builder()
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float32, (1, 16, *([4] * spatial)))
    kernel_shape = (16, 16, *([2] * spatial))
    keep = [np.array(0.05, np.float32), np.ones(kernel_shape, np.int8), np.full(16, 0.01, np.float32)]
    weights = keep[1].astype(np.float32) * 0.01
    keep.append(weights)

    def constant(array: np.ndarray, name: str) -> Any:
        layer = network.add_constant(array.shape, trt.Weights(array))
        layer.name = name
        return layer.get_output(0)

    data, kernel = x, trt.Weights(weights)
    if quantize:
        scale = constant(keep[0], "x_scale")
        q = network.add_quantize(x, scale, trt.int8)
        q.name = "x_q"
        dq = network.add_dequantize(q.get_output(0), scale, trt.float32)
        dq.name = "x_dq"
        data, kernel = dq.get_output(0), trt.Weights(trt.float32)
    deconv = network.add_deconvolution_nd(data, 16, (2,) * spatial, kernel, trt.Weights(trt.float32))
    deconv.name = "up"
    if quantize:
        w_dq = network.add_dequantize(
            constant(keep[1], "up_weight_int8"), constant(keep[2], "up_weight_scale"), trt.float32
        )
        w_dq.axis = 0
        w_dq.name = "up_weight_dq"
        deconv.set_input(1, w_dq.get_output(0))
    network.mark_output(deconv.get_output(0))
    return builder, network, keep


def test_qdq_around_3d_deconvolution() -> None:
    _, network, _keep = deconv_network(3, quantize=True)
    assert flagged(lint_network(network), "qdq_around_float_only_op") == ["x_dq"]
    _, network, _keep = deconv_network(2, quantize=True)
    assert not flagged(lint_network(network), "qdq_around_float_only_op")
    _, network, _keep = deconv_network(3, quantize=False)
    assert lint_network(network) == []


# ---- rule 6 -----------------------------------------------------------------------------------------------------


def _residual_block(s: nn.Module, x: torch.Tensor) -> torch.Tensor:
    a = F.relu(s.c1(x))
    return F.relu(s.c2(a) + a)


def residual(quantize_skip: bool) -> tuple[GraphModule, torch.Tensor]:
    """relu(c2(a) + a), a = relu(c1(x)); the skip input a quantized for the add too, or only for c2."""
    gm = traced(Fn(_residual_block, c1=nn.Conv2d(16, 32, 3, padding=1), c2=nn.Conv2d(32, 32, 3, padding=1)))
    x = example(1, 16, 8, 8)
    if not quantize_skip:
        return quantized(gm, x), x  # Q/DQ on relu for c2 only: the add reads float
    qdq(gm, "x", scale_of(gm, x, "x"))
    qdq(gm, "relu", scale_of(gm, x, "relu"))  # one Q/DQ for both users of the skip tensor: c2 and the add
    return lower_weights(gm), x


def test_residual_identity_not_quantized() -> None:
    broken, x = residual(quantize_skip=False)
    findings = lint(broken, x)
    assert [str(f).split(":")[0] for f in findings] == ["LINT residual_identity_not_quantized add"], findings
    assert "'relu'" in findings[0].message
    fixed, _ = residual(quantize_skip=True)
    assert lint(fixed, x) == []
    # The plan shows the cost: c1's epilogue writes the skip tensor twice (int8 for c2, float for the add) and
    # the add reads it as float. Measured: 5 engine layers both, 82,440 vs 68,108 bytes.
    broken_plan, fixed_plan = plan_of(broken, x), plan_of(fixed, x)
    assert cost(broken_plan)[0] == cost(fixed_plan)[0] and cost(broken_plan)[1] > 1.15 * cost(fixed_plan)[1]
    float_skip = [layer for layer in broken_plan.layers if [t.dtype for t in layer.outputs] == ["Int8", "Float"]]
    assert len(float_skip) == 1, [layer.name for layer in broken_plan.layers]


# ---- rule 7 -----------------------------------------------------------------------------------------------------


def test_small_int8_island() -> None:
    """A quantized conv between float layers: its input is quantized from float and its output stays float."""
    m = Fn(lambda s, x: torch.sigmoid(s.c(torch.sigmoid(x))), c=nn.Conv2d(16, 32, 3, padding=1))
    x = example(1, 16, 8, 8)
    findings = lint(quantized(traced(m), x), x)
    assert [str(f).split(":")[0] for f in findings] == ["LINT small_int8_island c"], findings
    assert lint(quantized(two_convs(), x), x) == []  # a two-conv INT8 chain: neither conv is alone


# ---- rule 8 -----------------------------------------------------------------------------------------------------


def channels_net(mid: int) -> GraphModule:
    """x (3 channels) -> c1 -> relu -> depthwise dw -> relu -> c2: only c2's ``mid`` input channels are judged
    (c1 is the image's first conv, dw is depthwise)."""
    m = Fn(
        lambda s, x: s.c2(F.relu(s.dw(F.relu(s.c1(x))))),
        c1=nn.Conv2d(3, mid, 3, padding=1),
        dw=nn.Conv2d(mid, mid, 3, padding=1, groups=mid),
        c2=nn.Conv2d(mid, 32, 1),
    )
    return traced(m)


def test_int8_channels_not_multiple_of_16() -> None:
    x = example(1, 3, 8, 8)
    findings = lint(quantized(channels_net(24), x), x)
    assert [str(f).split(":")[0] for f in findings] == ["LINT int8_channels_not_multiple_of_16 c2"], findings
    assert "24 input channels" in findings[0].message and findings[0].message.startswith("(advice)")
    assert lint(quantized(channels_net(32), x), x) == []


# ---- models, API ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_ftp_quantize_placement_is_clean(name: str) -> None:
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = example(1, 3, 64, 64)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    findings = lint(qgm, x)
    assert not [f for f in findings if f.rule in PLACEMENT_RULES], "\n".join(map(str, findings))
    if name == "mobilenet_v2":  # its 24-channel block is the one advice
        assert {f.rule for f in findings} == {"int8_channels_not_multiple_of_16"}
        assert {f.node for f in findings} == {
            "features_2_conv_2",
            "features_3_conv_0_0",
            "features_3_conv_2",
            "features_4_conv_0_0",
        }


def test_findings_are_one_line_and_rules_are_ordered() -> None:
    finding = LintFinding("r", "conv", "conv.kernel", "what is wrong", "what to do")
    assert str(finding) == "LINT r conv: what is wrong; what to do"
    assert [rule.__name__ for rule in LINT_RULES] == [
        "half_quantized_weighted_op",
        "concat_scales_differ",
        "q_between_conv_and_activation",
        "qdq_on_network_output",
        "qdq_around_float_only_op",
        "residual_identity_not_quantized",
        "small_int8_island",
        "int8_channels_not_multiple_of_16",
    ]
    x = example(1, 16, 8, 8)
    _, network, _ctx, _ = build_network(lower_weights(two_convs()), x)
    held = [network.get_layer(i) for i in range(network.num_layers)]
    findings = lint_network(network)
    assert [f.layer for f in findings] == ["c1", "c2"] and all("\n" not in str(f) for f in findings)
    # The lint casts layers to their concrete classes only while it reads them: wrappers the caller holds are
    # still ILayer, whose `type` is the LayerType.
    relu = next(layer for layer in held if layer.name == "relu")
    assert type(relu).__name__ == "ILayer" and relu.type.name == "ACTIVATION"
