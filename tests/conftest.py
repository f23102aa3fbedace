"""Shared fixtures: small deterministic inputs and models used across the suite."""

from __future__ import annotations

import pytest
import torch

#: The small TensorRT networks and quantized graphs shared by the executor, export and validate tests.
pytest_plugins = ["tests.trt_networks"]


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def batches(shape: tuple[int, ...], n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` random batches of ``shape`` (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]
