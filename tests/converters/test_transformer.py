"""Transformer converters: LayerNorm (module, functional), scaled dot-product attention, leaf
nn.MultiheadAttention (float graphs)."""

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


def _layer_norm_module() -> nn.Module:
    norm = nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-1, 1)
    return norm


def _attention_mask() -> torch.Tensor:
    return torch.tril(torch.ones(5, 5, dtype=torch.bool))


QKV = ((2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4))

CASES = [
    OpCase(
        "layer_norm_module_dynamic_batch",
        _layer_norm_module,
        inputs=((2, 5, 8),),
        dynamic_batch=True,
        layers={"NORMALIZATION": 1},
    ),
    OpCase(
        "layer_norm_functional_two_dims",
        lambda: Fn(lambda m, x: F.layer_norm(x, (4, 5), m.w, m.b, 1e-3), w=torch.rand(4, 5), b=torch.randn(4, 5)),
        inputs=((2, 3, 4, 5),),
    ),
    OpCase("layer_norm_functional_no_affine", lambda: Fn(lambda m, x: F.layer_norm(x, [5])), inputs=((2, 3, 5),)),
    OpCase(
        "layer_norm_channels_last_2d",
        lambda: Fn(lambda m, x: F.layer_norm(x.permute(0, 2, 3, 1), (3,)).permute(0, 3, 1, 2)),
        inputs=((2, 3, 4, 4),),
        quantize=True,
        atol=1e-3,
    ),
    OpCase(
        "sdpa_plain",
        lambda: Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v)),
        inputs=QKV,
        layers={"MATRIX_MULTIPLY": 2, "SOFTMAX": 1},
    ),
    OpCase(
        "sdpa_bool_mask_and_scale",
        lambda: Fn(
            lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m.mask, scale=0.3),
            mask=_attention_mask(),
        ),
        inputs=QKV,
    ),
]


class _Mha(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.mha(x, x, x, need_weights=False)
        return out


CASES += [
    OpCase(
        "multihead_attention_leaf_batch_first_dynamic",
        lambda: _Mha(True),
        inputs=((2, 5, 8),),
        dynamic_batch=True,
        layers={"MATRIX_MULTIPLY": 6, "SOFTMAX": 1},
    ),
    OpCase("multihead_attention_leaf_sequence_first", lambda: _Mha(False), inputs=((5, 2, 8),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_transformer_case(case: OpCase) -> None:
    run_case(case)


class _MhaWeights(_Mha):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x)[1] * 2


def test_attention_weights_output_is_refused() -> None:
    rows = find_unsupported(torch.fx.symbolic_trace(_MhaWeights(True)))
    assert len(rows) == 1 and "need_weights=False" in rows[0][2]


def test_causal_sdpa_is_refused() -> None:
    causal = Fn(lambda m, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    rows = find_unsupported(trace_module(causal, 3))
    assert len(rows) == 1 and "is_causal" in rows[0][2]
