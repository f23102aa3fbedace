"""Convolution / deconvolution converters: float modules, functionals on int8 weights, reference modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from tests.converters.harness import OpCase, kernel_source, layer_type, run_case
from tests.converters.qdq_graph import Fn, ao_reference, ftp_quantized

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


class ConvRelu(nn.Module):
    """conv -> relu, the pattern torch.ao fuses into ConvReLU modules."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv, self.relu = conv, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


def _w(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 0.2


def _reference(model: nn.Module, shapes: tuple) -> OpCase:
    example = tuple(torch.randn(s, generator=torch.Generator().manual_seed(0)) for s in shapes)
    return dict(
        make=lambda: model,
        inputs=lambda: example,
        trace=lambda m: ao_reference(m, example),
        atol=0.05,
        rtol=0.05,
    )


CASES = [
    OpCase(
        "conv2d_module_groups_dilation",
        lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
        layers={"CONVOLUTION": 1},
    ),
    OpCase(
        "conv2d_module_same_even_kernel",
        lambda: nn.Conv2d(4, 3, 4, padding="same", bias=False),
        layers={"CONVOLUTION": 1},
    ),
    OpCase(
        "conv2d_module_stride_dynamic_batch",
        lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1),
        dynamic_batch=True,
        layers={"CONVOLUTION": 1},
    ),
    OpCase(
        "conv1d_module",
        lambda: nn.Conv1d(4, 6, 3, padding=1, stride=2),
        inputs=((2, 4, 16),),
        layers={"CONVOLUTION": 1, "UNSQUEEZE": 1, "SQUEEZE": 1},
    ),
    OpCase(
        "conv_transpose2d_module",
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "conv_transpose1d_module",
        lambda: nn.ConvTranspose1d(4, 5, 4, stride=2, padding=1),
        inputs=((2, 4, 10),),
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "conv2d_quantized_module",
        lambda: nn.Conv2d(4, 8, 3, padding=1),
        quantize=True,
        dynamic_batch=True,
        layers={"CONVOLUTION": 1, "QUANTIZE": 1, "DEQUANTIZE": 2},
        atol=1e-3,
    ),
    OpCase(
        "conv2d_functional_int8",
        lambda: Fn(lambda m, x: F.conv2d(x, m.w, m.b, 1, 1), w=_w(6, 4, 3, 3), b=torch.ones(6)),
        quantize=True,
        atol=1e-3,
        layers={"CONVOLUTION": 1, "DEQUANTIZE": 2, "CONSTANT": 3},
    ),
    OpCase(
        "conv2d_functional_same_string",
        lambda: Fn(lambda m, x: F.conv2d(x, m.w, padding="same"), w=_w(6, 4, 3, 3)),
        layers={"CONVOLUTION": 1},
    ),
    OpCase(
        "conv1d_functional_int8",
        lambda: Fn(lambda m, x: F.conv1d(x, m.w, None, 1, 1), w=_w(6, 4, 3)),
        inputs=((2, 4, 12),),
        quantize=True,
        atol=1e-3,
        layers={"CONVOLUTION": 1},
    ),
    OpCase(
        "conv_transpose2d_functional_int8_axis0",
        lambda: Fn(lambda m, x: F.conv_transpose2d(x, m.w, m.b, 2, 1, 1), w=_w(4, 6, 3, 3), b=torch.zeros(6)),
        quantize=True,
        deconv_axis=0,
        atol=1e-3,
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "conv_transpose2d_functional_int8_axis1",
        lambda: Fn(lambda m, x: F.conv_transpose2d(x, m.w, None, 2), w=_w(4, 6, 2, 2)),
        quantize=True,
        deconv_axis=1,
        atol=1e-3,
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "conv_transpose1d_functional_int8",
        lambda: Fn(lambda m, x: F.conv_transpose1d(x, m.w, None, 2), w=_w(4, 3, 3)),
        inputs=((2, 4, 7),),
        quantize=True,
        atol=1e-3,
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "reference_conv2d_relu_and_conv2d",
        **_reference(nn.Sequential(ConvRelu(nn.Conv2d(4, 8, 3, padding=1)), nn.Conv2d(8, 4, 1)), ((2, 4, 8, 8),)),
    ),
    OpCase(
        "reference_conv1d_relu_and_conv1d",
        **_reference(nn.Sequential(ConvRelu(nn.Conv1d(4, 8, 3, padding=1)), nn.Conv1d(8, 4, 1)), ((2, 4, 10),)),
    ),
    OpCase(
        "reference_conv_transpose",
        **_reference(
            nn.Sequential(nn.ConvTranspose2d(4, 6, 2, stride=2), nn.Flatten(2), nn.ConvTranspose1d(6, 3, 4, stride=2)),
            ((1, 4, 8, 8),),
        ),
    ),
    OpCase(
        "conv2d_integer_arithmetic",
        lambda: nn.Conv2d(4, 8, 3, padding=1),
        **ftp_quantized((2, 4, 8, 8)),
        layers={"CONVOLUTION": 1, "QUANTIZE": 1},
    ),
    OpCase("conv1d_integer_arithmetic", lambda: nn.Conv1d(4, 6, 3, padding=1), **ftp_quantized((2, 4, 12))),
    OpCase(
        "conv_transpose2d_integer_arithmetic",
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1),
        **ftp_quantized((2, 4, 6, 6), deconv_weight_axis=1),
        layers={"DECONVOLUTION": 1},
    ),
    OpCase(
        "conv_transpose1d_integer_arithmetic",
        lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1),
        **ftp_quantized((2, 4, 8), deconv_weight_axis=1),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conv_case(case: OpCase) -> None:
    run_case(case)


def test_deconv_kernel_axis_follows_the_graph() -> None:
    """The weight DQ axis in the network is the graph's dequantize axis, for both conventions."""
    for axis in (0, 1):
        case = OpCase("deconv", lambda: nn.ConvTranspose2d(4, 6, 3), quantize=True, deconv_axis=axis, atol=1e-3)
        converted = run_case(case)
        (deconv,) = converted.layers_of("DECONVOLUTION")
        dq = kernel_source(converted.network, deconv)
        dq.__class__ = trt_api.get_trt().IDequantizeLayer
        assert dq.axis == axis
        assert tuple(dq.get_input(1).shape) == ((4,) if axis == 0 else (6,))


def test_int8_kernel_is_input_one_of_the_conv() -> None:
    converted = run_case(CASES[6])
    (conv,) = converted.layers_of("CONVOLUTION")
    source = kernel_source(converted.network, conv)
    assert layer_type(source) == "DEQUANTIZE" and source.name == "op_weight_dq"
    assert conv.name == "op"


def test_reflect_padding_is_refused_before_conversion() -> None:
    from fx2trt_pipeline.network.network import find_unsupported

    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")))
    ((name, _target, reason, _where),) = find_unsupported(gm)
    assert name == "_0" and "padding_mode" in reason
