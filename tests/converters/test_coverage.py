"""Every registered converter target is exercised by at least one harness case."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import pytest

import tests.converters as package
from fx2trt_pipeline.converters import REGISTRY
from fx2trt_pipeline.converters.registry import describe_key
from tests.converters.harness import OpCase, graph_of, registry_keys_in


def all_cases() -> list[OpCase]:
    """The CASES tables of every test module in this package."""
    cases: list[OpCase] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("test_") and info.name != "test_coverage":
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            cases.extend(getattr(module, "CASES", []))
    return cases


@pytest.mark.filterwarnings("ignore")
def test_every_registered_target_has_a_case() -> None:
    covered: set = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in all_cases():
            gm, _ = graph_of(case)
            covered |= registry_keys_in(gm)
    missing = sorted(describe_key(c.key) for c in REGISTRY if c.key not in covered)
    assert not missing, f"registered converter targets without a test case: {missing}"
