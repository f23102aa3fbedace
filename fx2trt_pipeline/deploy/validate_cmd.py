"""``fx2trt validate``: re-check built artifacts against data and thresholds, as an exit code for CI.

Two modes::

    fx2trt validate out/demo [--backend auto|tensorrt|network_executor|onnxruntime] [thresholds]
        the run's model + quantization state rebuild the simulated reference; the engine (on a GPU the
        library supports), the re-converted network and/or the QDQ ONNX are scored and gated like the build
        (the same code: deploy.evaluate_run -> validate.evaluation)
    fx2trt validate --onnx model.qdq.onnx --data DIR [--annotations JSON] --min-metric 0.5
    fx2trt validate --engine model.plan  --data DIR [--annotations JSON] --min-metric 0.5
        no reference model: the task metric alone is checked against --min-metric

Under ``torchrun`` every rank joins the process group, runs on its own GPU (``cuda:LOCAL_RANK``) and scores
its shard of the data (:mod:`~fx2trt_pipeline.deploy.torchrun`); the predictions are merged before scoring
and rank 0 prints the verdict and writes ``--json``. Exit codes: :class:`~fx2trt_pipeline.errors.ExitCode`
(0 pass, 1 gate failed, 2 bad usage / input, 3 the requested backend cannot run here).

Example:
    >>> code = validate_run_dir(RunDirCheck(Path("out/demo"), backend="network_executor"))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from fx2trt_pipeline.deploy.config import DataSpec, RunConfig
from fx2trt_pipeline.deploy.config_loader import run_config_from_dict
from fx2trt_pipeline.deploy.evaluate_run import EvalRequest, evaluate_run
from fx2trt_pipeline.deploy.pipeline import ENGINE_FILE, ONNX_FILE, STATE_FILE
from fx2trt_pipeline.deploy.sources import attach_labels, load_dataset, load_model, resolve_callable, task_of
from fx2trt_pipeline.deploy.steps import MANIFEST_NAME
from fx2trt_pipeline.deploy.torchrun import under_torchrun
from fx2trt_pipeline.errors import ConfigError, ExitCode
from fx2trt_pipeline.quantize.api import rebuild_quantized
from fx2trt_pipeline.quantize.state import load_quant_state
from fx2trt_pipeline.validate.backends import ChunkedRunner, select_backends
from fx2trt_pipeline.validate.evaluation import PARITY_BATCH, EvalData, Shard, score_runner
from fx2trt_pipeline.validate.results import json_safe
from fx2trt_pipeline.validate.runner_set import EngineSide, RunModels, availability, engine_side_runner


@dataclass
class RunDirCheck:
    """``fx2trt validate RUN_DIR`` settings: which artifacts, which data, which thresholds."""

    run_dir: Path
    backend: str = "auto"
    engine: Path | None = None
    onnx: Path | None = None
    data: DataSpec | None = None
    gate_overrides: Mapping[str, Any] = field(default_factory=dict)
    json_out: Path | None = None


class _Printer:
    """Prints on rank 0 only (every rank computes; one speaks)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream, self.lines = stream or sys.stdout, []
        self.speaks = Shard.current().rank == 0

    def __call__(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            if self.speaks:
                print(line, file=self.stream, flush=True)


def load_manifest(run_dir: Path) -> dict[str, Any]:
    """The run manifest of a build output directory.

    Raises:
        ConfigError: the directory is not an fx2trt build output or its manifest is not JSON.
    """
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} is not an fx2trt build output (no {MANIFEST_NAME}); build it with "
            "`fx2trt build --output DIR`, or pass --onnx/--engine with --data"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); rebuild the output directory") from exc


def _run_config(check: RunDirCheck) -> RunConfig:
    cfg = run_config_from_dict(load_manifest(check.run_dir)["config"])
    return dataclasses.replace(
        cfg, gate=dataclasses.replace(cfg.gate, **dict(check.gate_overrides)), evaluation=check.data or cfg.evaluation
    )


def _open_artifacts(check: RunDirCheck, say: _Printer) -> tuple[Any, Any, bool]:
    """The engine artifact and the quantization state; whether the engine was built from that state."""
    from fx2trt_pipeline.engine.artifact import EngineArtifact

    engine_path = Path(check.engine) if check.engine is not None else check.run_dir / ENGINE_FILE
    artifact = EngineArtifact.open(engine_path)  # size, sha256, library and header checks
    state = load_quant_state(check.run_dir / STATE_FILE)
    built_from = artifact.metadata.get("quant_state_hash")
    state_ok = built_from == "sha256:" + state.digest()
    say(
        f"engine {engine_path}: {artifact.size_bytes} bytes, sha256 {artifact.sha256[:12]} verified",
        f"{'PASS' if state_ok else 'FAIL'} engine built from quantization state {STATE_FILE}"
        + ("" if state_ok else f" (engine says {built_from})"),
    )
    return artifact, state, state_ok


