"""Q/DQ structure follows TensorRT's placement rules on real architectures."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.models.centernet import centernet_resnet18
from fx2trt_pipeline.quantize.qdq_ops import is_dequantize, is_quantize
from tests.conftest import batches
from tests.quantize.helpers import (
    act_quant_nodes,
    adds,
    functional,
    is_on_grid,
    nodes,
    weight_dq_nodes,
    weighted_nodes,
)

CFG = dict(show_progress=False)


def _quantize(model: nn.Module, shape: tuple[int, ...], **cfg) -> torch.fx.GraphModule:
    data = batches(shape, 2)
    return ftp.quantize_model(model.eval(), data, example_inputs=(data[0],), config=ftp.QuantConfig(**{**CFG, **cfg}))


@pytest.fixture(scope="module")
def resnet18_q() -> torch.fx.GraphModule:
    return _quantize(torchvision.models.resnet18(), (2, 3, 64, 64), calibrator="minmax")


def test_resnet18_structure(resnet18_q: torch.fx.GraphModule) -> None:
    gm = resnet18_q
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    convs = weighted_nodes(gm)
    assert len(convs) == 21  # 20 convs + fc, all lowered with int8 weights
    assert len(weight_dq_nodes(gm)) == 21
    for conv in convs:
        w = conv.args[1]
        assert is_dequantize(w) and w.args[2] == 0
        assert getattr(gm, w.args[0].target).dtype == torch.int8
        assert is_on_grid(gm, conv.args[0]), f"{conv.name} input is not quantized"
    # Rule 4: every residual add keeps one single-use conv input in float, the other is quantized.
    for add in adds(gm):
        a, b = add.args
        conv_in = [x for x in (a, b) if x in convs and len(x.users) == 1]
        assert conv_in, add.name
        other = b if conv_in[0] is a else a
        assert is_on_grid(gm, other), f"{add.name}: residual input not quantized"
    # Rule 2: the only quantized conv outputs are the 3 downsample convs feeding an add next to a conv.
    q_after_conv = [q for q in act_quant_nodes(gm) if q.args[0] in convs]
    assert sorted(q.args[0].name for q in q_after_conv) == [f"layer{i}_0_downsample_0" for i in (2, 3, 4)]
    assert len(act_quant_nodes(gm)) == 22
    assert len(nodes(gm, is_dequantize)) == 22 + 21


def test_resnet18_maxpool_shares_input_scale(resnet18_q: torch.fx.GraphModule) -> None:
    gm = resnet18_q
    maxpool = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "maxpool")
    assert is_dequantize(maxpool.args[0])  # Q/DQ sits before the pool, none after it
    assert not any(is_quantize(u) for u in maxpool.users)


def test_mobilenet_v2_structure() -> None:
    gm = _quantize(torchvision.models.mobilenet_v2(), (2, 3, 64, 64), calibrator="percentile")
    convs = weighted_nodes(gm)
    assert len(convs) == 53  # 52 convs + classifier
    for conv in convs:
        assert is_on_grid(gm, conv.args[0]), conv.name
    for add in adds(gm):  # x + conv(x): the block input is quantized, the projection conv fuses
        a, b = add.args
        assert is_on_grid(gm, a) and b in convs and len(b.users) == 1
    # depthwise convs keep groups and get per-channel scales of their own size
    dw = [c for c in convs if len(c.args) > 6 and c.args[6] > 1]
    assert dw and all(getattr(gm, c.args[1].args[1].target).numel() == c.args[6] for c in dw)


@pytest.mark.parametrize("axis", [0, 1])
def test_centernet_deconv_weight_axis(axis: int) -> None:
    model = centernet_resnet18(num_classes=4)
    gm = _quantize(model, (1, 3, 64, 64), calibrator="minmax", deconv_weight_axis=axis)
    deconvs = [n for n in weighted_nodes(gm) if functional(n) is F.conv_transpose2d]
    assert len(deconvs) == 3
    for d in deconvs:
        wdq = d.args[1]
        w_int8 = getattr(gm, wdq.args[0].target)
        scale = getattr(gm, wdq.args[1].target)
        assert wdq.args[2] == axis and scale.numel() == w_int8.shape[axis]
        assert is_on_grid(gm, d.args[0])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    heads = [n for n in weighted_nodes(gm) if functional(n) is F.conv2d and n.name.startswith(("hm", "wh", "reg"))]
    assert len(heads) == 6


class ConcatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.pool = nn.MaxPool2d(2)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c(self.pool(torch.cat([self.a(x), torch.relu(self.b(x))], 1)))


def test_concat_inputs_share_one_scale() -> None:
    gm = _quantize(ConcatNet(), (2, 3, 8, 8), calibrator="minmax")
    cat = next(n for n in gm.graph.nodes if n.target is torch.cat)
    ins = cat.args[0]
    assert all(is_dequantize(i) for i in ins)
    assert len({i.args[1].target for i in ins}) == 1  # one shared scale buffer
    conv_c = next(n for n in weighted_nodes(gm) if n.name == "c")
    assert is_on_grid(gm, conv_c.args[0])
    # the shared amax covers both branches
    state = ftp.get_quant_state(gm)
    group = state.placement.points[ins[0].args[0].args[0].name].group
    assert set(state.placement.groups[group].members) == {"a", "relu"}


def test_skip_and_overrides() -> None:
    cfg = dict(
        calibrator="entropy",
        skip=("layer4.*",),
        name_overrides={"fc": ftp.LayerOverride(calibrator="minmax")},
        module_type_overrides={"Conv2d": ftp.LayerOverride(calibrator="percentile", percentile=99.9)},
    )
    gm = _quantize(torchvision.models.resnet18(), (2, 3, 64, 64), **cfg)
    float_convs = [
        n.target for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Conv2d)
    ]
    assert sorted(float_convs) == [
        "layer4.0.conv1",
        "layer4.0.conv2",
        "layer4.0.downsample.0",
        "layer4.1.conv1",
        "layer4.1.conv2",
    ]
    state = ftp.get_quant_state(gm)
    fc_group = state.placement.groups[state.placement.points["flatten"].group]
    assert fc_group.calibrator == "minmax"
    assert state.amax[fc_group.key] == pytest.approx(state.stats[fc_group.key].amax)
    conv_group = state.placement.groups[state.placement.points["x"].group]
    assert (conv_group.calibrator, conv_group.percentile) == ("percentile", 99.9)


def test_quantize_ops_selects_op_kinds() -> None:
    gm = _quantize(torchvision.models.resnet18(), (2, 3, 64, 64), calibrator="minmax", quantize_ops=("conv", "linear"))
    for add in adds(gm):
        assert not any(
            is_dequantize(a)
            for a in add.args
            if a.op == "call_function"
            and a.target is not operator.add
            and add.args.index(a) == 1
            and "downsample" in a.name
        )
    assert not any(q.args[0].name.endswith("downsample_0") for q in act_quant_nodes(gm))
