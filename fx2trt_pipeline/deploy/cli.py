"""The ``fx2trt`` command: ``fx2trt build`` (== ``scripts/build_engine.py``) and ``fx2trt validate``.

::

    fx2trt build                                 # the bundled demo detector -> out/demo
    fx2trt build --model resnet18 --weights r18.pth --config resnet18.toml --output out/r18
    fx2trt validate out/demo                     # CI gate: 0 pass, 1 fail, 2 bad input, 3 unavailable
    fx2trt plan out/demo                         # TensorRT's plan of the build: layers, dtypes, bytes, audit
    torchrun --nproc-per-node 4 -m fx2trt_pipeline.deploy.cli validate out/demo   # data sharded over ranks

A failure prints one line (the error's first line, the step and the code location) on stderr and exits
non-zero; ``--verbose`` adds the traceback. Nothing is left in the output directory by a failed build.

Example:
    >>> main(["build", "--output", "out/demo", "--max-eval-images", "100"])   # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fx2trt_pipeline.deploy.cli_args import (
    GATE_FLAGS,
    STANDALONE_FLAGS,
    add_build_arguments,
    build_overrides,
    build_parser,
)
from fx2trt_pipeline.deploy.plan_cmd import run_plan_command
from fx2trt_pipeline.errors import (
    AccuracyGateError,
    BackendUnavailableError,
    ConfigError,
    ExitCode,
    Fx2TrtError,
    StepFailedError,
)

if TYPE_CHECKING:
    from fx2trt_pipeline.deploy.config import DataSpec


def _report_failure(command: str, exc: BaseException, verbose: bool, stream: TextIO) -> None:
    from fx2trt_pipeline.deploy.steps import error_line

    if verbose:
        traceback.print_exception(
            exc.__cause__ if isinstance(exc, StepFailedError) and exc.__cause__ else exc, file=stream
        )
    line = str(exc) if isinstance(exc, StepFailedError) else error_line(exc)
    print(f"fx2trt {command}: error: {line}", file=stream, flush=True)


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit code of a failure: 3 backend unavailable, 1 accuracy gate, 2 anything else (bad input).

    A failed build step is judged by its cause: a wrong model name, missing preprocessing or an op no
    converter takes are bad input (2), like a typo in the config file.

    Example:
        >>> int(exit_code_of(BackendUnavailableError("no GPU"))), int(exit_code_of(ConfigError("typo")))
        (3, 2)
    """
    cause = exc.cause if isinstance(exc, StepFailedError) else exc
    if isinstance(cause, BackendUnavailableError):
        return ExitCode.BACKEND_UNAVAILABLE
    if isinstance(cause, AccuracyGateError):
        return ExitCode.GATE_FAILED
    return ExitCode.BAD_INPUT


def _print_outcome(outcome: Any, out: TextIO) -> None:
    if outcome.passed:
        verdict = "accuracy gate passed"
    else:
        verdict = (
            f"accuracy gate FAILED (exit code {int(ExitCode.GATE_FAILED)}): {outcome.failed_line}; "
            "the artifacts were written anyway, see report.html"
        )
    print(
        f"wrote {outcome.output}/ in {outcome.seconds:.1f} s (report.html, model.plan, triton/); {verdict}",
        file=out,
        flush=True,
    )


