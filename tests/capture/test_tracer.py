"""capture(): leaf modules, concrete_args, untraceable models named by module/class/source line, input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fx2trt_pipeline.capture import LeafTracer, capture, check_example_inputs, flatten_outputs
from fx2trt_pipeline.errors import CaptureError


class DataDependent(nn.Module):
    """Python control flow on a tensor value: symbolic tracing cannot follow it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # untraceable: the branch depends on data
            return x * 2
        return -x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = DataDependent()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(torch.relu(self.conv(x)))
        return self.head(y.mean(dim=(2, 3)))


class Flagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor, double: bool = False) -> torch.Tensor:
        y = self.conv(x)
        return y * 2 if double else y


def _ops(gm: torch.fx.GraphModule) -> list[tuple[str, str]]:
    return [(n.op, str(n.target)) for n in gm.graph.nodes if n.op in ("call_module", "call_function")]


def test_untraceable_model_error_names_module_class_and_source_line() -> None:
    with pytest.raises(CaptureError) as info:
        capture(Net().eval())
    text = str(info.value)
    assert "module 'gate' (DataDependent)" in text
    assert f"{__file__}:" in text and "if x.sum() > 0" in text
    assert "leaf_modules=('DataDependent',)" in text and "leaf_modules=['gate']" in text
    assert "concrete_args" in text and isinstance(info.value.__cause__, Exception)


@pytest.mark.parametrize("leaf", [DataDependent, "DataDependent", "gate"])
def test_leaf_modules_by_class_class_name_or_path(leaf: type | str) -> None:
    model = Net().eval()
    gm = capture(model, leaf_modules=[leaf])
    assert ("call_module", "gate") in _ops(gm) and ("call_module", "conv") in _ops(gm)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_leaf_tracer_keeps_default_leaves() -> None:
    tracer = LeafTracer(["gate"])
    assert tracer.is_leaf_module(nn.Conv2d(1, 1, 1), "conv")  # torch.nn modules stay leaves
    assert not tracer.is_leaf_module(Net(), "body")


def test_concrete_args_fix_control_flow_flags() -> None:
    model = Flagged().eval()
    x = torch.randn(1, 3, 4, 4)
    doubled = capture(model, concrete_args={"double": True})
    plain = capture(model, concrete_args={"double": False})
    assert ("call_function", "<built-in function mul>") in _ops(doubled)
    assert all(target != "<built-in function mul>" for _, target in _ops(plain))
    # The fixed argument stays in the signature, guarded: another value fails loudly instead of being ignored.
    torch.testing.assert_close(doubled(x, True), model(x, double=True), rtol=0, atol=0)
    torch.testing.assert_close(plain(x, False), model(x), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="double has been specialized"):
        doubled(x, False)


def test_node_names_follow_module_paths() -> None:
    gm = capture(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    assert [n.name for n in gm.graph.nodes] == ["input_1", "_0", "_1", "output"]


def test_example_inputs_that_fit_pass() -> None:
    gm = capture(Net().eval(), leaf_modules=["gate"])
    check_example_inputs(gm, [torch.randn(1, 3, 16, 16)])


def test_too_many_example_inputs_name_the_placeholders() -> None:
    gm = capture(Net().eval(), leaf_modules=["gate"])
    with pytest.raises(CaptureError, match=r"Got 2 example inputs but the model takes 1 \(x\)"):
        check_example_inputs(gm, [torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)])


def test_wrong_channel_count_names_the_rejecting_node() -> None:
    gm = capture(Net().eval(), leaf_modules=["gate"])
    with pytest.raises(CaptureError) as info:
        check_example_inputs(gm, [torch.randn(1, 5, 8, 8)])
    text = str(info.value)
    assert "shapes [(1, 5, 8, 8)]" in text and "node 'conv'" in text and "Remedy" in text


def test_flatten_outputs_order() -> None:
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert flatten_outputs({"hm": a, "rest": (b, [c])}) == [a, b, c]
    assert flatten_outputs(a) == [a] and flatten_outputs(None) == []
