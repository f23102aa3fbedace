"""torchvision's wrapped Swin helpers as opaque calls (graphs traced as torch.ao and torch.fx leave them):
converted through the static window attention / patch merging, compared with torchvision's own functions."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import swin_transformer as swin

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.network.network import find_unsupported
from tests.converters.harness import OpCase, run_case, trace_module

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


def _attention(shift: int, window: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    block = swin.ShiftedWindowAttention(16, [window, window], [shift, shift], num_heads=2)
    with torch.no_grad():  # a bias table that matters (torchvision initializes it near zero)
        block.relative_position_bias_table.normal_(0, 1.0)
    return block


CASES = [
    OpCase("shifted_window_attention_shifted", lambda: _attention(2), inputs=((2, 8, 8, 16),), atol=1e-4),
    OpCase("shifted_window_attention_padded", lambda: _attention(2), inputs=((2, 6, 7, 16),), dynamic_batch=True),
    OpCase("shifted_window_attention_window_covers_map", lambda: _attention(2, 8), inputs=((1, 5, 5, 16),)),
    OpCase("patch_merging_pad_odd", lambda: swin.PatchMerging(16), inputs=((2, 5, 6, 16),), dynamic_batch=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_torchvision_ops_case(case: OpCase) -> None:
    converted = run_case(case)  # the executor against torchvision's own functions in eager torch
    targets = {n.target for n in converted.gm.graph.nodes}
    assert targets & {swin.shifted_window_attention, swin._patch_merging_pad}  # the calls stayed opaque
    layers = {converted.network.get_layer(i).name for i in range(converted.network.num_layers)}
    if swin.shifted_window_attention in targets:
        # the attention's own layers are named after the call (the naming test checks every one maps to a node)
        assert any(name.startswith("shifted_window_attention.") and "matmul" in name for name in layers)


def test_swin_v2_attention_is_refused_with_the_reason() -> None:
    block = swin.ShiftedWindowAttentionV2(16, [4, 4], [2, 2], num_heads=2).eval()
    reasons = {row[1].rsplit(".", 1)[-1]: row[2] for row in find_unsupported(trace_module(block))}
    assert "logit_scale" in reasons["shifted_window_attention"]
    assert "computed in the graph" in reasons["_get_relative_position_bias"]
