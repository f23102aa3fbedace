"""Detector-head utilities: Tensor.to / type_as / float, device and dtype attributes, clamp / clip, arange."""

from __future__ import annotations

import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.quantize.float16 import float_cast
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

X = ((2, 3, 4, 5),)
torch.fx.wrap("float_cast")  # traced as one call_function node here too, as in graphs from quantize_model()


def _anchor_grid(m, x: torch.Tensor) -> torch.Tensor:
    """YOLO-style grid: arange over the (static) feature size, cast and moved like the input, added to x."""
    h, w = x.shape[-2], x.shape[-1]
    ys = torch.arange(h, device=x.device).to(x.dtype).view(1, 1, h, 1)
    xs = torch.arange(0, w, 1).type_as(x).view(1, 1, 1, w)
    return (x + ys) * 2 + xs


CASES = [
    OpCase("anchor_grid_arange_to_device_dtype", lambda: Fn(_anchor_grid), inputs=X, dynamic_batch=True),
    OpCase(
        "to_int_and_back_float",
        lambda: Fn(lambda m, x: (x * 4).to(torch.int32).float() / 4),
        inputs=X,
        layers={"CAST": 2},
    ),
    OpCase(
        "float_cast_to_half_and_back",
        lambda: Fn(lambda m, x: float_cast(float_cast(x, torch.float16) * 0.5, torch.float32)),
        inputs=X,
        layers={"CAST": 2},
    ),
    OpCase("clamp_numbers", lambda: Fn(lambda m, x: torch.clamp(x, -0.5, 0.5)), inputs=X),
    OpCase("clip_max_only_method", lambda: Fn(lambda m, x: x.clip(max=0.25) + x.clamp(min=0.0)), inputs=X),
    OpCase(
        "clip_torch_tensor_bounds",
        lambda: Fn(lambda m, x: torch.clip(x, m.low, m.high), low=-torch.rand(5), high=torch.rand(5)),
        inputs=X,
    ),
    OpCase(
        "roll_two_dims_dynamic_batch",
        lambda: Fn(lambda m, x: torch.roll(x, shifts=(-1, 2), dims=(1, 2))),
        inputs=((2, 4, 5, 3),),
        dynamic_batch=True,
        layers={"SLICE": 4},
    ),
    OpCase("roll_method_zero_shift", lambda: Fn(lambda m, x: x.roll(4, 1)), inputs=((2, 4, 3),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_tensor_ops_case(case: OpCase) -> None:
    run_case(case)
