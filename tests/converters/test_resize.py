"""Resize converters: interpolate and Upsample (nearest, bilinear, align_corners; scale or size)."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.network import find_unsupported
from tests.converters.harness import OpCase, run_case, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

X = ((2, 3, 5, 6),)

CASES = [
    OpCase(
        "interpolate_nearest_scale",
        lambda: Fn(lambda m, x: F.interpolate(x, scale_factor=2)),
        inputs=X,
        layers={"RESIZE": 1},
    ),
    OpCase(
        "interpolate_nearest_size_dynamic_batch",
        lambda: Fn(lambda m, x: F.interpolate(x, size=(7, 9))),
        inputs=X,
        dynamic_batch=True,
    ),
    OpCase(
        "interpolate_bilinear_half_pixel",
        lambda: Fn(lambda m, x: F.interpolate(x, scale_factor=(2, 3), mode="bilinear")),
        inputs=X,
    ),
    OpCase(
        "interpolate_bilinear_align_corners_size",
        lambda: Fn(lambda m, x: F.interpolate(x, size=(9, 4), mode="bilinear", align_corners=True)),
        inputs=X,
    ),
    OpCase("upsample_module_nearest", lambda: nn.Upsample(scale_factor=2), inputs=X, quantize=True, atol=1e-3),
    OpCase(
        "upsample_module_bilinear_dynamic",
        lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
        inputs=X,
        dynamic_batch=True,
    ),
    OpCase("upsampling_nearest2d_module", lambda: nn.UpsamplingNearest2d(size=(10, 12)), inputs=X),
    OpCase("upsampling_bilinear2d_module", lambda: nn.UpsamplingBilinear2d(scale_factor=2), inputs=X),
]
# Segmentation heads resize to a size read from another tensor's shape (static or dynamic).
CASES += [
    OpCase(
        "interpolate_size_from_other_shape_dynamic_batch",
        lambda: Fn(lambda m, x, y: F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False) + y),
        inputs=((2, 3, 5, 6), (2, 3, 9, 11)),
        dynamic_batch=True,
    ),
    OpCase(
        "interpolate_size_from_ints_of_shape",
        lambda: Fn(lambda m, x: F.interpolate(x, size=(x.shape[2] * 2, x.shape[3] + 1), mode="nearest")),
        inputs=X,
        dynamic_batch=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resize_case(case: OpCase) -> None:
    run_case(case)


def test_bicubic_is_refused() -> None:
    rows = find_unsupported(trace_module(Fn(lambda m, x: F.interpolate(x, scale_factor=2, mode="bicubic"))))
    assert len(rows) == 1 and "bicubic" in rows[0][2]
