"""Pooling converters: max / avg (padding, ceil_mode, count_include_pad) and adaptive average."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.converters.pooling import torch_pool_size
from fx2trt_pipeline.errors import ConversionError
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

CASES = [
    OpCase("maxpool_module_padding", lambda: nn.MaxPool2d(3, 2, 1), inputs=((2, 3, 9, 9),), layers={"POOLING": 1}),
    OpCase("maxpool_module_ceil_mode", lambda: nn.MaxPool2d(2, 2, ceil_mode=True), inputs=((2, 3, 7, 7),)),
    OpCase(
        "maxpool_module_ceil_mode_trimmed_window",
        lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        inputs=((1, 2, 6, 6),),
    ),
    OpCase(
        "maxpool_functional_dynamic_batch",
        lambda: Fn(lambda m, x: F.max_pool2d(x, 2)),
        inputs=((2, 3, 8, 8),),
        dynamic_batch=True,
    ),
    OpCase("maxpool_torch", lambda: Fn(lambda m, x: torch.max_pool2d(x, (2, 3), (2, 1))), inputs=((2, 3, 8, 8),)),
    OpCase(
        "avgpool_module_quantized_input",
        lambda: nn.AvgPool2d(2),
        inputs=((2, 3, 8, 8),),
        quantize=True,
        atol=1e-3,
    ),
    OpCase(
        "avgpool_module_exclude_pad",
        lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        inputs=((2, 3, 9, 9),),
    ),
    OpCase("avgpool_module_include_pad", lambda: nn.AvgPool2d(3, 1, 1), inputs=((2, 3, 6, 6),)),
    OpCase(
        "avgpool_functional_ceil",
        lambda: Fn(lambda m, x: F.avg_pool2d(x, 2, ceil_mode=True)),
        inputs=((2, 3, 7, 7),),
    ),
    OpCase(
        "adaptive_avgpool_module_global_dynamic_batch",
        lambda: nn.AdaptiveAvgPool2d(1),
        inputs=((2, 3, 7, 7),),
        dynamic_batch=True,
        layers={"REDUCE": 1},
    ),
    OpCase(
        "adaptive_avgpool_module_divisible",
        lambda: nn.AdaptiveAvgPool2d((2, 4)),
        inputs=((2, 3, 8, 8),),
        layers={"POOLING": 1},
    ),
    OpCase(
        "adaptive_avgpool_functional_none",
        lambda: Fn(lambda m, x: F.adaptive_avg_pool2d(x, (None, 2))),
        inputs=((2, 3, 6, 8),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pooling_case(case: OpCase) -> None:
    run_case(case)


def test_torch_pool_size_matches_torch() -> None:
    for size, k, s, p in [(7, 2, 2, 0), (6, 3, 2, 1), (5, 3, 3, 1), (10, 4, 3, 2)]:
        for ceil in (False, True):
            expected = F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil).shape[-1]
            assert torch_pool_size(size, k, s, p, ceil) == expected


def test_adaptive_pool_that_does_not_divide_fails_with_node_name() -> None:
    with pytest.raises(ConversionError, match="op.*divide"):
        run_case(OpCase("bad", lambda: nn.AdaptiveAvgPool2d(3), inputs=((1, 2, 7, 7),)))
