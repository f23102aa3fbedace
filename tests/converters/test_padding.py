"""Padding converters: F.pad in every mode and every pad module, static and with a dynamic batch."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.converters.padding import MODULE_MODES
from fx2trt_pipeline.network.network import find_unsupported
from tests.converters.harness import OpCase, run_case, trace_module
from tests.converters.qdq_graph import Fn

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


def _module_case(cls: type) -> OpCase:
    rank = int(cls.__name__[-2])  # ZeroPad2d -> 2 padded dims
    widths = (1, 2, 2, 1, 1, 0)[: 2 * rank]
    args = (widths, 1.5) if cls.__name__.startswith("ConstantPad") else (widths,)
    shape = (2, 3, 4, 5, 6)[: rank + 2]
    return OpCase(
        f"module_{cls.__name__}", lambda: cls(*args), inputs=(shape,), dynamic_batch=rank == 2, layers={"SLICE": 1}
    )


CASES = [
    OpCase("pad_constant_value", lambda: Fn(lambda m, x: F.pad(x, (1, 2, 0, 3), value=-0.5)), inputs=((2, 3, 4, 5),)),
    OpCase("pad_negative_crops", lambda: Fn(lambda m, x: F.pad(x, (-1, 2, 1, -2))), inputs=((2, 3, 4, 5),)),
    OpCase(
        "pad_reflect_dynamic_batch",
        lambda: Fn(lambda m, x: F.pad(x, (2, 1, 1, 3), mode="reflect")),
        inputs=((2, 3, 5, 6),),
        dynamic_batch=True,
    ),
    OpCase("pad_replicate", lambda: Fn(lambda m, x: F.pad(x, (2, 2), mode="replicate")), inputs=((2, 3, 5),)),
    OpCase("pad_circular", lambda: Fn(lambda m, x: F.pad(x, (1, 2, 2, 1), mode="circular")), inputs=((1, 2, 4, 5),)),
    OpCase(
        "pad_constant_channel_dim_dynamic",
        lambda: Fn(lambda m, x: F.pad(x, (0, 0, 0, 0, 1, 1))),
        inputs=((2, 3, 4, 5),),
        dynamic_batch=True,
    ),
    OpCase(
        "pad_widths_from_static_shape",
        lambda: Fn(lambda m, x: F.pad(x, (0, (3 - x.shape[-1] % 3) % 3))),
        inputs=((2, 3, 4, 5),),
        dynamic_batch=True,
    ),
    OpCase(
        "zero_pad_then_conv_quantized",
        lambda: nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, 2)),
        inputs=((2, 3, 8, 8),),
        quantize=True,
        atol=1e-3,
    ),
    *[_module_case(cls) for cls in MODULE_MODES],
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_padding_case(case: OpCase) -> None:
    run_case(case)


def test_unknown_mode_is_refused() -> None:
    rows = find_unsupported(trace_module(Fn(lambda m, x: F.pad(x, (1, 1), mode="mirror"))))
    assert len(rows) == 1 and "mirror" in rows[0][2]
