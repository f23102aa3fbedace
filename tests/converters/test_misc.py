"""Identity, eval-mode dropout and concatenation converters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.network import find_unsupported
from tests.converters.harness import OpCase, run_case, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

X = ((2, 3, 4, 4),)
TWO = ((2, 3, 4), (2, 5, 4))

CASES = [
    OpCase("identity_module_output_is_input", lambda: nn.Identity(), inputs=X, layers={"IDENTITY": 1}),
    OpCase("dropout_module", lambda: nn.Sequential(nn.Dropout(0.3), nn.ReLU()), inputs=X),
    OpCase("dropout1d_module", lambda: nn.Sequential(nn.Dropout1d(), nn.ReLU()), inputs=((2, 3, 4),)),
    OpCase("dropout2d_module", lambda: nn.Sequential(nn.Dropout2d(), nn.ReLU()), inputs=X),
    OpCase("dropout_functional_eval", lambda: Fn(lambda m, x: F.dropout(x, 0.5, m.training) + 1), inputs=X),
    OpCase(
        "cat_torch", lambda: Fn(lambda m, a, b: torch.cat([a, b], 1)), inputs=TWO, layers={"CONCATENATION": 1}
    ),
    OpCase(
        "cat_quantized_inputs",
        lambda: Fn(lambda m, a, b: torch.cat((a, b), dim=-2)),
        inputs=TWO,
        quantize=True,
        atol=1e-3,
    ),
    OpCase(
        "concat_alias_dynamic_batch",
        lambda: Fn(lambda m, a, b: torch.concat([a, b], 1)),
        inputs=TWO,
        dynamic_batch=True,
    ),
    OpCase(
        "concatenate_alias_with_constant",
        lambda: Fn(lambda m, a: torch.concatenate([a, m.c], 0), c=torch.ones(1, 3, 4)),
        inputs=((2, 3, 4),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_misc_case(case: OpCase) -> None:
    run_case(case)


def test_training_dropout_is_refused() -> None:
    rows = find_unsupported(trace_module(Fn(lambda m, x: F.dropout(x, 0.5))))
    assert len(rows) == 1 and "training mode" in rows[0][2]
