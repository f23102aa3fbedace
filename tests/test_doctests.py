"""Every docstring example of the package runs (those that need a GPU, an engine or a user file say +SKIP).

Modules are imported by their package name, so ``converters/`` and ``calib_data/`` load once as
``fx2trt_pipeline.converters.*`` / ``fx2trt_pipeline.calib_data.*`` (importing them again as top-level
modules would register every converter a second time).
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from pathlib import Path

import pytest

import fx2trt_pipeline

PACKAGES = ("fx2trt_pipeline", "fx2trt_pipeline.converters", "fx2trt_pipeline.calib_data")
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def module_names() -> list[str]:
    names = set(PACKAGES)
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.update(m.name for m in pkgutil.walk_packages(package.__path__, f"{package_name}."))
    return sorted(names)


def test_every_package_is_walked() -> None:
    names = module_names()
    assert {"fx2trt_pipeline.converters.registry", "fx2trt_pipeline.calib_data.datasets"} <= set(names)
    assert not any(name.startswith(("converters.", "calib_data.")) for name in names)
    assert fx2trt_pipeline.__name__ in names


@pytest.mark.parametrize("name", module_names())
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}:\n{out.getvalue()}"
