"""Whole torchvision models (random weights) through the converters, built with the real builder and
compared with eager torch in the network executor: float resnet18 / mobilenet_v2, a hand-quantized
resnet18 (our Q/DQ ops, int8 weights) and a torch.ao reference-quantized resnet18."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from fx2trt_pipeline import trt_api
from tests.converters.harness import compare_with_eager, convert_gm
from tests.converters.qdq_graph import ao_reference, lower_weights, quantize_weighted_inputs

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    pytest.mark.filterwarnings("ignore"),
]


def _example(batch: int = 2, size: int = 64) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)),)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_float_model_dynamic_batch(name: str) -> None:
    model = _model(name)
    gm = torch.fx.symbolic_trace(model)
    converted = convert_gm(gm, _example(), dynamic_batch=True)
    assert tuple(converted.network.get_input(0).shape) == (-1, 3, 64, 64)
    assert tuple(converted.network.get_output(0).shape) == (-1, 1000)
    types = converted.layer_types()
    assert types["CONVOLUTION"] == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    compare_with_eager(converted, atol=1e-3, rtol=1e-3)


def test_hand_quantized_resnet18_dynamic_batch() -> None:
    example = _example()
    gm = torch.fx.symbolic_trace(_model("resnet18"))
    gm = lower_weights(quantize_weighted_inputs(gm, example))
    converted = convert_gm(gm, example, dynamic_batch=True)  # Q/DQ counts and int8 kernels checked inside
    types = converted.layer_types()
    assert types["CONVOLUTION"] == 20 and types["MATRIX_MULTIPLY"] == 1
    assert types["DEQUANTIZE"] == 21 + types["QUANTIZE"]  # one per int8 weight + one per activation Q
    # The executor runs the network, eager torch runs the simulated INT8 graph: they must agree.
    compare_with_eager(converted, atol=0.05, rtol=0.05)


def test_torch_ao_reference_resnet18() -> None:
    example = _example(batch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = ao_reference(_model("resnet18"), example)
    converted = convert_gm(gm, example)
    types = converted.layer_types()
    assert types["CONVOLUTION"] == 20 and types["QUANTIZE"] > 20
    compare_with_eager(converted, atol=None, min_cosine=0.999)


class Mixed(torch.nn.Module):
    """conv + BN + ReLU, residual add, deconv, concat, avg pool and linear: every quantizable kind."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(12 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = y + self.conv2(y)
        z = self.pool(self.up(y))
        return self.fc(torch.flatten(torch.cat([y, z], 1), 1))


@pytest.mark.parametrize("deconv_axis", [0, 1])
def test_real_quantizer_output_converts(deconv_axis: int) -> None:
    """The quantizer's reference GraphModule (the graph contract) converts, builds and matches in the executor."""
    from fx2trt_pipeline.quantize.api import quantize_model
    from fx2trt_pipeline.quantize.config import QuantConfig

    torch.manual_seed(0)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    config = QuantConfig(calibrator="minmax", deconv_weight_axis=deconv_axis, show_progress=False)
    qgm = quantize_model(Mixed().eval(), batches, config=config)
    converted = convert_gm(qgm, (batches[0],), dynamic_batch=True)
    types = converted.layer_types()
    assert types["CONVOLUTION"] == 2 and types["DECONVOLUTION"] == 1 and types["MATRIX_MULTIPLY"] == 1
    compare_with_eager(converted, atol=1e-3, rtol=1e-3)
