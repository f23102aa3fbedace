"""Identity, eval-mode dropout and concatenation converters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

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
    OpCase("cat_torch", lambda: Fn(lambda m, a, b: torch.cat([a, b], 1)), inputs=TWO, layers={"CONCATENATION": 1}),
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
# Eval-mode identities and dropped assertions: no layer of their own.
CASES += [
    OpCase(
        "dropout3d_alpha_feature_alpha_modules",
        lambda: nn.Sequential(nn.Dropout3d(), nn.AlphaDropout(0.2), nn.FeatureAlphaDropout(0.2), nn.ReLU()),
        inputs=((2, 3, 2, 4, 4),),
        layers={"ACTIVATION": 1},
    ),
    OpCase(
        "dropout_functional_variants",
        lambda: Fn(
            lambda m, x: F.relu(
                F.feature_alpha_dropout(
                    F.alpha_dropout(
                        F.dropout3d(
                            F.dropout2d(F.dropout1d(x, 0.1, m.training).unsqueeze(-1), 0.1, m.training).unsqueeze(-1),
                            0.1,
                            m.training,
                        ),
                        0.1,
                        m.training,
                    ),
                    0.1,
                    m.training,
                )
            )
        ),
        inputs=((2, 3, 4),),
    ),
    OpCase(
        "stochastic_depth_eval",
        lambda: nn.Sequential(StochasticDepth(0.2, "row"), nn.ReLU()),
        inputs=X,
        layers={"ACTIVATION": 1},
    ),
    OpCase(
        "assert_on_static_rank_dropped",
        lambda: Fn(lambda m, x: (torch._assert(x.dim() == 4, "4-d"), x * 2)[1]),
        inputs=X,
        dynamic_batch=True,
        layers={"ELEMENTWISE": 1},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_misc_case(case: OpCase) -> None:
    run_case(case)


def test_training_dropout_is_refused() -> None:
    rows = find_unsupported(trace_module(Fn(lambda m, x: F.dropout(x, 0.5))))
    assert len(rows) == 1 and "training mode" in rows[0][2]
