"""Unfused BatchNorm converters (eval mode) -> IScaleLayer."""

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


def _bn(bn: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=gen))
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen))
    return bn


CASES = [
    OpCase(
        "batchnorm2d_module",
        lambda: _bn(nn.BatchNorm2d(4)),
        inputs=((2, 4, 3, 3),),
        dynamic_batch=True,
        layers={"SCALE": 1},
    ),
    OpCase("batchnorm1d_module_2d_input", lambda: _bn(nn.BatchNorm1d(4, affine=False)), inputs=((3, 4),)),
    OpCase("batchnorm1d_module_3d_input", lambda: _bn(nn.BatchNorm1d(4)), inputs=((3, 4, 6),)),
    OpCase(
        "batch_norm_functional",
        lambda: Fn(
            lambda m, x: F.batch_norm(x, m.mean, m.var, m.w, m.b, eps=1e-3),
            mean=torch.randn(4),
            var=torch.rand(4) + 0.5,
            w=torch.randn(4),
            b=torch.randn(4),
        ),
        inputs=((2, 4, 3, 3),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_normalization_case(case: OpCase) -> None:
    run_case(case)


def test_train_mode_batchnorm_is_refused() -> None:
    gm = trace_module(nn.BatchNorm2d(4))
    gm.op.train()
    rows = find_unsupported(gm)
    assert len(rows) == 1 and "train mode" in rows[0][2]
