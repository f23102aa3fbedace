"""The top-level names: what IDEs see (TYPE_CHECKING imports) is what ``ftp.<name>`` resolves to; no public name
hides a module, so every module imports and resolves by its dotted name."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import fx2trt_pipeline as ftp
from tests.test_layering import ROOT, modules


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
            assert value is getattr(sys.modules[ftp._LAZY[name]], name)  # loaded by the lookup above
    assert set(ftp.__all__) <= set(dir(ftp))
    assert set(ftp._LAZY) <= set(ftp.__all__)


def test_unknown_name_raises_attribute_error() -> None:
    try:
        ftp.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


#: Run in a fresh interpreter after ``import <module>`` of every module: touch every public name of every
#: package (the lazy ones bind on first use), then walk each dotted name attribute by attribute from the top.
_WALK = """
import json, sys
names = sys.argv[1:]
for name in names:
    module = sys.modules[name]
    for public in getattr(module, "__all__", ()):
        getattr(module, public)
wrong = {}
for name in names:
    value = sys.modules["fx2trt_pipeline"]
    for part in name.split(".")[1:]:
        value = getattr(value, part, None)
    if value is not sys.modules[name]:
        wrong[name] = repr(value)
print(json.dumps(wrong))
"""


def test_every_module_imports_by_its_dotted_name_and_is_that_attribute() -> None:
    """``import fx2trt_pipeline.<stage>.<module>`` works for every module file, and the attribute path
    ``fx2trt_pipeline.<stage>.<module>`` is that module even after every public name was used (a function
    called like a subpackage would replace it)."""
    names = sorted(modules())
    assert {
        "fx2trt_pipeline.quantize.api",
        "fx2trt_pipeline.export.onnx_export",
        "fx2trt_pipeline.converters.conv",
    } <= set(names)
    script = "".join(f"import {name}\n" for name in names) + _WALK
    proc = subprocess.run(
        [sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wrong = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not wrong, f"these dotted names do not reach their module (a public name hides it): {wrong}"


def test_no_public_name_is_called_like_a_module() -> None:
    """Checked statically as well: a top-level or stage-level public name equal to a module name of that
    package hides the module for ``package.<name>`` attribute access."""
    clashes = []
    for name in modules():
        package, _, leaf = name.rpartition(".")
        exported = set(getattr(sys.modules.get(package), "__all__", ())) if package else set()
        if leaf in exported and leaf not in ("errors",):
            clashes.append(f"{package}.{leaf}")
    assert not clashes, f"public names that are also module names: {clashes}"


#: Functions that import a module given by a string.
_IMPORTERS = {"import_module", "__import__", "find_spec", "spec_from_file_location", "resolve_name"}


def _literal_strings(node: ast.AST) -> list[str]:
    """The string constants ``node`` spells out (a literal, an f-string's fixed start, a tuple of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return [str(node.values[0].value)]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [text for item in node.elts for text in _literal_strings(item)]
    return []


def importlib_reaching_package_modules(source: str) -> list[str]:
    """Package modules that ``source`` names literally and imports through importlib or ``__import__``.

    A module named in a test's source is imported with the import statement; importlib stays for names
    found at run time (a walker over the package) and for optional third-party libraries. A loop variable
    over a literal tuple counts as the literal.
    """
    tree = ast.parse(source)
    loops = {
        loop.target.id: _literal_strings(loop.iter)
        for loop in ast.walk(tree)
        if isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
    }
    found = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in _IMPORTERS:
            continue
        for arg in call.args[:2]:
            texts = loops.get(arg.id, []) if isinstance(arg, ast.Name) else _literal_strings(arg)
            found += [
                text
                for text in texts
                if text.startswith("fx2trt_pipeline")
                or any(part in text.replace("\\", "/") for part in ("fx2trt_pipeline/", "converters/", "calib_data/"))
            ]
    return found


def test_importlib_check_can_fail() -> None:
    assert importlib_reaching_package_modules(
        'import importlib\napi = importlib.import_module("fx2trt_pipeline.quantize.api")'
    )
    looped = 'import importlib\nfor m in ("fx2trt_pipeline.network.network",):\n    importlib.import_module(m)\n'
    assert importlib_reaching_package_modules(looped) == ["fx2trt_pipeline.network.network"]
    assert not importlib_reaching_package_modules('import importlib\nimportlib.import_module("onnxruntime")')


def test_no_test_reaches_a_package_module_through_importlib() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): found
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if (found := importlib_reaching_package_modules(path.read_text()))
    }
    assert not offenders, f"import these with the import statement instead: {offenders}"


def test_package_modules_import_the_stage_they_use_not_the_facade() -> None:
    """Inside the package every import names the module it uses (a structure walk sees which stage calls which);
    ``import fx2trt_pipeline`` / ``from fx2trt_pipeline import <public function>`` is for users."""
    facade = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                facade += [f"{name}: import {a.name}" for a in node.names if a.name == "fx2trt_pipeline"]
            elif isinstance(node, ast.ImportFrom) and node.module == "fx2trt_pipeline" and not node.level:
                facade += [
                    f"{name}: from fx2trt_pipeline import {a.name}"
                    for a in node.names
                    if f"fx2trt_pipeline.{a.name}" not in modules() and a.name != "__version__"
                ]
    assert not facade, "import these names from their own modules:\n" + "\n".join(facade)


def test_public_entry_points_spell_out_their_arguments() -> None:
    """No ``**options``: every argument of a public entry point has a name and a type the user can read."""
    import inspect

    from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
    from fx2trt_pipeline.tune.mixed_precision import mixed_precision_search

    functions = [getattr(ftp, name) for name in ftp.__all__ if inspect.isfunction(getattr(ftp, name))]
    loose = [
        f"{fn.__module__}.{fn.__name__}({p})"
        for fn in [*functions, export_qdq_onnx, mixed_precision_search]
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.VAR_KEYWORD or p.annotation is p.empty
    ]
    assert not loose, f"arguments without a name or type: {loose}"
    assert "opset" in inspect.signature(export_qdq_onnx).parameters
    assert "calib_batches" in inspect.signature(mixed_precision_search).parameters
