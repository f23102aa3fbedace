"""CenterNet-style detectors ("Objects as Points"): a ResNet backbone, three stride-2 deconvolution
stages and three heads (class heatmap, box size, centre offset).

::

    image ─> ResNet backbone (stride 32) ─> 3 x [ConvTranspose2d(s=2) + BN + ReLU] (stride 4)
                                              ├─> hm  (num_classes, logits; sigmoid in decode)
                                              ├─> wh  (2, box width/height in output cells)
                                              └─> reg (2, sub-cell centre offset)

``forward`` has no data-dependent control flow and returns the tuple ``(hm, wh, reg)``, so
``torch.fx.symbolic_trace`` captures it whole. :func:`decode` turns outputs into boxes (heatmap
peaks via the 3x3 max-pool trick, top-k; no NMS). :func:`load_demo_detector` returns the small
detector trained on the shipped MNIST detection set (real labels, for mAP checks);
:func:`centernet_resnet18` is the full-size architecture with random weights (coverage tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fx2trt_pipeline.errors import Fx2TrtError

OUTPUT_NAMES = ("hm", "wh", "reg")
DEMO_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo_centernet.pt"
# Focal-loss prior: sigmoid(-2.19) ~= 0.1, so the untrained heatmap predicts "mostly background"
# and the first steps are not swamped by the loss of ~all negative cells.
HM_BIAS_INIT = -2.19


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity (or 1x1 conv+BN) shortcut, ReLU after the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


def small_resnet(
    in_channels: int = 1,
    widths: Sequence[int] = (32, 64, 128, 128),
    blocks: Sequence[int] = (1, 1, 1, 1),
    stem_kernel: int = 7,
) -> nn.Sequential:
    """A ResNet-18-shaped backbone (stride 32) with configurable widths, depths and stem kernel."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], stem_kernel, 2, stem_kernel // 2, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = widths[0]
    for stage, (width, depth) in enumerate(zip(widths, blocks)):
        stage_blocks = [
            BasicBlock(cin if b == 0 else width, width, 2 if stage > 0 and b == 0 else 1) for b in range(depth)
        ]
        layers.append(nn.Sequential(*stage_blocks))
        cin = width
    return nn.Sequential(*layers)


