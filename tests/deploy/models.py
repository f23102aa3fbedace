"""Tiny models for the deploy tests, importable as ``tests.deploy.models:<factory>`` by the CLI."""

from __future__ import annotations

import torch
from torch import nn


class TinyClassifier(nn.Module):
    """conv-BN-ReLU, a residual block, global average pool, linear: every deploy feature, in milliseconds."""

    def __init__(self, num_classes: int = 3, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.conv(x) + x)
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_classifier(num_classes: int = 3) -> nn.Module:
    """A seeded :class:`TinyClassifier` (same weights every call)."""
    torch.manual_seed(0)
    return TinyClassifier(num_classes).eval()


def broken_factory() -> nn.Module:
    """A factory that fails: the CLI must report it in one line."""
    raise RuntimeError("the model factory cannot reach its weights server")


def slow_classifier() -> nn.Module:
    """A factory that takes a minute (the build is interrupted while it waits)."""
    import time

    time.sleep(60)
    return tiny_classifier()