def _models_and_artifacts(
    check: RunDirCheck, cfg: RunConfig, artifact: Any, state: Any
) -> tuple[RunModels, EngineSide]:
    model = load_model(cfg.model)
    inputs = artifact.input_specs
    example = torch.zeros(inputs[0].example_shape(), dtype=inputs[0].dtype)
    qgm = rebuild_quantized(model, state, example_inputs=(example,))
    onnx = Path(check.onnx) if check.onnx is not None else check.run_dir / ONNX_FILE
    side = EngineSide(inputs, artifact.output_names, None, artifact.engine_path, onnx, artifact.metadata)
    if check.backend in ("auto", "network_executor"):
        from fx2trt_pipeline.network.network import network_from_graph_module

        _, side.network, keep = network_from_graph_module(qgm, inputs, output_names=artifact.output_names)
        side.keep_alive.append(keep)
    else:
        side.not_made["network_executor"] = "not requested"
    return RunModels(model, qgm), side


def _audit_saved_plan(evaluation: Any, network: Any, engine_path: Path, qgm: Any) -> None:
    """Re-audit the plan written beside the engine against the network rebuilt from the quantization state."""
    from fx2trt_pipeline.engine.engine_plan import EnginePlan, plan_path
    from fx2trt_pipeline.plan.audit import audit_plan
    from fx2trt_pipeline.validate.gate import extend_gate

    if not plan_path(engine_path).is_file():
        return
    audit = audit_plan(network, EnginePlan.read(plan_path(engine_path)), qgm)
    extend_gate(evaluation, audit.gate_lines(), audit.passed)


@under_torchrun
def validate_run_dir(check: RunDirCheck, stream: TextIO | None = None) -> int:
    """Validate a build output directory; prints one line per check and returns the exit code.

    Raises:
        Fx2TrtError: bad input (the CLI maps it to exit code 2; :class:`BackendUnavailableError` to 3).
    """
    say = _Printer(stream)
    check = dataclasses.replace(check, run_dir=Path(check.run_dir))
    cfg = _run_config(check)
    artifact, state, state_ok = _open_artifacts(check, say)
    models, side = _models_and_artifacts(check, cfg, artifact, state)
    dataset = load_dataset(cfg.evaluation, cfg.preprocess, "evaluation") if cfg.evaluation else None
    labels = attach_labels(dataset, models.model, cfg.evaluation) if dataset is not None else None
    if labels is not None:
        say(f"evaluation labels: {labels}")
    fallback = None
    if dataset is None:
        say("note: no evaluation data in the run; outputs compared on seeded random inputs")
        fallback = torch.randn(
            (PARITY_BATCH, *side.inputs[0].example_shape()[1:]), generator=torch.Generator().manual_seed(0)
        )
    request = EvalRequest(cfg, dataset, check.backend, fallback, progress=lambda line: say(f"  {line}"))
    evaluation = evaluate_run(models, side, request)
    if side.network is not None:
        _audit_saved_plan(evaluation, side.network, artifact.engine_path, models.qgm)
    passed = evaluation.passed and state_ok
    say(*evaluation.gate_lines, f"{'PASS' if passed else 'FAIL'} {check.run_dir}")
    if check.json_out is not None and say.speaks:
        from fx2trt_pipeline.atomic_io import atomic_write_text

        payload = {"passed": passed, "lines": say.lines, **evaluation.to_dict()}
        atomic_write_text(check.json_out, json.dumps(json_safe(payload), indent=1))
    return ExitCode.PASS if passed else ExitCode.GATE_FAILED


def _standalone_runner(onnx: Path | None, engine: Path | None) -> ChunkedRunner:
    """The runner of a lone ONNX file or engine, through the one availability rule (exit code 3 if it cannot run)."""
    if (onnx is None) == (engine is None):
        raise ConfigError("give exactly one of --onnx and --engine (or a build output directory)")
    if onnx is not None:
        if not Path(onnx).is_file():
            raise ConfigError(f"ONNX file not found: {onnx}")
        side, name = EngineSide([], onnx_path=Path(onnx)), "onnxruntime"
    else:
        from fx2trt_pipeline.engine.artifact import EngineArtifact

        artifact = EngineArtifact.open(Path(engine))  # size, sha256, library and header checks
        side = EngineSide(artifact.input_specs, artifact.output_names, engine=Path(engine), metadata=artifact.metadata)
        name = "tensorrt"
    select_backends(availability(side), name)  # BackendUnavailableError with the reason
    return engine_side_runner(name, side)


