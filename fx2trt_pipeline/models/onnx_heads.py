"""Small detectors of the two shapes models most often arrive in from ONNX, and the round trip that brings
them back: ``torch.onnx.export`` -> ONNX -> ``onnx2torch.convert`` (a ``torch.fx.GraphModule`` of onnx2torch
node modules), as users import exported detectors and OCR models into torch.fx.

::

    TinyYolo   3 x stride-2 CBS stem -> P3 / P4 / P5 -> box (4 x 16 DFL bins) and class convs per level
               -> concat / reshape -> split -> DFL (reshape to bins, softmax, fixed 1x1 conv of 0..15)
               -> anchor arithmetic (anchors and strides built in forward with arange / full) -> concat
    TinyDBNet  CBS backbone (C2..C4) -> FPN (1x1 laterals, nearest resize by scale and by size, add)
               -> per-level 3x3 convs, bilinear / nearest resize -> concat -> probability head (deconvs,
               BN, ReLU, sigmoid), threshold head (deconv, sigmoid) -> differentiable binarization (exp, div)

Random weights with warmed-up BatchNorm statistics (the exporter folds BatchNorm into the convs and would
merge all-equal initial statistics into shared initializers that onnx2torch cannot read back).

Example:
    >>> import torch
    >>> TinyYolo()(torch.randn(1, 3, 64, 64)).shape   # 4 box + 4 class values for 8x8 + 4x4 + 2x2 anchors
    torch.Size([1, 8, 84])
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import nn


def _cbs(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    """Conv + BatchNorm + SiLU, YOLOv8's basic block."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyYolo(nn.Module):
    """A YOLOv8-style anchor-free detector: three levels, DFL box decoding, anchors built in forward."""

    def __init__(self, num_classes: int = 4, reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg = num_classes, reg_max
        self.stem = nn.Sequential(_cbs(3, 8, 3, 2), _cbs(8, 16, 3, 2), _cbs(16, 16, 3, 2))
        self.p4, self.p5 = _cbs(16, 32, 3, 2), _cbs(32, 32, 3, 2)
        self.box = nn.ModuleList(nn.Sequential(_cbs(c, 16), nn.Conv2d(16, 4 * reg_max, 1)) for c in (16, 32, 32))
        self.cls = nn.ModuleList(nn.Sequential(_cbs(c, 16), nn.Conv2d(16, num_classes, 1)) for c in (16, 32, 32))
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():  # the expectation over the bins: a fixed conv with weights 0..reg_max-1
            self.dfl.weight.copy_(torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1))
        self.strides = (8, 16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.stem(x)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        feats = [torch.cat((b(f), c(f)), 1) for f, b, c in zip((p3, p4, p5), self.box, self.cls)]
        n, outputs = x.shape[0], 4 * self.reg + self.nc
        flat = torch.cat([f.view(n, outputs, -1) for f in feats], 2)
        anchors, strides = [], []
        for f, stride in zip(feats, self.strides):
            h, w = f.shape[2:]
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((xs, ys), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(stride)))
        anchor_points = torch.cat(anchors).transpose(0, 1).unsqueeze(0)
        stride_tensor = torch.cat(strides).transpose(0, 1).unsqueeze(0)
        box, cls = flat.split((4 * self.reg, self.nc), 1)
        count = box.shape[2]
        dist = self.dfl(box.view(n, 4, self.reg, count).transpose(2, 1).softmax(1)).view(n, 4, count)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = anchor_points - lt, anchor_points + rb
        boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_tensor
        return torch.cat((boxes, cls.sigmoid()), 1)


class TinyDBNet(nn.Module):
    """A DBNet-style text detector: FPN by resize, deconvolution heads, differentiable binarization."""

    def __init__(self, k: float = 50.0) -> None:
        super().__init__()
        self.k = k
        self.c2 = nn.Sequential(_cbs(3, 8, 3, 2), _cbs(8, 16, 3, 2))
        self.c3, self.c4 = _cbs(16, 24, 3, 2), _cbs(24, 32, 3, 2)
        self.lateral = nn.ModuleList(nn.Conv2d(c, 16, 1) for c in (16, 24, 32))
        self.smooth = nn.ModuleList(nn.Conv2d(16, 4, 3, padding=1) for _ in range(3))
        self.prob = nn.Sequential(
            _cbs(12, 8), nn.ConvTranspose2d(8, 8, 2, 2), nn.BatchNorm2d(8), nn.ReLU(), nn.ConvTranspose2d(8, 1, 2, 2)
        )
        self.thresh = nn.Sequential(_cbs(12, 8), nn.ConvTranspose2d(8, 1, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2 = self.c2(x)
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        i4 = self.lateral[2](c4)
        i3 = self.lateral[1](c3) + F.interpolate(i4, scale_factor=2, mode="nearest")
        i2 = self.lateral[0](c2) + F.interpolate(i3, size=c2.shape[2:], mode="nearest")
        o4 = F.interpolate(self.smooth[2](i4), scale_factor=4, mode="bilinear", align_corners=False)
        o3 = F.interpolate(self.smooth[1](i3), scale_factor=2, mode="nearest")
        fused = torch.cat((o4, o3, self.smooth[0](i2)), 1)
        prob = torch.sigmoid(self.prob(fused))
        thresh = torch.sigmoid(self.thresh(fused))
        binary = torch.reciprocal(1 + torch.exp(-self.k * (prob - thresh)))
        return torch.cat((prob, thresh, binary / (prob + 1.0)), 1)


def warmed_up(model: nn.Module, size: int = 64, batches: int = 3, seed: int = 1) -> nn.Module:
    """``model`` in eval mode after a few train-mode forwards on random data (real-ish BatchNorm statistics)."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(4, 3, size, size, generator=gen))
    return model.eval()


def onnx2torch_roundtrip(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = True) -> torch.fx.GraphModule:
    """``model`` exported to ONNX (TorchScript exporter, opset 17, BatchNorm folded, optionally a dynamic batch
    axis) and converted back by onnx2torch: the GraphModule users get when they import an exported model.

    Raises:
        ImportError: onnx or onnx2torch is not installed (the ``onnx`` and ``foreign`` extras).
    """
    import onnx
    import onnx2torch

    buffer = io.BytesIO()
    axes = {"x": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        model.eval(), (example,), buffer, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes=axes
    )
    return onnx2torch.convert(onnx.load_from_string(buffer.getvalue())).eval()


__all__ = ["TinyDBNet", "TinyYolo", "onnx2torch_roundtrip", "warmed_up"]
