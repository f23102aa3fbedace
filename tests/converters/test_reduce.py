"""Reduction converters: mean / sum over dims with and without keepdim."""

from __future__ import annotations

import pytest
import torch

from fx2trt_pipeline import trt_api
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

X = ((2, 3, 4, 5),)

CASES = [
    OpCase(
        "mean_torch_dims_keepdim",
        lambda: Fn(lambda m, x: torch.mean(x, (2, 3), keepdim=True)),
        inputs=X,
        dynamic_batch=True,
        layers={"REDUCE": 1},
    ),
    OpCase("mean_method_negative_dim", lambda: Fn(lambda m, x: x.mean(-1)), inputs=X),
    OpCase("mean_method_all", lambda: Fn(lambda m, x: x.mean()), inputs=X),
    OpCase("sum_torch_dim", lambda: Fn(lambda m, x: torch.sum(x, 1)), inputs=X),
    OpCase("sum_method_keepdim", lambda: Fn(lambda m, x: x.sum(dim=[1, 3], keepdim=True)), inputs=X),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reduce_case(case: OpCase) -> None:
    run_case(case)
