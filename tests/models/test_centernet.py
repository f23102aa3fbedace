"""CenterNet models: fx tracing, decode, and the shipped demo detector's accuracy on real labels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fx2trt_pipeline.calib_data import load_mnist_detection
from fx2trt_pipeline.errors import Fx2TrtError
from fx2trt_pipeline.models import (
    DEMO_WEIGHTS,
    centernet_resnet18,
    decode,
    demo_centernet,
    load_demo_detector,
)
from fx2trt_pipeline.models.centernet import centernet_decode
from fx2trt_pipeline.validate.metrics import evaluate_detector

# The shipped checkpoint measured val mAP 0.692 / AP50 0.945 (scripts/train_demo_detector.py,
# defaults); the floors sit a bit below so thread-count noise never trips them.
VAL_MAP_FLOOR = 0.66
VAL_AP50_FLOOR = 0.92


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Give BN non-trivial statistics so eval-mode tracing checks exercise them."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize(("factory", "shape"), [(demo_centernet, (2, 1, 96, 96)), (centernet_resnet18, (1, 3, 64, 64))])
def test_symbolic_trace_matches_eager(factory, shape) -> None:
    model = _randomize_bn(factory())
    gm = torch.fx.symbolic_trace(model)
    x = torch.rand(shape)
    with torch.no_grad():
        eager, traced = model(x), gm(x)
    assert len(traced) == 3
    for e, t in zip(eager, traced):
        torch.testing.assert_close(t, e, rtol=0, atol=0)
    # the graph holds every layer family the quantizer and converters must handle
    kinds = {type(m) for n in gm.graph.nodes if n.op == "call_module" for m in [gm.get_submodule(n.target)]}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.ConvTranspose2d} <= kinds
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in model.modules()) == 3


def test_output_shapes_and_heatmap_prior() -> None:
    model = centernet_resnet18(num_classes=80).eval()
    hm, wh, reg = model(torch.zeros(1, 3, 128, 96))
    assert hm.shape == (1, 80, 32, 24) and wh.shape == reg.shape == (1, 2, 32, 24)
    assert torch.all(model.hm[-1].bias == -2.19)


def test_decode_finds_peaks_boxes_and_classes() -> None:
    hm = torch.full((1, 3, 8, 8), -10.0)
    wh, reg = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    hm[0, 2, 1, 5] = 3.0  # class 2 at cell (x=5, y=1)
    hm[0, 2, 1, 6] = 2.0  # its neighbour: suppressed by the 3x3 max-pool peak test
    hm[0, 0, 6, 2] = 1.0  # class 0 at cell (x=2, y=6)
    wh[0, :, 1, 5] = torch.tensor([2.0, 1.0])
    reg[0, :, 1, 5] = torch.tensor([0.5, 0.25])
    wh[0, :, 6, 2] = torch.tensor([1.0, 1.0])
    boxes, scores, classes = decode(hm, wh, reg, k=3, stride=4)
    assert boxes.shape == (1, 3, 4) and classes.dtype == torch.int64
    assert classes[0, :2].tolist() == [2, 0]
    torch.testing.assert_close(scores[0, :2], torch.tensor([3.0, 1.0]).sigmoid())
    # centre (5.5, 1.25) cells * 4 = (22, 5) px, size (8, 4) px
    torch.testing.assert_close(boxes[0, 0], torch.tensor([18.0, 3.0, 26.0, 7.0]))
    torch.testing.assert_close(boxes[0, 1], torch.tensor([6.0, 22.0, 10.0, 26.0]))
    assert scores[0, 2] < 1e-3  # the suppressed neighbour is gone


def test_missing_weights_say_how_to_make_them(tmp_path) -> None:
    with pytest.raises(Fx2TrtError, match="train_demo_detector.py"):
        load_demo_detector(tmp_path / "none.pt")


@pytest.fixture(scope="module")
def demo():
    if not DEMO_WEIGHTS.is_file():
        pytest.fail(f"{DEMO_WEIGHTS} is missing: run scripts/train_demo_detector.py")
    return load_demo_detector()


def test_checkpoint_is_plain_weights(demo) -> None:
    ckpt = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"config", "state_dict", "preprocess", "val"}
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["state_dict"].values())
    assert DEMO_WEIGHTS.stat().st_size < 4_000_000
    assert not demo.training


def test_demo_detector_val_map(demo) -> None:
    """Real labels: the shipped detector must keep its measured accuracy (float and traced alike)."""
    val = load_mnist_detection("val")
    m = evaluate_detector(demo, val, centernet_decode)
    assert m["mAP"] >= VAL_MAP_FLOOR and m["AP50"] >= VAL_AP50_FLOOR, m
    recorded = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=True)["val"]
    assert abs(m["mAP"] - recorded["mAP"]) < 0.005, (m, recorded)  # same number the training run printed
    x = torch.stack([val[i][0] for i in range(8)])
    with torch.no_grad():
        for e, t in zip(demo(x), torch.fx.symbolic_trace(demo)(x)):
            torch.testing.assert_close(t, e, rtol=0, atol=0)
