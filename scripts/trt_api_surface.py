"""Write datacenter TensorRT's published Python API as a JSON surface, from the ``tensorrt-stubs`` wheel.

Datacenter TensorRT cannot be installed on the machines that build and test this package, yet it is what
most users of ``scripts/build_engine.py`` run. Its Python API is published as type stubs generated from
the real bindings (``tensorrt-stubs`` on PyPI, pybind11-stubgen of ``tensorrt-cu12-bindings``). This
script reads those ``.pyi`` files and writes the names, base classes, enum members, property types and
method signatures that tests/engine/test_api_conformance.py checks the package's calls against.

Why a committed JSON rather than the stubs themselves: installed, the wheel's ``tensorrt/`` folder of
``.pyi`` files imports as a namespace package and would pass for the library; downloaded at test time,
CI would need the network. The JSON is small, reviewable, and regenerated with one command::

    pip download --no-deps tensorrt-stubs==10.13.0.35.1 -d /tmp/stubs
    python scripts/trt_api_surface.py /tmp/stubs/tensorrt_stubs-10.13.0.35.1-py3-none-any.whl \\
        tests/engine/data/tensorrt-10.13.0.35-api.json

Surface format (shared with the live introspection of TensorRT-RTX in tests/engine/api_surface.py)::

    {"library": "tensorrt", "version": "10.13.0.35", "source": "...",
     "module": {"Builder": "class", "float32": "DataType", "get_plugin_registry": "IPluginRegistry", ...},
     "classes": {"Builder": {"bases": [], "enum": false,
                             "members": {"create_network": {"type": "INetworkDefinition",
                                                            "signatures": [[["flags", false]]]},
                                         "max_threads": {"type": "int"}, ...}}, ...}}

A signature lists the parameters after ``self`` as ``[name, required]``; methods with overloads have one
signature per overload; properties and enum members have none.
"""

from __future__ import annotations

import argparse
import ast
import json
import keyword
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

#: The .pyi files of the wheel: the bindings (classes) and the package (its re-exports and helpers).
BINDINGS, PACKAGE = "tensorrt_bindings/tensorrt.pyi", "tensorrt/__init__.pyi"
SUBS = ("tensorrt_bindings.tensorrt",)


