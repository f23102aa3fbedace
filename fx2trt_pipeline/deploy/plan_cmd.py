"""``fx2trt plan``: print TensorRT's plan of an existing build, as the build printed it.

::

    fx2trt plan out/demo                 # or out/demo/model.plan: summary, audit, heaviest layers
    fx2trt plan out/demo --all           # every engine layer
    fx2trt plan out/demo --json          # model.plan.layers.json as written
    fx2trt plan out/demo --inspect       # on a GPU host: the deserialized engine's own layer information

The plan is ``<engine>.layers.json`` written by the build (TensorRT-RTX: the builder's ahead-of-time plan); with
``--inspect`` it comes from ``IEngineInspector`` instead, which needs a GPU the library supports (exit 3 otherwise).

Example:
    >>> print_plan(Path("out/demo"))   # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from fx2trt_pipeline.deploy.steps import MANIFEST_NAME
from fx2trt_pipeline.engine.engine_plan import EnginePlan, plan_path
from fx2trt_pipeline.errors import BackendUnavailableError, ConfigError, ExitCode, Fx2TrtError

TOP = 15


def _engine_of(path: Path) -> Path:
    from fx2trt_pipeline.deploy.pipeline import ENGINE_FILE  # on use: the build pipeline imports torch

    engine = path / ENGINE_FILE if path.is_dir() else path
    if not engine.is_file():
        raise ConfigError(f"{path}: no engine there; give a build output directory or its {ENGINE_FILE}")
    return engine


def load_plan(path: Path, inspect: bool = False) -> EnginePlan:
    """The plan of the engine at ``path`` (a run directory or an engine file).

    Raises:
        ConfigError: no engine, or no plan file beside it (rebuild with profiling_verbosity DETAILED).
        BackendUnavailableError: ``inspect`` and the engine does not deserialize here.
    """
    engine = _engine_of(Path(path))
    saved = plan_path(engine)
    batch = EnginePlan.read(saved).batch if saved.is_file() else 1
    if inspect:
        from fx2trt_pipeline.engine.plan_parse import plan_from_engine

        plan = plan_from_engine(engine.read_bytes(), batch)
        if plan is None:
            raise BackendUnavailableError(
                f"{engine} does not deserialize here (no GPU this TensorRT library supports); "
                f"drop --inspect to read the builder's plan {saved.name}"
            )
        return plan
    if not saved.is_file():
        raise ConfigError(
            f"{engine}: no {saved.name} beside it; rebuild with profiling_verbosity DETAILED (the default) "
            "or use --inspect on a GPU host"
        )
    return EnginePlan.read(saved)


def print_plan(
    path: Path, show_all: bool = False, as_json: bool = False, inspect: bool = False, stream: TextIO | None = None
) -> int:
    """Print the plan of the build at ``path``; returns the exit code (1 when the recorded audit failed)."""
    out = stream or sys.stdout
    plan = load_plan(Path(path), inspect)
    if as_json:
        out.write(json.dumps(plan.to_dict(), indent=1) + "\n")
        return ExitCode.PASS
    engine = _engine_of(Path(path))
    manifest = engine.parent / MANIFEST_NAME
    audit = json.loads(manifest.read_text(encoding="utf-8")).get("plan_audit") if manifest.is_file() else None
    out.write(f"TensorRT plan of {engine} ({plan.source}, {plan.library})\n")
    out.write(f"  {plan.line()}\n")
    for note in plan.notes:
        out.write(f"  note: {note}\n")
    if audit:
        out.write(f"  {audit['summary']}\n")
        for line in [*(ln for ln in audit["gate_lines"] if ln.startswith("FAIL")), *audit.get("notes", [])]:
            out.write(f"  {line}\n")
    layers = list(plan.layers) if show_all else sorted(plan.layers, key=lambda lay: -lay.nbytes(plan.batch))[:TOP]
    out.write(f"  {'engine layer':<52} {'type':<14} {'dtypes in -> out':<22} {'MB':>8} {'MMAC':>9}  FX nodes\n")
    for layer in layers:
        dtypes = ",".join(dict.fromkeys(t.dtype for t in layer.inputs)) or "-"
        dtypes += " -> " + (",".join(dict.fromkeys(t.dtype for t in layer.outputs)) or "-")
        out.write(
            f"  {layer.name[:52]:<52} {layer.type[:14]:<14} {dtypes:<22} {layer.nbytes(plan.batch) / 1e6:>8.2f} "
            f"{layer.macs(plan.batch) / 1e6:>9.1f}  {', '.join(layer.nodes[:3])}\n"
        )
    if not show_all and len(plan.layers) > TOP:
        out.write(f"  ({TOP} heaviest of {len(plan.layers)} layers by bytes; --all lists every one)\n")
    return ExitCode.PASS if not audit or audit.get("passed", True) else ExitCode.GATE_FAILED


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """The ``fx2trt plan`` arguments."""
    p.add_argument("path", type=Path, help="a build output directory or its engine file (model.plan)")
    p.add_argument("--all", action="store_true", dest="show_all", help="list every engine layer")
    p.add_argument("--json", action="store_true", dest="as_json", help="print the plan as JSON")
    p.add_argument("--inspect", action="store_true", help="read the deserialized engine (IEngineInspector; GPU host)")


def run_plan_command(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``fx2trt plan`` with parsed arguments; returns the exit code."""
    try:
        return print_plan(args.path, args.show_all, args.as_json, args.inspect, stdout)
    except BrokenPipeError:  # `fx2trt plan ... | head`: the reader has what it wanted
        sys.stdout = None  # type: ignore[assignment]  # no flush of the closed pipe at exit
        return ExitCode.PASS
    except BackendUnavailableError as exc:
        (stderr or sys.stderr).write(f"fx2trt plan: {str(exc).splitlines()[0]}\n")
        return ExitCode.BACKEND_UNAVAILABLE
    except Fx2TrtError as exc:
        (stderr or sys.stderr).write(f"fx2trt plan: {str(exc).splitlines()[0]}\n")
        return ExitCode.BAD_INPUT


__all__ = ["add_plan_arguments", "load_plan", "print_plan", "run_plan_command"]
