"""Shared fixtures: small deterministic inputs and models used across the suite; the GPU-test policy."""

from __future__ import annotations

import pytest
import torch

#: The small TensorRT networks and quantized graphs shared by the executor, export and validate tests; the
#: GPU-test policy (FX2TRT_REQUIRE_GPU=1 turns GPU-test skips into failures, tests/gpu_policy.py).
pytest_plugins = ["tests.trt_networks", "tests.gpu_policy", "pytester"]


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def batches(shape: tuple[int, ...], n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` random batches of ``shape`` (deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]