def type_name(node: ast.expr | None) -> str | None:
    """The class an annotation names (``Optional[X]``, ``X | None`` and dotted names reduce to ``X``)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return type_name(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = type_name(node.left), type_name(node.right)
        return left if right == "None" else right if left == "None" else None
    if isinstance(node, ast.Subscript) and type_name(node.value) in ("Optional", "ClassVar"):
        return type_name(node.slice)
    return None


#: Stand-in default for a required parameter after optional ones, which pybind allows and Python syntax not.
REQUIRED = "__required__"


def _required(default: ast.expr | None) -> bool:
    return default is None or (isinstance(default, ast.Name) and default.id == REQUIRED)


def parse_stub(text: str) -> ast.Module:
    """Parse a ``.pyi``; a required parameter after optional ones (pybind allows it) gets a marker default."""
    # Parameters named after Python keywords (``in``) are not callable by keyword anyway: rename them.
    lines = [
        re.sub(r"([(,]\s*)(" + "|".join(keyword.kwlist) + r")(\s*:)", r"\1\2_\3", line) for line in text.splitlines()
    ]
    while True:
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as exc:
            if "non-default argument follows default argument" not in str(exc.msg) or exc.lineno is None:
                raise
            line, start = lines[exc.lineno - 1], (exc.offset or 1) - 1
            end = start + next(i for i, ch in enumerate(line[start:]) if ch in ",)")
            lines[exc.lineno - 1] = f"{line[:end]} = {REQUIRED}{line[end:]}"


def _signature(fn: ast.FunctionDef) -> list[list[Any]]:
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [[a.arg, _required(d)] for a, d in zip(positional, defaults)]
    if params and params[0][0] in ("self", "cls"):
        params = params[1:]
    params += [[a.arg, _required(d)] for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.vararg is not None or args.kwarg is not None:
        params.append(["*", False])  # accepts anything more
    return params


def _decorators(fn: ast.FunctionDef) -> set[str]:
    return {type_name(d) or "" for d in fn.decorator_list}


def _class(node: ast.ClassDef, prefix: str, out: dict[str, Any]) -> None:
    name = prefix + node.name
    members: dict[str, dict[str, Any]] = {}
    enum = False
    for item in node.body:
        if isinstance(item, ast.FunctionDef):
            kind = _decorators(item)
            if "setter" in kind:
                continue
            entry = members.setdefault(item.name, {"type": type_name(item.returns)})
            if "property" not in kind:
                entry.setdefault("signatures", []).append(_signature(item))
            if "staticmethod" in kind and entry.get("signatures") and item.args.args[:1]:
                entry["signatures"][-1].insert(0, [item.args.args[0].arg, True])  # no self to drop
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members[item.target.id] = {"type": type_name(item.annotation)}
            enum = enum or item.target.id == "__members__"
        elif isinstance(item, ast.ClassDef):
            members[item.name] = {"type": f"{name}.{item.name}"}
            _class(item, f"{name}.", out)
    out[name] = {"bases": [b for b in (type_name(x) for x in node.bases) if b], "enum": enum, "members": members}


def surface_from_stubs(files: dict[str, str], version: str, source: str) -> dict[str, Any]:
    """The surface of the ``.pyi`` texts in ``files`` (paths as in the wheel)."""
    classes: dict[str, Any] = {}
    module: dict[str, str] = {}
    for path in (BINDINGS, PACKAGE):
        for node in parse_stub(files[path]).body:
            if isinstance(node, ast.ClassDef):
                _class(node, "", classes)
                module[node.name] = "class"
            elif isinstance(node, ast.FunctionDef):
                module[node.name] = type_name(node.returns) or "function"
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                module[node.target.id] = type_name(node.annotation) or "value"
            elif isinstance(node, ast.ImportFrom) and path == PACKAGE and node.module in ("tensorrt_bindings", *SUBS):
                for alias in node.names:
                    module.setdefault(alias.asname or alias.name, "class" if alias.name in classes else "value")
    # The package re-exports the bindings: every binding class, function and DataType value is trt.<name>.
    return {
        "library": "tensorrt",
        "version": version,
        "source": source,
        "module": dict(sorted(module.items())),
        "classes": dict(sorted(classes.items())),
    }


def read_wheel(path: Path) -> tuple[dict[str, str], str]:
    """The two ``.pyi`` texts of a ``tensorrt-stubs`` wheel (or an unpacked one) and the stubbed version."""
    if path.is_dir():
        texts = {p: (path / p).read_text() for p in (BINDINGS, PACKAGE)}
        meta = next(path.glob("tensorrt_stubs-*.dist-info/METADATA")).read_text()
    else:
        with zipfile.ZipFile(path) as wheel:
            texts = {p: wheel.read(p).decode() for p in (BINDINGS, PACKAGE)}
            meta = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    stubbed = next(line.split("==")[1] for line in meta.splitlines() if line.startswith("Requires-Dist: tensorrt"))
    wheel_version = next(line.split(": ")[1] for line in meta.splitlines() if line.startswith("Version: "))
    return texts, f"{stubbed.strip()}|tensorrt-stubs {wheel_version.strip()}"


def dump(surface: dict[str, Any]) -> str:
    """Compact JSON with one class per line, so that a regenerated surface diffs by class."""
    compact = {"separators": (",", ":"), "sort_keys": False}
    head = {k: v for k, v in surface.items() if k != "classes"}
    lines = [f"  {json.dumps(name)}:{json.dumps(cls, **compact)}" for name, cls in surface["classes"].items()]
    return json.dumps(head, indent=1)[:-2] + ',\n "classes":{\n' + ",\n".join(lines) + "\n }\n}\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``trt_api_surface.py WHEEL OUTPUT.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="tensorrt-stubs wheel (.whl) or its unpacked folder")
    parser.add_argument("output", type=Path, help="JSON surface to write")
    args = parser.parse_args(argv)
    texts, versions = read_wheel(args.wheel)
    version, wheel = versions.split("|")
    source = f"{wheel} (pybind11-stubgen of tensorrt-cu12-bindings {version}), read by scripts/trt_api_surface.py"
    surface = surface_from_stubs(texts, version, source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(dump(surface))
    print(f"{args.output}: {len(surface['classes'])} classes, {len(surface['module'])} module names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