@dataclass
class ArtifactCheck:
    """``fx2trt validate --onnx/--engine --data``: a lone model scored against ``min_metric``.

    Attributes:
        data: the evaluation data (``--data``, ``--npz-key``, ``--labels``, ``--output-index``...).
        onnx, engine: the lone model (exactly one).
        min_metric: the smallest acceptable task metric.
        decode: ``package.module:function`` decoding detector outputs.
        preprocess: a :class:`~fx2trt_pipeline.calib_data.PreprocessSpec` (default: from ``config`` and ``flags``).
        config: a config file whose ``[preprocess]``, ``[evaluation]`` and ``[model] decode`` describe the data.
        flags: preprocessing flags (``input_size``, ``resize``, ``mean``, ``std``, ``channels``); they win.
    """

    data: DataSpec
    onnx: Path | None = None
    engine: Path | None = None
    min_metric: float | None = None
    decode: str | None = None
    preprocess: Any = None
    config: Path | None = None
    flags: Mapping[str, Any] = field(default_factory=dict)


#: ``[evaluation]`` keys of a standalone ``--config`` that apply where the flags left the default.
_EVALUATION_KEYS = ("key", "labels", "output_index", "task", "max_images", "annotations", "batch_size")


def _standalone_inputs(check: ArtifactCheck) -> tuple[DataSpec, Any, str | None]:
    """The data, preprocessing and decoder of a lone model: ``--config`` sections, then the flags."""
    from fx2trt_pipeline.deploy.config_loader import load_config_file
    from fx2trt_pipeline.deploy.preprocess_defaults import preprocess_for

    sections = load_config_file(check.config) if check.config is not None else {}
    base = Path(check.config).resolve().parent if check.config is not None else Path.cwd()
    model, evaluation = dict(sections.get("model", {})), dict(sections.get("evaluation", {}))
    data, defaults = check.data, DataSpec(check.data.source)
    for key in _EVALUATION_KEYS:
        if key in evaluation and getattr(data, key) == getattr(defaults, key):
            value = evaluation[key]
            value = base / str(value) if key in ("labels", "annotations") else value
            data = dataclasses.replace(data, **{key: value})
    source, section = str(model.get("source", "")), dict(sections.get("preprocess", {}))
    preprocess = check.preprocess
    if preprocess is None and (source or section or check.flags):  # nothing given: data must be network inputs
        preprocess = preprocess_for(source, section, check.flags)
    return data, preprocess, check.decode or model.get("decode")


class _RunnerAsModel:
    """A runner called like a module (``model(x) -> outputs``), to map class folders to its outputs."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.runner.run({self.runner.input_names[0]: x})


@under_torchrun
def validate_artifact(check: ArtifactCheck, stream: TextIO | None = None) -> int:
    """Score a lone ONNX model or engine on labelled data and check ``min_metric``; returns the exit code."""
    say = _Printer(stream)
    if check.min_metric is None:
        raise ConfigError("without a build output directory there is no reference model: give --min-metric")
    runner = _standalone_runner(check.onnx, check.engine)
    spec, preprocess, decode_name = _standalone_inputs(check)
    dataset = load_dataset(spec, preprocess, "evaluation")
    labels = attach_labels(dataset, _RunnerAsModel(runner), spec)
    if labels is not None:
        say(f"evaluation labels: {labels}")
    task = task_of(spec, dataset)
    decode = resolve_callable(decode_name, "Detector decode function") if decode_name else None
    if task == "detection" and decode is None:
        raise ConfigError(
            "Detection mAP of a lone model needs --decode package.module:function (outputs -> "
            "boxes, scores, classes), e.g. fx2trt_pipeline.models.centernet:centernet_decode"
        )
    data = EvalData(
        task,
        dataset=dataset,
        input_name=runner.input_names[0],
        decode_fn=decode,
        max_images=spec.max_images,
        batch_size=spec.batch_size,
        shard=Shard.current(),
        output=spec.output_index,
    )
    if data.metric is None:
        raise ConfigError(
            f"{spec.source}: a metric needs labels (a COCO set or class subfolders); "
            "use a build output directory to compare outputs instead"
        )
    value = float(score_runner(runner, data).metrics[data.metric])
    ok = value >= float(check.min_metric)
    say(
        f"{'PASS' if ok else 'FAIL'} {data.metric}: {runner.name} {value:.4f} {'>=' if ok else '<'} minimum "
        f"{float(check.min_metric):.4f} on {data.count()} images"
    )
    return ExitCode.PASS if ok else ExitCode.GATE_FAILED


__all__ = ["ArtifactCheck", "RunDirCheck", "load_manifest", "validate_artifact", "validate_run_dir"]
