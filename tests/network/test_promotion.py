"""Mixed-dtype elementwise operands are promoted as torch promotes them, or refused when TensorRT lacks the type."""

from __future__ import annotations

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConversionError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.trt_types import trt_dtype_name

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


class Add(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def _network_dtype(a: torch.dtype, b: torch.dtype) -> str:
    gm = torch.fx.symbolic_trace(Add())
    _, network, _ctx = network_from_graph_module(gm, [InputSpec("a", (2, 3), a), InputSpec("b", (3,), b)])
    return trt_dtype_name(network.get_output(0).dtype)


@pytest.mark.parametrize(
    "a, b",
    [
        (torch.bool, torch.int32),
        (torch.int8, torch.int32),
        (torch.int32, torch.int64),
        (torch.int64, torch.float16),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float16),  # torch gives float32, neither operand's type
        (torch.int32, torch.bfloat16),
    ],
)
def test_operands_are_promoted_as_torch_does(a: torch.dtype, b: torch.dtype) -> None:
    eager = (torch.zeros(2, 3, dtype=a) + torch.zeros(3, dtype=b)).dtype  # what torch itself computes
    assert _network_dtype(a, b) == str(eager).removeprefix("torch.")
    assert _network_dtype(b, a) == str(eager).removeprefix("torch.")


def test_a_promotion_to_a_type_tensorrt_lacks_is_refused() -> None:
    assert (torch.zeros(1, dtype=torch.uint8) + torch.zeros(1, dtype=torch.int8)).dtype == torch.int16
    with pytest.raises(ConversionError, match="int16"):
        _network_dtype(torch.uint8, torch.int8)
