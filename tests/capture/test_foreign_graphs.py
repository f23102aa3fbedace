"""capture() of graphs built elsewhere: a GraphModule taken as it is, static tensors built in forward folded
into constants (only where they do not follow the batch), torchvision's wrapped Swin helpers inlined."""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models import swin_transformer as swin

from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.capture.static_values import record, static_nodes


class AnchorHead(nn.Module):
    """A detection head that builds its anchor grid in forward (arange / meshgrid / full / tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.token = nn.Parameter(torch.randn(1, 1, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        h, w = y.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        anchors = torch.stack((xs, ys)).reshape(1, 2, -1) * torch.full((1, 2, 1), 8.0)
        boxes = y[:, :2].flatten(2) * torch.tensor([[[2.0], [3.0]]]) + anchors
        tokens = self.token.expand(x.shape[0], -1, -1)  # follows the batch: must stay computed
        return boxes, torch.cat([tokens, y.flatten(2).transpose(1, 2)], 1)


def test_static_tensors_fold_into_constants_and_batch_dependent_ones_stay() -> None:
    model = AnchorHead().eval()
    x = torch.randn(2, 3, 6, 5)
    gm = capture(model, example_inputs=(x,))
    targets = {n.target for n in gm.graph.nodes}
    assert not targets & {torch.arange, torch.meshgrid, torch.full, torch.tensor, torch.stack}
    constants = {n.name: getattr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    anchors = next(v for v in constants.values() if v.shape == (1, 2, 30))
    assert anchors[0, :, 6].tolist() == [12.0, 12.0]  # cell (row 1, col 1) centre times stride 8
    assert "expand" in targets  # the token broadcast follows the batch size
    for batch in (2, 5):
        xb = torch.randn(batch, 3, 6, 5)
        for got, want in zip(gm(xb), model(xb)):
            torch.testing.assert_close(got, want)


def test_without_example_inputs_a_plain_graph_is_left_as_traced() -> None:
    gm = capture(AnchorHead().eval())
    assert torch.arange in {n.target for n in gm.graph.nodes}


def test_static_values_know_which_values_follow_the_batch() -> None:
    gm = torch.fx.symbolic_trace(AnchorHead().eval())
    rec = record(gm, (torch.randn(2, 3, 6, 5),), static_nodes(gm))
    by_name = {n.name: n for n in gm.graph.nodes}
    assert rec.batch == (2, 3)
    assert rec.follows_batch(by_name["expand"]) and not rec.follows_batch(by_name["mul"])
    assert rec.batch_dims(by_name["conv"]) == [True, False, False, False]


class Opaque(nn.Module):
    """A module torch.fx cannot trace (data-dependent control flow): kept whole as a leaf."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else -x


def test_a_graph_module_is_taken_as_it_is() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.gate = nn.Conv2d(3, 4, 1), Opaque()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gate(self.conv(x))

    class KeepGate(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, name: str) -> bool:
            return isinstance(m, Opaque) or super().is_leaf_module(m, name)

    net = Net().eval()
    foreign = torch.fx.GraphModule(net, KeepGate().trace(net))
    gm = capture(foreign)  # traced again, every module the graph calls kept as a leaf
    assert [n.op for n in gm.graph.nodes] == [n.op for n in foreign.graph.nodes]
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(gm(x), net(x))


def test_wrapped_swin_helpers_are_inlined_as_static_window_attention() -> None:
    """A Swin traced by torch.fx keeps the wrapped calls; capture inlines the static attention with its q/k/v and
    projection as nn.Linear layers at the block's own path, and folds the relative-position bias."""
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer([4, 4], 16, [2, 2], [2, 4], [4, 4]).eval()
    foreign = torch.fx.symbolic_trace(model)
    wrapped = (swin.shifted_window_attention, swin._get_relative_position_bias, swin._patch_merging_pad)
    assert sum(n.target in wrapped for n in foreign.graph.nodes) == 9
    x = torch.randn(2, 3, 32, 32)
    gm = capture(foreign, example_inputs=(x,))
    assert not any(n.target in wrapped for n in gm.graph.nodes)
    assert isinstance(gm.get_submodule("features.1.1.attn.qkv"), nn.Linear)
    assert sum(n.target is torch.matmul for n in gm.graph.nodes) == 8  # Q @ K^T and attn @ V, four blocks
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), atol=1e-5, rtol=1e-5)
