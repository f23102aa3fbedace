"""Convs and linears written the way model packages write them are quantized like nn.Conv2d / nn.Linear.

* an ``nn.Conv2d`` subclass with its own forward that pads and calls ``F.conv2d`` (efficientnet_pytorch's
  ``Conv2dStaticSamePadding``: pads fixed at construction from the image size);
* the same with the pads computed in forward from the input size (timm's ``Conv2dSame``, which torch.fx cannot
  trace: the padding is fixed from the example inputs);
* ``F.conv2d`` on a module's own parameter under any name, and ``F.linear(x, self.weight, self.bias)``.

Each must get per-channel int8 weights, its BatchNorm folded, and run INT8 in TensorRT's plan; so must a conv whose
weight is computed from parameters (``weight * mask``); one whose weight depends on the input stays float and the
reports say so. References: the float model in eager mode and BN
folding computed here by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.capture.input_size_padding import FixedPadConv2d
from fx2trt_pipeline.quantize.qdq_ops import is_dequantize
from fx2trt_pipeline.quantize.state import get_quant_state
from tests.quantize.helpers import functional, weighted_nodes

needs_trt = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")
CONFIG = ftp.QuantConfig(show_progress=False, calibrator="percentile")


class StaticSamePadConv(nn.Conv2d):
    """efficientnet_pytorch's ``Conv2dStaticSamePadding``: TensorFlow 'SAME' pads computed from the image size at
    construction, applied by a ZeroPad2d child in forward, then ``F.conv2d`` on the module's own parameters."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, image_size: int = 32, **kwargs) -> None:
        super().__init__(cin, cout, k, stride, **kwargs)
        pad = max((math.ceil(image_size / stride) - 1) * stride + k - image_size, 0)
        self.static_padding = nn.ZeroPad2d((pad // 2, pad - pad // 2) * 2) if pad else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _same_pad(size: int, k: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (k - 1) * dilation + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """timm's ``Conv2dSame``: the 'SAME' pads computed in forward from the input size (Python math on sizes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.size()[-2:]
        kh, kw = self.weight.shape[-2:]
        ph = _same_pad(ih, kh, self.stride[0], self.dilation[0])
        pw = _same_pad(iw, kw, self.stride[1], self.dilation[1])
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class KernelMixer(nn.Module):
    """A conv on a parameter that is not called ``weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(channels, channels, 3, 3) / (3 * channels**0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.conv2d(x, self.kernel, None, 1, 1)


class FunctionalLinear(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / cin**0.5)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, eps=1e-3)
    with torch.no_grad():  # statistics far from identity, so that folding shows in the weights
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(0.5, 2.0), bn.bias.uniform_(-0.3, 0.3)
    return bn


class MBConvNet(nn.Module):
    """An EfficientNet-style net: stem, one MBConv block with squeeze-excitation, a mixer and the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = StaticSamePadConv(3, 16, 3, stride=2, image_size=32, bias=False), _bn(16)
        self.expand, self.bn1 = StaticSamePadConv(16, 32, 1, image_size=16, bias=False), _bn(32)
        self.dw, self.bn2 = Conv2dSame(32, 32, 3, stride=2, groups=32, bias=False), _bn(32)
        self.se_reduce = StaticSamePadConv(32, 8, 1, image_size=1)
        self.se_expand = StaticSamePadConv(8, 32, 1, image_size=1)
        self.project, self.bn3 = StaticSamePadConv(32, 24, 1, image_size=8, bias=False), _bn(24)
        self.mix = KernelMixer(24)
        self.head = FunctionalLinear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.bn0(self.stem(x)))
        x = F.silu(self.bn1(self.expand(x)))
        x = F.silu(self.bn2(self.dw(x)))
        s = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(F.adaptive_avg_pool2d(x, 1)))))
        x = self.mix(self.bn3(self.project(x * s)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


LAYERS = ["stem", "expand", "dw", "se_reduce", "se_expand", "project", "mix.kernel", "head"]


@pytest.fixture(scope="module")
def quantized() -> tuple[nn.Module, torch.fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    model = MBConvNet().eval()
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(2)]
    qgm = ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=CONFIG)
    return model, qgm, torch.randn(2, 3, 32, 32, generator=gen)


def test_capture_makes_layers_that_compute_what_the_model_computes() -> None:
    torch.manual_seed(0)
    model = MBConvNet().eval()
    x = torch.randn(2, 3, 32, 32)
    from fx2trt_pipeline.capture.rewrites import rewrite_for_capture

    rewritten = rewrite_for_capture(model, (x,))
    assert type(rewritten.dw) is FixedPadConv2d and rewritten.dw.pad == (0, 1, 0, 1)  # 'SAME' at 16x16, stride 2
    gm = capture(rewritten)
    modules = dict(gm.named_modules())
    calls = {str(n.target): type(modules[str(n.target)]) for n in gm.graph.nodes if n.op == "call_module"}
    assert {k: v for k, v in calls.items() if k in LAYERS} == {
        **{name: nn.Conv2d for name in LAYERS[:-1]},
        "head": nn.Linear,
    }
    assert not [n for n in gm.graph.nodes if n.op == "call_function" and n.target in (F.conv2d, F.linear)]
    assert gm.mix.kernel.weight is model.mix.kernel  # parameters shared, not copied
    with torch.no_grad():
        assert torch.equal(gm(x), MBConvNet.forward(model, x))  # same ops, same order: bit-identical


def test_every_conv_and_the_linear_get_int8_weights_and_bn_is_folded(quantized) -> None:
    model, qgm, x = quantized
    state = get_quant_state(qgm)
    assert sorted(w.module for w in state.placement.weights.values()) == sorted(LAYERS)
    weighted = weighted_nodes(qgm)
    assert len(weighted) == len(LAYERS)
    for node in weighted:
        w = node.args[1]
        assert is_dequantize(w) and w.args[0].op == "get_attr" and w.args[2] == 0, node.format_node()
        assert getattr(qgm, w.args[0].target).dtype == torch.int8
    assert functional(next(n for n in weighted if n.name == "head")) is F.linear
    modules = dict(qgm.named_modules())
    assert not [m for m in modules.values() if isinstance(m, nn.BatchNorm2d)]
    assert not [n for n in qgm.graph.nodes if n.target in (F.batch_norm, torch.batch_norm)]
    # the stem's int8 weights are its BN-folded weights (folded here by hand) to within half a step
    bn = model.bn0
    folded = model.stem.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
    q, scale = getattr(qgm, "stem_weight_int8"), getattr(qgm, "stem_weight_scale")
    step = scale.reshape(-1, 1, 1, 1)
    assert ((q.float() * step - folded).abs() <= step / 2 + 1e-6).all()
    assert isinstance(model.stem, StaticSamePadConv) and isinstance(model.dw, Conv2dSame)  # the user's model as is
    with torch.no_grad():
        cos = F.cosine_similarity(qgm(x).flatten(), model(x).flatten(), dim=0)
    assert cos > 0.99


def test_leaf_conv_subclass_stays_a_float_call() -> None:
    """Kept whole as a leaf, a conv subclass with its own forward is not lowered as if it were a plain conv."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), Conv2dSame(8, 8, 3, stride=2)).eval()
    x = torch.randn(2, 3, 16, 16)
    config = ftp.QuantConfig(show_progress=False, calibrator="minmax", leaf_modules=("Conv2dSame",))
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=config)
    assert [w.module for w in get_quant_state(qgm).placement.weights.values()] == ["0"]
    modules = dict(qgm.named_modules())
    calls = [n.target for n in qgm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)]
    assert calls == ["3"] and type(modules["3"]) is Conv2dSame
    with torch.no_grad():
        assert qgm(x).shape == model(x).shape == (2, 8, 8, 8)  # the 'SAME' padding of its forward is kept
        assert F.cosine_similarity(qgm(x).flatten(), model(x).flatten(), dim=0) > 0.99


class MaskedConv(nn.Conv2d):
    """A conv whose weight is computed in forward from its parameters: a constant once the model is frozen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, 1, 1)


