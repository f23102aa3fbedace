"""Fixtures for the validate tests: small TensorRT networks built with the TensorRT API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.validate.network_executor import NetworkExecutor


class NetFactory:
    """A strongly typed network plus helpers to add inputs/constants and execute it."""

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        self.network = self.builder.create_network(flag)
        self._keep: list[np.ndarray] = []  # TensorRT borrows weight memory until the build

    def input(self, name: str, shape: Sequence[int], dtype: Any | None = None) -> Any:
        return self.network.add_input(name, dtype or self.trt.float32, tuple(shape))

    def const(self, value: Any, shape: Sequence[int] | None = None) -> Any:
        # np.array (not ascontiguousarray, which turns 0-d into 1-d) keeps scalar constants 0-d.
        array = np.array(value.numpy() if isinstance(value, torch.Tensor) else value, order="C")
        self._keep.append(array)
        layer = self.network.add_constant(tuple(shape if shape is not None else array.shape), array)
        return layer.get_output(0)

    def weights(self, value: torch.Tensor) -> np.ndarray:
        array = np.ascontiguousarray(value.detach().numpy())
        self._keep.append(array)
        return array

    def run(self, feeds: dict[str, torch.Tensor], *outputs: Any) -> list[torch.Tensor]:
        for t in outputs:
            self.network.mark_output(t)
        result, _ = NetworkExecutor(self.network).run(feeds)
        return [result[t.name] for t in outputs]

    def run1(self, feeds: dict[str, torch.Tensor], output: Any) -> torch.Tensor:
        return self.run(feeds, output)[0]


@pytest.fixture(scope="session")
def trt() -> Any:
    if not trt_api.is_available():
        pytest.skip("neither TensorRT nor TensorRT-RTX is installed")
    return trt_api.get_trt()


@pytest.fixture
def net(trt: Any) -> NetFactory:
    return NetFactory(trt)


@pytest.fixture
def make_net(trt: Any) -> Any:
    """A factory of further networks within one test."""
    return lambda: NetFactory(trt)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Exact dtype and shape, values within ``atol``."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert tuple(actual.shape) == tuple(expected.shape), (tuple(actual.shape), tuple(expected.shape))
    if actual.is_floating_point():
        torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-5)
    else:
        assert torch.equal(actual, expected)


@pytest.fixture
def close() -> Any:
    return assert_close
