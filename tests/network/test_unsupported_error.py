"""The unsupported-op error: repeated targets grouped, wrapped helpers named with their module, remedies
that remove the node from the converted graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.errors import UnsupportedOpsError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.network.network import find_unsupported, network_from_graph_module


def channel_shuffle_helper(x: torch.Tensor) -> torch.Tensor:
    """A library helper that torch.fx keeps as one call (``torch.fx.wrap``), like torchvision's."""
    return x.flip(-1)


torch.fx.wrap("channel_shuffle_helper")


class Wrapped(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle_helper(x) + 1


class Repeated(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(12):
            x = torch.cumsum(x, 1)
        return x.logcumsumexp(1)


def test_repeated_targets_are_grouped_with_a_working_remedy() -> None:
    with pytest.raises(UnsupportedOpsError) as info:
        network_from_graph_module(capture(Repeated()), [InputSpec("x", (2, 3))])
    text = str(info.value)
    assert "13 node(s) (2 distinct target(s))" in text
    assert "torch.cumsum x 12: cumsum, cumsum_1," in text and "(+4 more)" in text
    assert "Tensor.logcumsumexp: logcumsumexp" in text
    assert "@register(torch.cumsum)" in text and "QuantConfig.skip" not in text
    assert len(info.value.rows) == 13


def test_wrapped_helper_is_named_with_its_module() -> None:
    rows = find_unsupported(capture(Wrapped()))
    assert [row[1] for row in rows] == [f"{__name__}.channel_shuffle_helper"]