def _head(in_channels: int, head_channels: int, out_channels: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(
        nn.Conv2d(in_channels, head_channels, 3, 1, 1, bias=True),
        nn.ReLU(),
        nn.Conv2d(head_channels, out_channels, 1, bias=True),
    )
    nn.init.constant_(head[-1].bias, bias)
    return head


class CenterNet(nn.Module):
    """CenterNet detector over any stride-32 backbone.

    Args:
        backbone: Module mapping images to ``backbone_channels`` features at stride 32.
        backbone_channels: Channels of the backbone output.
        num_classes: Heatmap channels.
        deconv_channels: Output channels of the three ConvTranspose2d(k=4, s=2) stages.
        head_channels: Hidden channels of each head's 3x3 conv.

    Example:
        >>> model = CenterNet(small_resnet(1), 128, num_classes=10, deconv_channels=(64, 48, 32))
        >>> [t.shape[1:] for t in model(torch.zeros(1, 1, 96, 96))]
        [torch.Size([10, 24, 24]), torch.Size([2, 24, 24]), torch.Size([2, 24, 24])]
    """

    output_stride = 4

    def __init__(
        self,
        backbone: nn.Module,
        backbone_channels: int,
        num_classes: int,
        deconv_channels: Sequence[int] = (256, 128, 64),
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        stages: list[nn.Module] = []
        cin = backbone_channels
        for cout in deconv_channels:
            # k=4, s=2, p=1 doubles the size exactly (no output_padding needed)
            stages += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.deconv = nn.Sequential(*stages)
        self.hm = _head(cin, head_channels, num_classes, bias=HM_BIAS_INIT)
        self.wh = _head(cin, head_channels, 2)
        self.reg = _head(cin, head_channels, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.deconv(self.backbone(x))
        return self.hm(features), self.wh(features), self.reg(features)


# Architecture of the shipped demo detector; the checkpoint records it and load_demo_detector checks it.
DEMO_CONFIG: dict[str, Any] = {
    "num_classes": 10,
    "in_channels": 1,
    "widths": [32, 64, 128, 128],
    "blocks": [1, 1, 1, 1],
    "stem_kernel": 7,
    "deconv_channels": [64, 48, 32],
    "head_channels": 32,
}


@dataclass(frozen=True)
class DemoDetectorConfig:
    """Architecture of the small demo CenterNet (``DEMO_CONFIG`` as a type; checkpoints store the dict)."""

    num_classes: int = 10
    in_channels: int = 1
    widths: Sequence[int] = (32, 64, 128, 128)
    blocks: Sequence[int] = (1, 1, 1, 1)
    stem_kernel: int = 7
    deconv_channels: Sequence[int] = (64, 48, 32)
    head_channels: int = 32


def demo_centernet(config: DemoDetectorConfig | None = None) -> CenterNet:
    """The small CenterNet of the demo detector (random init); ~0.85 M parameters, ~50 MMAC at 96x96.

    Example:
        >>> hm, wh, reg = demo_centernet()(torch.zeros(2, 1, 96, 96))
        >>> hm.shape
        torch.Size([2, 10, 24, 24])
        >>> demo_centernet(DemoDetectorConfig(num_classes=3)).hm[-1].out_channels
        3
    """
    c = config if config is not None else DemoDetectorConfig()
    backbone = small_resnet(c.in_channels, c.widths, c.blocks, c.stem_kernel)
    return CenterNet(backbone, c.widths[-1], c.num_classes, c.deconv_channels, c.head_channels)


def centernet_resnet18(num_classes: int = 80, head_channels: int = 64) -> CenterNet:
    """CenterNet on torchvision's ResNet-18 (random init, 3-channel input), as in the paper.

    For converter/quantizer coverage: real-sized convs, BN, residual adds, max-pool and
    ConvTranspose2d; its weights are random, so it says nothing about accuracy.

    Example:
        >>> hm, wh, reg = centernet_resnet18()(torch.zeros(1, 3, 128, 128))
        >>> hm.shape
        torch.Size([1, 80, 32, 32])
    """
    from torchvision.models import resnet18

    r = resnet18(weights=None)
    backbone = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
    return CenterNet(backbone, 512, num_classes, (256, 128, 64), head_channels)


def decode(
    hm: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, k: int = 100, stride: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn CenterNet outputs into the top-``k`` boxes per image.

    A cell is a peak when it equals the 3x3 max of its neighbourhood (this replaces NMS); the
    ``k`` best peaks over all classes become boxes centred at ``(cell + reg) * stride`` with size
    ``wh * stride``.

    Args:
        hm: ``(B, C, H, W)`` heatmap logits (sigmoid is applied here).
        wh: ``(B, 2, H, W)`` box width/height in output cells.
        reg: ``(B, 2, H, W)`` centre offsets in output cells.
        k: Detections per image (capped at ``C * H * W``).
        stride: Input pixels per output cell.

    Returns:
        ``boxes`` ``(B, k, 4)`` xyxy in input pixels, ``scores`` ``(B, k)``, ``classes`` ``(B, k)`` int64.

    Example:
        >>> boxes, scores, classes = decode(*demo_centernet()(torch.zeros(1, 1, 96, 96)), k=5)
        >>> boxes.shape, scores.shape
        (torch.Size([1, 5, 4]), torch.Size([1, 5]))
    """
    b, c, h, w = hm.shape
    heat = hm.float().sigmoid()
    peaks = F.max_pool2d(heat, 3, stride=1, padding=1) == heat
    heat = heat * peaks
    k = min(k, c * h * w)
    scores, index = heat.reshape(b, -1).topk(k)
    classes = torch.div(index, h * w, rounding_mode="floor")
    cell = index % (h * w)
    ys = torch.div(cell, w, rounding_mode="floor").float()
    xs = (cell % w).float()
    gather = cell[:, None, :].expand(-1, 2, -1)
    size = wh.float().reshape(b, 2, -1).gather(2, gather)
    offset = reg.float().reshape(b, 2, -1).gather(2, gather)
    cx, cy = (xs + offset[:, 0]) * stride, (ys + offset[:, 1]) * stride
    half_w, half_h = size[:, 0] * stride / 2, size[:, 1] * stride / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)
    return boxes, scores, classes


#: The demo CenterNet's output stride (96 x 96 input, 24 x 24 heatmap).
CENTERNET_STRIDE = 4.0


def centernet_decode(outputs: Any, k: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode the demo CenterNet's ``hm, wh, reg`` outputs (named dict or in that order) into boxes, scores, classes.

    The generic detection metrics take a decoder as an argument; this is the one for the shipped detector.

    Example:
        >>> hm = torch.full((1, 10, 24, 24), -10.0); hm[0, 3, 5, 7] = 10.0
        >>> boxes, scores, classes = centernet_decode({"hm": hm, "wh": torch.ones(1, 2, 24, 24),
        ...                                            "reg": torch.zeros(1, 2, 24, 24)}, k=1)
        >>> classes.tolist(), [round(v, 2) for v in scores.tolist()[0]]
        ([[3]], [1.0])
    """
    if isinstance(outputs, Mapping):
        outputs = [outputs[n] for n in OUTPUT_NAMES] if "hm" in outputs else list(outputs.values())
    hm, wh, reg = (torch.as_tensor(o).detach().float().cpu() for o in list(outputs)[:3])
    return decode(hm, wh, reg, k=k, stride=CENTERNET_STRIDE)


def load_demo_detector(path: str | Path | None = None) -> CenterNet:
    """Load the shipped MNIST-digit CenterNet (eval mode, fp32, CPU).

    Trained by ``scripts/train_demo_detector.py`` on ``load_mnist_detection("train")``; inputs are
    ``(B, 1, 96, 96)`` in ``[0, 1]`` (``MNIST_DET_SPEC``). The checkpoint is read with
    ``torch.load(weights_only=True)``.

    Args:
        path: Checkpoint to load instead of the shipped one.

    Raises:
        Fx2TrtError: the checkpoint is missing or does not match the architecture.

    Example:
        >>> model = load_demo_detector()
        >>> hm, wh, reg = model(torch.zeros(1, 1, 96, 96))
    """
    path = Path(path) if path is not None else DEMO_WEIGHTS
    if not path.is_file():
        raise Fx2TrtError(f"Demo detector weights not found: {path}. Run scripts/train_demo_detector.py.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = demo_centernet(DemoDetectorConfig(**ckpt.get("config", DEMO_CONFIG)))
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise Fx2TrtError(f"Cannot load demo detector checkpoint {path}: {exc}") from exc
    return model.eval()
