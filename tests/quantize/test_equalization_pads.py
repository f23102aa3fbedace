"""Equalization sees through zero padding (TF-style "same" padding before a depthwise conv) and says what it did."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.quantize.api import prepared_info
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.equalization import summary_line

torchvision = pytest.importorskip("torchvision")


def explicit_pads(model: nn.Module, value: float = 0.0) -> nn.Module:
    """Every padded depthwise conv's padding moved into a constant pad module in front of it."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and child.groups > 1 and child.padding == (1, 1):
                child.padding = (0, 0)
                setattr(module, name, nn.Sequential(nn.ConstantPad2d(1, value), child))
    return model.eval()


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().eval()


def _prepared(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    return ftp.prepare(model, (x,), QuantConfig(equalization="activations"))


def test_zero_pads_between_relu6_and_depthwise_conv_are_seen_through(mobilenet: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    padded = explicit_pads(copy.deepcopy(mobilenet))
    torch.testing.assert_close(padded(x), mobilenet(x), rtol=1e-5, atol=1e-5)  # the same function
    gm = _prepared(padded, x)
    pairs = prepared_info(gm).equalized
    depthwise = [m for m in mobilenet.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(pairs) == len(depthwise) == 17  # every conv -> ReLU6 -> pad -> depthwise conv
    assert all(p.link == "relu6" and p.second.endswith(".1") for p in pairs)  # .1: the conv after its pad
    assert all(max(p.scales) <= 1.0 and min(p.scales) < 1.0 for p in pairs)  # channels were scaled up
    assert summary_line(gm) == (
        f"equalization (activations) equalized {len(pairs)} conv -> depthwise conv pairs by activation range"
    )
    # the equalized graph (observers pass values through) still computes the model
    torch.testing.assert_close(gm(x), mobilenet(x), rtol=1e-4, atol=1e-4)


def test_a_non_zero_pad_blocks_the_pair_and_the_line_says_why(mobilenet: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    gm = _prepared(explicit_pads(copy.deepcopy(mobilenet), value=0.5), x)
    assert prepared_info(gm).equalized == []
    line = summary_line(gm)
    assert line.startswith("equalization (activations) equalized 0 pairs: features.0.0 -> features.1.conv.0.0.1: ")
    assert "ConstantPad2d 'features_1_conv_0_0_0' between them is neither ReLU, ReLU6, identity nor a zero pad" in line
    assert line.endswith("(and 16 more); the model is quantized as if without --equalization")