class DynamicConv(nn.Conv2d):
    """A conv whose weight depends on the input (dynamic convolution): no constant weight exists to quantize."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * torch.sigmoid(x.mean()), self.bias, 1, 1)


def test_kept_in_float_lists_every_float_conv_with_its_reason() -> None:
    """A skipped linear and a dynamic conv, whose weight depends on the input, are both in the report's float list
    with their reasons."""
    from fx2trt_pipeline.deploy.analysis import kept_in_float

    torch.manual_seed(0)
    x = torch.randn(2, 8, 16, 16)
    convs = nn.Sequential(StaticSamePadConv(8, 16, 3, image_size=16), nn.ReLU(), DynamicConv(16, 16, 3), nn.ReLU())
    model = nn.Sequential(convs, nn.Flatten(), FunctionalLinear(16 * 16 * 16, 4)).eval()
    config = ftp.QuantConfig(show_progress=False, calibrator="minmax", skip=("2",))
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=config)
    assert [w.module for w in get_quant_state(qgm).placement.weights.values()] == ["0.0"]
    (dynamic,) = [n.name for n in qgm.graph.nodes if n.target is F.conv2d]
    rows = {r["layer"]: r["reason"] for r in kept_in_float(qgm)}
    assert set(rows) == {dynamic, "_2"}, rows
    assert "weight is computed in forward (by node 'mul')" in rows[dynamic]
    assert "QuantConfig.skip" in rows["_2"]
    with torch.no_grad():
        assert F.cosine_similarity(qgm(x).flatten(), model(x).flatten(), dim=0) > 0.99


def test_weight_made_from_parameters_is_quantized_under_its_module_name() -> None:
    """``weight * mask`` depends on parameters only: with example inputs it is a constant, quantized as a layer
    named after the module that computes it."""
    torch.manual_seed(0)
    masked = MaskedConv(16, 16, 3)
    masked.register_buffer("mask", (torch.rand_like(masked.weight) > 0.3).float())
    model = nn.Sequential(StaticSamePadConv(8, 16, 3, image_size=16), nn.ReLU(), masked, nn.ReLU()).eval()
    x = torch.randn(2, 8, 16, 16)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=CONFIG)
    assert [w.module for w in get_quant_state(qgm).placement.weights.values()] == ["0", "2"]
    q, scale = qgm.get_buffer("_2_weight_int8"), qgm.get_buffer("_2_weight_scale")
    masked_weight = masked.weight * masked.mask
    assert torch.equal(q == 0, masked_weight.abs() < scale.reshape(-1, 1, 1, 1) / 2)  # the mask's zeros stay zero
    with torch.no_grad():
        assert F.cosine_similarity(qgm(x).flatten(), model(x).flatten(), dim=0) > 0.99


class Functional(nn.Module):
    """Calls ``fn(self, x)``: one functional op on the module's parameters."""

    def __init__(self, fn, **params: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


FUNCTIONAL_CASES = {
    "conv1d_kwargs": (
        lambda m, x: F.conv1d(x, weight=m.weight, bias=m.bias, stride=2, padding=1),
        {"weight": torch.randn(6, 4, 3), "bias": torch.randn(6)},
        (2, 4, 9),
        nn.Conv1d,
    ),
    "conv_transpose2d_groups": (
        lambda m, x: F.conv_transpose2d(x, m.weight, None, 2, 1, 1, 2),
        {"weight": torch.randn(4, 3, 3, 3)},
        (2, 4, 5, 5),
        nn.ConvTranspose2d,
    ),
    "linear_without_bias": (lambda m, x: F.linear(x, m.weight), {"weight": torch.randn(5, 7)}, (3, 7), nn.Linear),
}


@pytest.mark.parametrize("case", list(FUNCTIONAL_CASES))
def test_functional_calls_become_equivalent_layers(case: str) -> None:
    fn, params, shape, layer_type = FUNCTIONAL_CASES[case]
    model = nn.Sequential(Functional(fn, **params)).eval()
    x = torch.randn(shape)
    gm = capture(model)
    (call,) = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert call.target == "0" and type(gm.get_submodule("0")) is layer_type
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_shared_weight_is_refused_with_its_reason() -> None:
    from fx2trt_pipeline.capture.functional_layers import layer_refusal

    twice = Functional(lambda m, x: F.linear(x, m.weight) + F.linear(x, m.weight, m.bias), weight=torch.randn(4, 4))
    twice.bias = nn.Parameter(torch.randn(4))
    gm = capture(nn.Sequential(twice).eval())
    linears = [n for n in gm.graph.nodes if n.target is F.linear]
    assert len(linears) == 2 and not [n for n in gm.graph.nodes if n.op == "call_module"]
    assert "parameter '0.weight' is also used by other ops" in layer_refusal(linears[0], gm)


@needs_trt
def test_plan_runs_every_layer_int8_and_the_executor_matches(quantized) -> None:
    from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
    from fx2trt_pipeline.network.inputs import InputSpec
    from fx2trt_pipeline.network.network import network_from_graph_module
    from fx2trt_pipeline.plan.audit import audit_plan
    from fx2trt_pipeline.validate.tie_parity import TieTolerance, tie_parity
    from fx2trt_pipeline.validate.tie_regions import ExecutorRegions

    _, qgm, x = quantized
    specs = [InputSpec("x", tuple(x.shape))]
    builder, network, _ctx = network_from_graph_module(qgm, specs, builder=create_builder())
    _, plan = engine_and_plan_from_network(builder, network, specs)
    audit = audit_plan(network, plan, qgm)
    n = len(LAYERS)
    assert audit.counts() == {"quantized": n, "int8_in_plan": n, "failed": 0, "no_int8_kernel": 0, "kept_in_float": 0}
    assert audit.summary_line().startswith(f"TensorRT plan: {n}/{n} quantized convs and matmuls run INT8")
    report = tie_parity(qgm, ExecutorRegions(network), (x,), TieTolerance(noise_flips=0))
    assert report, str(report)
    assert report.end_to_end_cosine > 0.9999


@needs_trt
def test_efficientnet_pytorch_b0_runs_every_conv_and_the_classifier_int8() -> None:
    """efficientnet_pytorch's own model (static 'SAME' convs), random weights, 64x64: 81 convs and the fc."""
    efficientnet = pytest.importorskip("efficientnet_pytorch", reason="pip install efficientnet_pytorch (dev extra)")
    from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
    from fx2trt_pipeline.network.inputs import InputSpec
    from fx2trt_pipeline.network.network import network_from_graph_module
    from fx2trt_pipeline.plan.audit import audit_plan

    torch.manual_seed(0)
    model = efficientnet.EfficientNet.from_name("efficientnet-b0", num_classes=10).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 81 and all(type(m).__name__ == "Conv2dStaticSamePadding" for m in convs)
    x = torch.randn(2, 3, 64, 64)
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=CONFIG)
    assert not [m for m in qgm.modules() if isinstance(m, nn.BatchNorm2d)]  # all 49 folded
    specs = [InputSpec("inputs", tuple(x.shape))]
    builder, network, _ctx = network_from_graph_module(qgm, specs, builder=create_builder())
    _, plan = engine_and_plan_from_network(builder, network, specs)
    audit = audit_plan(network, plan, qgm)
    assert audit.passed, audit.gate_lines()
    assert audit.counts()["int8_in_plan"] == audit.counts()["quantized"] == 82
    assert audit.summary_line().startswith("TensorRT plan: 82/82 quantized convs and matmuls run INT8; 0 kept")
