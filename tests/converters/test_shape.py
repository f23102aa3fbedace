"""Shape converters, static and with a dynamic batch (shape tensors)."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from fx2trt_pipeline import trt_api
from tests.converters.harness import OpCase, run_case
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

X = ((2, 3, 4, 5),)


def fn(f) -> callable:
    return lambda: Fn(lambda m, x: f(x))


CASES = [
    OpCase(
        "flatten_torch_dynamic_batch",
        fn(lambda x: torch.flatten(x, 1)),
        inputs=X,
        dynamic_batch=True,
        layers={"SHUFFLE": 1},
    ),
    OpCase(
        "flatten_torch_middle_dynamic_batch",
        fn(lambda x: torch.flatten(x, 1, 2)),
        inputs=X,
        dynamic_batch=True,
    ),
    OpCase("flatten_method_all", fn(lambda x: x.flatten()), inputs=X),
    OpCase("flatten_module", lambda: nn.Flatten(), inputs=X, dynamic_batch=True),
    OpCase("reshape_torch", fn(lambda x: torch.reshape(x, (6, -1))), inputs=X),
    OpCase("reshape_method_dynamic_size", fn(lambda x: x.reshape(x.size(0), 3, -1)), inputs=X, dynamic_batch=True),
    OpCase("view_method_size_dynamic_batch", fn(lambda x: x.view(x.size(0), -1)), inputs=X, dynamic_batch=True),
    OpCase("view_method_tuple", fn(lambda x: x.view((2, 12, 5))), inputs=X),
    OpCase(
        "view_shape_attribute_dynamic",
        fn(lambda x: x.view(x.shape[0], x.shape[1], -1)),
        inputs=X,
        dynamic_batch=True,
    ),
    OpCase(
        "size_method_all_dims",
        fn(lambda x: x.view(x.size()[0], x.size()[1], -1)),
        inputs=X,
        dynamic_batch=True,
    ),
    OpCase("size_method_static_ndim", fn(lambda x: x.view(x.size(0), x.ndim, -1)), inputs=((2, 4, 3),)),
    OpCase("permute_torch", fn(lambda x: torch.permute(x, (0, 2, 3, 1))), inputs=X),
    OpCase("permute_method_varargs", fn(lambda x: x.permute(0, 3, 1, 2)), inputs=X, dynamic_batch=True),
    OpCase("transpose_torch", fn(lambda x: torch.transpose(x, 1, -1)), inputs=X),
    OpCase("transpose_method_contiguous", fn(lambda x: x.transpose(1, 2).contiguous()), inputs=X),
    OpCase("squeeze_torch_dim", fn(lambda x: torch.squeeze(x, 2)), inputs=((2, 3, 1, 5),)),
    OpCase("squeeze_method_all", fn(lambda x: x.squeeze()), inputs=((2, 1, 3, 1),)),
    OpCase("unsqueeze_torch", fn(lambda x: torch.unsqueeze(x, 1)), inputs=X, dynamic_batch=True),
    OpCase("unsqueeze_method_negative", fn(lambda x: x.unsqueeze(-1)), inputs=X),
    OpCase("chunk_torch", fn(lambda x: torch.chunk(x, 2, 1)[1]), inputs=X, layers={"SLICE": 2}),
    OpCase("chunk_method_uneven_dynamic", fn(lambda x: x.chunk(2, dim=-1)[1] * 2), inputs=X, dynamic_batch=True),
    OpCase("split_torch_size", fn(lambda x: torch.split(x, 2, dim=3)[2]), inputs=X),
    OpCase("split_method_sections", fn(lambda x: x.split([1, 2], 1)[0]), inputs=X),
    OpCase("getitem_slices_ints_none_ellipsis", fn(lambda x: x[:, 1, None, ..., 1:4:2]), inputs=X),
    OpCase("getitem_dynamic_batch_slice", fn(lambda x: x[:, :2, -1]), inputs=X, dynamic_batch=True),
    OpCase("getitem_tuple_output", fn(lambda x: operator.getitem(torch.split(x, 3, 0), 0)), inputs=((6, 2),)),
    OpCase("multiple_outputs", fn(lambda x: (x.chunk(2, 1)[0], x * 2)), inputs=((2, 4),)),
]


class ClassToken(nn.Module):
    """ViT's class token: a parameter broadcast to the (dynamic) batch and prepended to the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


# Shape queries and broadcasting met in transformers and detector heads.
CASES += [
    OpCase("dim_ndimension", fn(lambda x: x.reshape(x.dim(), -1) * x.ndimension()), inputs=((2, 3, 4, 5),)),
    OpCase(
        "expand_class_token_dynamic_batch",
        lambda: ClassToken(),
        inputs=((2, 3, 5),),
        dynamic_batch=True,
        layers={"SLICE": 1},
    ),
    OpCase("expand_new_leading_dims", fn(lambda x: x.expand(2, 3, 4, 5)), inputs=((4, 1),)),
    OpCase(
        "expand_as_other",
        lambda: Fn(lambda m, x: m.b.expand_as(x) + x, b=torch.randn(1, 3, 1, 1)),
        inputs=X,
        dynamic_batch=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_shape_case(case: OpCase) -> None:
    run_case(case)
