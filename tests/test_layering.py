"""The package's layering, read from the source: no stage imports a later stage, no module import cycles.

Stages, in pipeline order (docs/architecture.md)::

    capture -> quantize -> export -> network (+ converters) -> executor -> engine -> plan -> validate -> tune -> deploy

The shared basics (``errors``, ``atomic_io``, ``trt_api``, ``trt_types``, ``calib_data``, ``models``) may be
imported by every stage and import no stage. The package facade ``fx2trt_pipeline/__init__.py`` re-exports
the stages; it shares the last layer with ``deploy``, though no package module calls through it (each imports
the stage module it uses: tests/test_public_api.py).
Every import statement counts, also those inside functions and under ``TYPE_CHECKING``: a deferred
import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fx2trt_pipeline"
#: Source folder of each installed package whose files live outside fx2trt_pipeline/ (pyproject package-dir).
SOURCES = {
    PACKAGE: ROOT / "fx2trt_pipeline",
    f"{PACKAGE}.converters": ROOT / "converters",
    f"{PACKAGE}.calib_data": ROOT / "calib_data",
}
STAGES = ("capture", "quantize", "export", "network", "executor", "engine", "plan", "validate", "tune", "deploy")
BASICS = ("errors", "atomic_io", "trt_api", "trt_types", "calib_data", "models")
#: Layer of each top-level part: basics 0, then the stages in order (converters with network), the facade last.
LAYER = {
    **{b: 0 for b in BASICS},
    **{s: i + 1 for i, s in enumerate(STAGES)},
    "converters": 1 + STAGES.index("network"),
    "": len(STAGES),
    "pt2e": 2,
}  # the torchao PT2E quantizer: a front end of the quantize stage

#: Known violations, each owned by work in progress elsewhere; remove an entry once its import is gone.
#: (importer, imported) module pairs.
ALLOWED_BACKWARD: set[tuple[str, str]] = set()


@cache
def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == PACKAGE and parts[0] in ("converters", "calib_data"):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _resolve(name: str) -> str | None:
    """The module ``name`` denotes (``a.b.c`` may be the attribute ``c`` of module ``a.b``)."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports_of(module: str) -> frozenset[str]:
    """Package modules imported anywhere in ``module`` (module level, functions, TYPE_CHECKING blocks)."""
    path = modules()[module]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.startswith(PACKAGE) else None
            if target is not None and target != module:
                found.add(target)
    return frozenset(found)


def part_of(module: str) -> str:
    """The top-level part (stage, basic, or "" for the facade) a module belongs to."""
    return module.split(".")[1] if module.count(".") else ""


def test_every_part_is_placed() -> None:
    parts = {part_of(m) for m in modules()}
    assert parts <= set(LAYER), f"place these in STAGES or BASICS (and docs/architecture.md): {parts - set(LAYER)}"
    assert {"fx2trt_pipeline.converters.registry", "fx2trt_pipeline.deploy.config_loader"} <= set(modules())
    assert {"fx2trt_pipeline.executor.network_executor", "fx2trt_pipeline.export.onnx_export"} <= set(modules())
    assert "fx2trt_pipeline.quantize.api" in imports_of("fx2trt_pipeline")  # the parser sees real imports


def test_no_stage_imports_a_later_stage() -> None:
    backward = sorted(
        (m, t)
        for m in modules()
        for t in imports_of(m)
        if LAYER[part_of(t)] > LAYER[part_of(m)] and (m, t) not in ALLOWED_BACKWARD
    )
    lines = [f"{m} ({part_of(m) or 'facade'}) imports {t} ({part_of(t) or 'facade'})" for m, t in backward]
    assert not lines, "imports against the stage order (docs/architecture.md):\n" + "\n".join(lines)


def test_allow_list_is_not_stale() -> None:
    stale = sorted(pair for pair in ALLOWED_BACKWARD if pair[1] not in imports_of(pair[0]))
    assert not stale, f"these imports are gone; remove them from ALLOWED_BACKWARD: {stale}"


def _cycle_from(start: str) -> list[str] | None:
    """One import cycle through ``start`` (depth-first), or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for target in sorted(imports_of(module)):
            if target == start:
                return [*path, start]
            if target not in seen and not _is_own_package(target, start):
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def _is_own_package(target: str, module: str) -> bool:
    """A package's ``__init__`` re-exporting its submodules is not a cycle with them."""
    return module.startswith(f"{target}.")


def test_no_import_cycles() -> None:
    cycles = {}
    for module in modules():
        cycle = _cycle_from(module)
        if cycle is not None:
            cycles[frozenset(cycle)] = " -> ".join(cycle)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles.values()))


def test_cycle_search_finds_deferred_cycles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search itself, on a made-up graph: config <-> loader (the kind a function-level import hides)."""
    graph = {"p.config": {"p.loader"}, "p.loader": {"p.config", "p.errors"}, "p.errors": set(), "p": {"p.config"}}
    monkeypatch.setattr(sys.modules[__name__], "imports_of", lambda m: frozenset(graph[m]))
    assert _cycle_from("p.config") == ["p.config", "p.loader", "p.config"]
    assert _cycle_from("p.errors") is None and _cycle_from("p") is None
