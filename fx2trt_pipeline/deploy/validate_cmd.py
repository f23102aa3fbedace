"""``fx2trt validate``: re-check built artifacts against data and thresholds, as an exit code for CI.

Two modes::

    fx2trt validate out/demo [--backend auto|tensorrt|network_executor|onnxruntime] [thresholds]
        the run's model + quantization state rebuild the simulated reference; the engine (on a GPU the
        library supports), the re-converted network and/or the QDQ ONNX are scored and gated like the build
    fx2trt validate --onnx model.qdq.onnx --data DIR [--annotations JSON] --min-metric 0.5
    fx2trt validate --engine model.plan  --data DIR [--annotations JSON] --min-metric 0.5
        no reference model: the task metric alone is checked against --min-metric

Exit codes: 0 pass, 1 gate failed, 2 bad usage / input, 3 the requested backend cannot run here.

Example:
    >>> code = validate_run_dir(Path("out/demo"), backend="network_executor")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, TextIO
from collections.abc import Mapping

import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline.deploy.backends import (
    PARITY_BATCH,
    decode_fn_for,
    engine_side_runners,
    max_batch_of,
    parity_inputs,
)
from fx2trt_pipeline.deploy.config import DataSpec
from fx2trt_pipeline.deploy.config_loader import run_config_from_dict
from fx2trt_pipeline.deploy.evaluation import ENGINE_SIDE, ChunkedRunner, evaluate_backends, json_safe
from fx2trt_pipeline.deploy.pipeline import ENGINE_FILE, ONNX_FILE, STATE_FILE
from fx2trt_pipeline.deploy.sources import eval_batches, load_dataset, load_model, task_of
from fx2trt_pipeline.deploy.steps import MANIFEST_NAME
from fx2trt_pipeline.errors import BackendUnavailableError, ConfigError, ExitCode
from fx2trt_pipeline.validate.metrics import evaluate_detector, topk_accuracy



def _print(lines: list[str], stream: TextIO) -> None:
    for line in lines:
        print(line, file=stream, flush=True)


def _load_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not an fx2trt build output (no {MANIFEST_NAME}); build it with "
            "`fx2trt build --output DIR`, or pass --onnx/--engine with --data"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); rebuild the output directory") from exc


def _select(runners: dict[str, Any], skipped: dict[str, str], backend: str) -> dict[str, Any]:
    if backend == "auto":
        return runners
    if backend not in ENGINE_SIDE:
        raise ConfigError(f"--backend must be auto or one of {ENGINE_SIDE}, got {backend!r}")
    if backend not in runners:
        raise BackendUnavailableError(
            f"backend {backend!r} cannot run here: {skipped.get(backend, 'its artifact is missing')}"
        )
    return {backend: runners[backend]}


def validate_run_dir(
    run_dir: Path,
    *,
    backend: str = "auto",
    engine: Path | None = None,
    onnx: Path | None = None,
    data: DataSpec | None = None,
    gate_overrides: Mapping[str, Any] | None = None,
    stream: TextIO | None = None,
    json_out: Path | None = None,
) -> int:
    """Validate a build output directory; prints one line per check and returns the exit code.

    Raises:
        Fx2TrtError: bad input (the CLI maps it to exit code 2; :class:`BackendUnavailableError` to 3).
    """
    from fx2trt_pipeline.engine.artifact import EngineArtifact

    out = stream or sys.stdout
    run_dir = Path(run_dir)
    manifest = _load_manifest(run_dir)
    cfg = run_config_from_dict(manifest["config"])
    cfg = dataclasses.replace(
        cfg,
        gate=dataclasses.replace(cfg.gate, **dict(gate_overrides or {})),
        evaluation=data or cfg.evaluation,
    )
    engine_path = Path(engine) if engine is not None else run_dir / ENGINE_FILE
    artifact = EngineArtifact.open(engine_path)  # size, sha256, library and header checks
    state = ftp.load_quant_state(run_dir / STATE_FILE)
    lines = [f"engine {engine_path}: {artifact.size_bytes} bytes, sha256 {artifact.sha256[:12]} verified"]
    built_from = artifact.metadata.get("quant_state_hash")
    state_ok = built_from == "sha256:" + state.digest()
    lines.append(
        f"{'PASS' if state_ok else 'FAIL'} engine built from quantization state {STATE_FILE}"
        + ("" if state_ok else f" (engine says {built_from})")
    )
    _print(lines, out)  # before the (slower) evaluation, which prints one line per backend
    model = load_model(cfg.model)
    inputs = artifact.input_specs
    example = torch.zeros(inputs[0].example_shape(), dtype=inputs[0].dtype)
    qgm = ftp.rebuild_quantized(model, state, example_inputs=(example,))
    network, keep = None, None
    if backend in ("auto", "network_executor"):
        from fx2trt_pipeline.network.network import network_from_graph_module

        _, network, keep = network_from_graph_module(qgm, inputs, output_names=artifact.output_names)
    side, skipped, reason = engine_side_runners(
        inputs,
        network,
        engine_path,
        Path(onnx) if onnx is not None else run_dir / ONNX_FILE,
        artifact.metadata,
    )
    side = _select(side, skipped, backend)
    names, in_name = artifact.output_names, inputs[0].name
    from fx2trt_pipeline.validate.runners import TorchRunner

    runners = {
        "fp32": TorchRunner(model, [in_name], names, name="fp32"),
        "simulated": TorchRunner(qgm, [in_name], names, name="simulated"),
        **side,
    }
    spec = cfg.evaluation
    dataset = load_dataset(spec, cfg.preprocess, "evaluation") if spec is not None else None
    task = task_of(spec, dataset) if spec is not None else "none"
    batches = eval_batches(spec, dataset) if spec is not None and task != "detection" else []
    fallback = torch.randn(
        (PARITY_BATCH, *inputs[0].example_shape()[1:]), generator=torch.Generator().manual_seed(0)
    )
    if spec is None:
        lines.append("note: no evaluation data in the run; outputs compared on seeded random inputs")
        _print(lines[-1:], out)
    first = parity_inputs(task, dataset, batches, fallback)
    evaluation = evaluate_backends(
        runners,
        task=task,
        feeds={in_name: first},
        gate=cfg.gate,
        engine_reason=reason,
        dataset=dataset,
        batches=batches,
        max_images=spec.max_images if spec else None,
        batch_size=spec.batch_size if spec else 8,
        decode_fn=decode_fn_for(cfg, model, task),
        skipped=skipped,
        progress=lambda line: print(f"  {line}", file=out, flush=True),
    )
    del keep
    passed = evaluation.passed and state_ok
    verdict = evaluation.gate_lines + [f"{'PASS' if passed else 'FAIL'} {run_dir}"]
    lines += verdict
    _print(verdict, out)
    if json_out is not None:
        from fx2trt_pipeline.atomic_io import atomic_write_text

        atomic_write_text(
            json_out,
            json.dumps(json_safe({"passed": passed, "lines": lines, **evaluation.to_dict()}), indent=1),
        )
    return ExitCode.PASS if passed else ExitCode.GATE_FAILED


def validate_artifact(
    data: DataSpec,
    *,
    onnx: Path | None = None,
    engine: Path | None = None,
    min_metric: float | None = None,
    preprocess: Any = None,
    decode: str | None = None,
    stream: TextIO | None = None,
) -> int:
    """Score a lone ONNX model or engine on labelled data and check ``min_metric``; returns the exit code."""
    out = stream or sys.stdout
    if (onnx is None) == (engine is None):
        raise ConfigError("give exactly one of --onnx and --engine (or a build output directory)")
    if min_metric is None:
        raise ConfigError("without a build output directory there is no reference model: give --min-metric")
    if onnx is not None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailableError("onnxruntime is not installed (pip install 'fx2trt-pipeline[onnx]')")
        from fx2trt_pipeline.validate.runners import OnnxRuntimeRunner

        runner: Any = OnnxRuntimeRunner(Path(onnx))
        limit = 64
    else:
        from fx2trt_pipeline.engine.artifact import EngineArtifact
        from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason
        from fx2trt_pipeline.validate.runners import TensorRTEngineRunner

        artifact = EngineArtifact.open(Path(engine))
        why = gpu_unavailable_reason(artifact.metadata)
        if why is not None:
            raise BackendUnavailableError(f"the engine cannot run here: {why}")
        runner, limit = TensorRTEngineRunner(Path(engine)), max_batch_of(artifact.input_specs)
    runner = ChunkedRunner(runner, limit)
    in_name = runner.runner.input_names[0]
    dataset = load_dataset(data, preprocess, "evaluation")
    task = task_of(data, dataset)
    if task == "detection":
        decode_fn = None
        if decode:
            from fx2trt_pipeline.deploy.sources import resolve_callable

            decode_fn = resolve_callable(decode, "Detector decode function")
        metrics = evaluate_detector(
            lambda x: runner.run({in_name: x}),
            dataset,
            decode_fn=decode_fn,
            batch_size=data.batch_size,
            max_images=data.max_images,
        )
        name = "mAP"
    elif task == "classification":
        logits, labels = [], []
        for x, y in eval_batches(data, dataset):
            logits.append(next(iter(runner.run({in_name: x}).values())).float())
            labels.append(y)
        metrics, name = topk_accuracy(torch.cat(logits), torch.cat(labels), (1,)), "top1"
    else:
        raise ConfigError(
            f"{data.source}: a metric needs labels (a COCO set or class subfolders); "
            "use a build output directory to compare outputs instead"
        )
    value = float(metrics[name])
    ok = value >= float(min_metric)
    _print(
        [
            f"{'PASS' if ok else 'FAIL'} {name}: {runner.name} {value:.4f} {'>=' if ok else '<'} minimum "
            f"{float(min_metric):.4f}"
        ],
        out,
    )
    return ExitCode.PASS if ok else ExitCode.GATE_FAILED


__all__ = [
    "validate_artifact",
    "validate_run_dir",
]
