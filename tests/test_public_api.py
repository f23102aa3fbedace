"""The top-level names: what IDEs see (TYPE_CHECKING imports) is what ``ftp.<name>`` resolves to."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import fx2trt_pipeline as ftp


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse(Path(ftp.__file__).read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                names.update({alias.name: imp.module for alias in imp.names})
    return names


def test_lazy_names_match_type_checking_imports() -> None:
    assert _type_checking_imports() == ftp._LAZY


def test_every_public_name_resolves_to_its_module() -> None:
    for name in ftp.__all__:
        value = getattr(ftp, name)
        if name in ftp._LAZY:
            assert value is getattr(importlib.import_module(ftp._LAZY[name]), name)
    assert set(ftp.__all__) <= set(dir(ftp))
    assert set(ftp._LAZY) <= set(ftp.__all__)


def test_unknown_name_raises_attribute_error() -> None:
    try:
        ftp.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