def run_build_command(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``fx2trt build`` with parsed arguments; returns the exit code (:class:`ExitCode`)."""
    from fx2trt_pipeline.deploy.config_loader import run_config_from_sources
    from fx2trt_pipeline.deploy.steps import sigterm_as_interrupt

    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config = run_config_from_sources(args.config, build_overrides(args))
        from fx2trt_pipeline.deploy.pipeline import run_build

        with sigterm_as_interrupt():
            outcome = run_build(config, args.output, force=args.force, stream=out, quiet=args.quiet)
    except Fx2TrtError as exc:  # a failed step (StepFailedError) or configuration found bad before any step
        _report_failure("build", exc, args.verbose, err)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        print("fx2trt build: interrupted; nothing was written", file=err, flush=True)
        return 130
    _print_outcome(outcome, out)
    return ExitCode.PASS if outcome.passed else ExitCode.GATE_FAILED


def _data_spec(args: argparse.Namespace) -> DataSpec | None:
    from fx2trt_pipeline.deploy.config import DataSpec

    if args.data is None:
        return None
    source = args.data if args.data.startswith("mnist_det:") else str(Path(args.data).resolve())
    return DataSpec(
        source=source,
        annotations=args.annotations,
        max_images=args.max_images,
        batch_size=args.batch_size,
        task=args.task,
        labels=args.labels,
        key=args.npz_key,
        output_index=args.output_index if args.output_index is not None else 0,
    )


def _validate_run_dir(args: argparse.Namespace, data: DataSpec | None, out: TextIO) -> int:
    from fx2trt_pipeline.deploy.validate_cmd import RunDirCheck, validate_run_dir

    gate = {k: getattr(args, k) for k in GATE_FLAGS if getattr(args, k) is not None}
    given = [k for k in STANDALONE_FLAGS if getattr(args, k) is not None]
    if given:
        raise ConfigError(
            f"--{given[0].replace('_', '-')} describes the data of a lone --onnx/--engine; a build output directory "
            "prepares its data as recorded in its manifest"
        )
    if data is None and args.max_images is not None:
        data = _run_eval_with_limit(args.run_dir, args.max_images)
    check = RunDirCheck(args.run_dir, args.backend, args.engine, args.onnx, data, gate, args.json)
    return validate_run_dir(check, stream=out)


def _validate_artifact(args: argparse.Namespace, data: DataSpec | None, out: TextIO) -> int:
    from fx2trt_pipeline.deploy.validate_cmd import ArtifactCheck, validate_artifact

    if data is None:
        raise ConfigError("give a build output directory, or --onnx/--engine with --data")
    refs = [k for k in GATE_FLAGS if k != "min_metric" and getattr(args, k) is not None]
    if refs:
        raise ConfigError(
            f"--{refs[0].replace('_', '-')} compares with the simulated model: give the build output directory"
        )
    flags = {k: getattr(args, k) for k in STANDALONE_FLAGS[1:] if getattr(args, k) is not None}
    check = ArtifactCheck(data, args.onnx, args.engine, args.min_metric, args.decode, config=args.config, flags=flags)
    return validate_artifact(check, stream=out)


def run_validate_command(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``fx2trt validate`` with parsed arguments; returns the exit code (:class:`ExitCode`)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        data = _data_spec(args)
        if data is None and args.max_images is not None and args.run_dir is None:
            raise ConfigError("--max-images needs --data or a build output directory")
        if args.run_dir is not None:
            return _validate_run_dir(args, data, out)
        return _validate_artifact(args, data, out)
    except Fx2TrtError as exc:
        _report_failure("validate", exc, args.verbose, err)
        return exit_code_of(exc)


def _run_eval_with_limit(run_dir: Path, max_images: int) -> DataSpec | None:
    """The run's own evaluation data, limited to ``max_images``."""
    import dataclasses

    from fx2trt_pipeline.deploy.config_loader import run_config_from_dict
    from fx2trt_pipeline.deploy.validate_cmd import load_manifest

    evaluation = run_config_from_dict(load_manifest(run_dir)["config"]).evaluation
    return None if evaluation is None else dataclasses.replace(evaluation, max_images=max_images)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fx2trt`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "build":
        return run_build_command(args)
    if args.command == "validate":
        return run_validate_command(args)
    if args.command == "plan":
        return run_plan_command(args)
    parser.print_help()
    return ExitCode.BAD_INPUT


def build_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/build_engine.py``: the ``fx2trt build`` arguments without the subcommand."""
    parser = argparse.ArgumentParser(
        prog="build_engine.py",
        description="Quantize a model, build its TensorRT "
        "engine, validate it and write the artifacts (== `fx2trt build`). With no "
        "arguments: the bundled demo detector into out/demo.",
    )
    add_build_arguments(parser)
    return run_build_command(parser.parse_args(list(argv) if argv is not None else None))


__all__ = [
    "build_main",
    "build_overrides",
    "build_parser",
    "exit_code_of",
    "main",
    "run_build_command",
    "run_validate_command",
]


if __name__ == "__main__":  # `torchrun ... -m fx2trt_pipeline.deploy.cli validate RUN_DIR`
    sys.exit(main())
