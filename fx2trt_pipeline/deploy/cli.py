"""The ``fx2trt`` command: ``fx2trt build`` (== ``scripts/build_engine.py``) and ``fx2trt validate``.

::

    fx2trt build                                 # the bundled demo detector -> out/demo
    fx2trt build --model resnet18 --weights r18.pth --config resnet18.toml --output out/r18
    fx2trt validate out/demo                     # CI gate: 0 pass, 1 fail, 2 bad input, 3 unavailable

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
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from collections.abc import Sequence

from fx2trt_pipeline.errors import BackendUnavailableError, ConfigError, ExitCode, Fx2TrtError, StepFailedError

if TYPE_CHECKING:
    from fx2trt_pipeline.deploy.config import DataSpec

DEFAULT_OUTPUT = Path("out/demo")


def _add_build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="TOML (or YAML) file with [model], [[inputs]], [preprocess], "
        "[calibration], [evaluation], [quant], [build], [gate], [triton], [export]",
    )
    p.add_argument(
        "--model",
        help="torchvision model name (resnet18) or package.module:factory "
        "(default: the bundled demo detector)",
    )
    p.add_argument("--weights", type=Path, help="state dict loaded with torch.load(weights_only=True)")
    p.add_argument("--name", help="model name for the Triton repository and the report")
    p.add_argument(
        "--calib-data", help="calibration data: image folder, .npy/.npz, COCO set or mnist_det:<split>"
    )
    p.add_argument("--calib-annotations", type=Path, help="COCO annotations JSON of --calib-data")
    p.add_argument(
        "--eval-data", help="evaluation data (same forms; class subfolders give top-1, COCO gives mAP)"
    )
    p.add_argument("--eval-annotations", type=Path, help="COCO annotations JSON of --eval-data")
    p.add_argument("--task", choices=("auto", "detection", "classification", "none"), help="evaluation task")
    p.add_argument(
        "--calibrator",
        choices=("minmax", "percentile", "entropy", "mse", "auto"),
        help="activation calibrator; auto scores every one on the evaluation data and keeps the best",
    )
    p.add_argument("--percentile", type=float, help="percentile of the percentile calibrator (e.g. 99.99)")
    p.add_argument("--num-calib-samples", type=int, help="calibration items drawn (seeded; default all)")
    p.add_argument("--calib-batch-size", type=int, help="calibration batch size")
    p.add_argument("--max-eval-images", type=int, help="evaluate only the first N images")
    p.add_argument(
        "--no-onnx", dest="onnx", action="store_const", const=False, help="skip the QDQ ONNX export"
    )
    p.add_argument(
        "--output", "-o", type=Path, default=DEFAULT_OUTPUT, help="output directory (default out/demo)"
    )
    p.add_argument(
        "--force", action="store_true", help="replace a non-empty output directory not written by fx2trt"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result (or the error)")
    p.add_argument("--verbose", "-v", action="store_true", help="print the traceback of a failure")


def _add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", type=Path, help="output directory of `fx2trt build`")
    p.add_argument("--engine", type=Path, help="engine file (default: the run's model.plan)")
    p.add_argument("--onnx", type=Path, help="QDQ ONNX file (default: the run's model.qdq.onnx)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "tensorrt", "network_executor", "onnxruntime"),
        help="engine-side backend(s) to check (auto: every one that can run here)",
    )
    p.add_argument(
        "--data", help="evaluation data (default: the run's); image folder, .npy/.npz, COCO, mnist_det:val"
    )
    p.add_argument("--annotations", type=Path, help="COCO annotations JSON of --data")
    p.add_argument("--task", default="auto", choices=("auto", "detection", "classification", "none"))
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=50, help="evaluation batch size")
    p.add_argument("--decode", help="package.module:function decoding detector outputs (standalone mode)")
    p.add_argument(
        "--min-cosine", type=float, help="min output cosine of each INT8 backend vs the simulated model"
    )
    p.add_argument(
        "--engine-tolerance", type=float, help="max |metric(engine) - metric(simulated)|, e.g. 0.002"
    )
    p.add_argument("--int8-budget", type=float, help="max metric(FP32) - metric(simulated), e.g. 0.003")
    p.add_argument(
        "--min-metric", type=float, help="min task metric (mAP / top-1, in [0, 1]) of the engine side"
    )
    p.add_argument("--json", type=Path, help="also write the verdict and all numbers as JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="print the traceback of a failure")


def build_parser() -> argparse.ArgumentParser:
    """The ``fx2trt`` parser with its ``build`` and ``validate`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="fx2trt", description="PyTorch -> torch.fx INT8 -> TensorRT engine, with proof of accuracy."
    )
    sub = parser.add_subparsers(dest="command", metavar="{build,validate}")
    _add_build_arguments(
        sub.add_parser(
            "build",
            help="quantize, build the engine, validate, report",
            description="Quantize a model, build its TensorRT engine, validate it "
            "and write the artifacts. No arguments: the bundled demo detector.",
        )
    )
    _add_validate_arguments(
        sub.add_parser(
            "validate",
            help="check built artifacts against data and thresholds",
            description="Exit code 0 pass, 1 gate failed, 2 bad input, 3 the "
            "requested backend cannot run here.",
        )
    )
    return parser


def _report_failure(command: str, exc: BaseException, verbose: bool, stream: TextIO) -> None:
    from fx2trt_pipeline.deploy.steps import error_line

    if verbose:
        traceback.print_exception(
            exc.__cause__ if isinstance(exc, StepFailedError) and exc.__cause__ else exc, file=stream
        )
    line = str(exc) if isinstance(exc, StepFailedError) else error_line(exc)
    print(f"fx2trt {command}: error: {line}", file=stream, flush=True)


def run_build_command(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``fx2trt build`` with parsed arguments; returns the exit code."""
    from fx2trt_pipeline.deploy.config_loader import run_config_from_sources

    out, err = stdout or sys.stdout, stderr or sys.stderr
    overrides = {
        "model": args.model,
        "weights": args.weights,
        "name": args.name,
        "calib_data": args.calib_data,
        "calib_annotations": args.calib_annotations,
        "eval_data": args.eval_data,
        "eval_annotations": args.eval_annotations,
        "task": args.task,
        "calibrator": args.calibrator,
        "percentile": args.percentile,
        "num_calib_samples": args.num_calib_samples,
        "calib_batch_size": args.calib_batch_size,
        "max_eval_images": args.max_eval_images,
        "onnx": args.onnx,
    }
    try:
        config = run_config_from_sources(args.config, overrides)
        from fx2trt_pipeline.deploy.pipeline import run_build

        outcome = run_build(config, args.output, force=args.force, stream=out, quiet=args.quiet)
    except StepFailedError as exc:
        _report_failure("build", exc, args.verbose, err)
        return ExitCode.GATE_FAILED
    except Fx2TrtError as exc:  # configuration problems found before any step ran
        _report_failure("build", exc, args.verbose, err)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print("fx2trt build: interrupted; nothing was written", file=err, flush=True)
        return 130
    verdict = "passed" if outcome.passed else "FAILED (see report.html; `fx2trt validate` gates CI)"
    print(
        f"wrote {outcome.output}/ in {outcome.seconds:.1f} s (report.html, model.plan, triton/); "
        f"accuracy gate {verdict}",
        file=out,
        flush=True,
    )
    return ExitCode.PASS


def run_validate_command(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """``fx2trt validate`` with parsed arguments; returns the exit code (0/1/2/3)."""
    from fx2trt_pipeline.deploy import validate_cmd
    from fx2trt_pipeline.deploy.config import DataSpec

    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        data = None
        if args.data is not None:
            source = args.data if args.data.startswith("mnist_det:") else str(Path(args.data).resolve())
            data = DataSpec(
                source=source,
                annotations=args.annotations,
                max_images=args.max_images,
                batch_size=args.batch_size,
                task=args.task,
            )
        elif args.max_images is not None and args.run_dir is None:
            raise ConfigError("--max-images needs --data or a build output directory")
        if args.run_dir is not None:
            gate = {
                k: getattr(args, k)
                for k in ("min_cosine", "engine_tolerance", "int8_budget", "min_metric")
                if getattr(args, k) is not None
            }
            if data is None and args.max_images is not None:
                data = _run_eval_with_limit(args.run_dir, args.max_images)
            return validate_cmd.validate_run_dir(
                args.run_dir,
                backend=args.backend,
                engine=args.engine,
                onnx=args.onnx,
                data=data,
                gate_overrides=gate,
                stream=out,
                json_out=args.json,
            )
        if data is None:
            raise ConfigError("give a build output directory, or --onnx/--engine with --data")
        refs = [k for k in ("min_cosine", "engine_tolerance", "int8_budget") if getattr(args, k) is not None]
        if refs:
            raise ConfigError(
                f"--{refs[0].replace('_', '-')} compares with the simulated model: give the build "
                "output directory"
            )
        return validate_cmd.validate_artifact(
            data,
            onnx=args.onnx,
            engine=args.engine,
            min_metric=args.min_metric,
            decode=args.decode,
            stream=out,
        )
    except BackendUnavailableError as exc:
        _report_failure("validate", exc, args.verbose, err)
        return ExitCode.BACKEND_UNAVAILABLE
    except Fx2TrtError as exc:
        _report_failure("validate", exc, args.verbose, err)
        return ExitCode.BAD_INPUT


def _run_eval_with_limit(run_dir: Path, max_images: int) -> DataSpec | None:
    """The run's own evaluation data, limited to ``max_images``."""
    import dataclasses

    from fx2trt_pipeline.deploy.config_loader import run_config_from_dict
    from fx2trt_pipeline.deploy.validate_cmd import _load_manifest

    evaluation = run_config_from_dict(_load_manifest(run_dir)["config"]).evaluation
    return None if evaluation is None else dataclasses.replace(evaluation, max_images=max_images)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fx2trt`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "build":
        return run_build_command(args)
    if args.command == "validate":
        return run_validate_command(args)
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
    _add_build_arguments(parser)
    return run_build_command(parser.parse_args(list(argv) if argv is not None else None))


__all__ = ["build_main", "build_parser", "main", "run_build_command", "run_validate_command"]
