"""``fx2trt build``: one run from a model to a validated engine and everything that goes with it.

::

    capture        load model + data, torch.fx capture, fold BN, place Q/DQ      (quantize.api.prepare)
    quantize       one calibration pass, scales, quantization state JSON        (quantize.api.calibrate/convert)
    build network  strongly typed INetworkDefinition + graph.svg / graph.dot     (network.network_from_graph_module)
    build engine   that network built once; engine + sidecar, Triton repository  (engine_from_network, save_engine)
    export onnx    QDQ ONNX                                                      (export.onnx_export.export_qdq_onnx)
    validate       FP32 / simulated / engine-side accuracy, parity gate, per-layer error
    report         fx2trt_run.json manifest + report.html

Everything is written into a staging directory next to ``--output`` and published by one rename
(:func:`fx2trt_pipeline.deploy.steps.staged_output`); a failed step leaves nothing behind.

Example:
    >>> from fx2trt_pipeline.deploy.config_loader import run_config_from_sources
    >>> outcome = run_build(run_config_from_sources(None), Path("out/demo"))   # doctest: +SKIP
    >>> outcome.passed, sorted(p.name for p in outcome.output.iterdir())[:3]    # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from fx2trt_pipeline import __version__, trt_api
from fx2trt_pipeline.atomic_io import atomic_write_text
from fx2trt_pipeline.deploy import analysis, plan_step, tune_step
from fx2trt_pipeline.deploy.config import RunConfig
from fx2trt_pipeline.deploy.evaluate_run import EngineSide, EvalRequest, RunModels, evaluate_run
from fx2trt_pipeline.deploy.graph_svg import graph_view, render_svg, to_dot
from fx2trt_pipeline.deploy.input_checks import capture_notes, check_input_fits, image_notes
from fx2trt_pipeline.deploy.sources import (
    attach_labels,
    calib_batches,
    load_dataset,
    load_model,
)
from fx2trt_pipeline.deploy.steps import MANIFEST_NAME, Steps, staged_output
from fx2trt_pipeline.deploy.triton import triton_model_name, write_triton_repository
from fx2trt_pipeline.deploy.trt_log import TENSORRT_LOG, tensorrt_log
from fx2trt_pipeline.engine.compatibility import deployment_target
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_from_network
from fx2trt_pipeline.engine.engine_files import model_metadata, save_engine
from fx2trt_pipeline.errors import ConfigError, Fx2TrtError
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.quantize.api import calibrate, prepare, prepared_info
from fx2trt_pipeline.quantize.equalization import summary_line
from fx2trt_pipeline.quantize.state import get_quant_state, save_quant_state
from fx2trt_pipeline.validate.gate import extend_gate
from fx2trt_pipeline.validate.results import Evaluation, json_safe

STEP_NAMES = ["capture", "quantize", "build network", "build engine", "export onnx", "validate", "report"]
ENGINE_FILE, STATE_FILE, ONNX_FILE = "model.plan", "model.quant.json", "model.qdq.onnx"
GRAPH_SVG, GRAPH_DOT, REPORT_FILE, TRITON_DIR = "graph.svg", "graph.dot", "report.html", "triton"
LAYER_BATCH = 8  # images for the per-layer error table


@dataclass
class BuildOutcome:
    """A finished run: the published directory, its manifest and the gate verdict."""

    output: Path
    manifest: dict[str, Any]
    passed: bool
    seconds: float = 0.0

    @property
    def failed_line(self) -> str:
        """The first failing gate line ("" when the gate passed)."""
        lines = (self.manifest.get("evaluation") or {}).get("gate_lines", [])
        return next((line for line in lines if line.startswith("FAIL")), "")


@dataclass
class _Run:
    """State handed from step to step (one object, passed explicitly)."""

    config: RunConfig
    stage: Path
    steps: Steps
    output: Path = Path(".")  # where the stage is published (named in the report)
    facts: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    batches: list[torch.Tensor] = field(default_factory=list)
    eval_ds: Any = None
    inputs: list[InputSpec] = field(default_factory=list)
    prepared: Any = None
    qgm: Any = None
    builder: Any = None  # the builder that made ``network``; the build step builds that network with it
    network: Any = None
    network_seconds: float = 0.0
    keep_alive: list[Any] = field(default_factory=list)  # conversion context: weights the network points at
    artifact: Any = None
    engine_plan: Any = None  # TensorRT's plan of the engine (also written beside it), None when not logged
    evaluation: Evaluation | None = None
    trt_log: Any = None  # TensorRT's messages of the run, written to tensorrt.log by the report step


def _derive_inputs(run: _Run) -> list[InputSpec]:
    """InputSpecs from the config, or a dynamic batch 1..max(32, batch) named after forward()'s argument."""
    example = run.batches[0]
    if run.config.inputs is not None:
        specs = list(run.config.inputs)
        if len(specs) == 1 and tuple(specs[0].shape[1:]) != tuple(example.shape[1:]):
            raise ConfigError(
                f"Input {specs[0].name!r} has shape {specs[0].shape} but the calibration data gives "
                f"{tuple(example.shape)}: make [preprocess] and [[inputs]] agree"
            )
        return specs
    names = [n.name for n in run.prepared.graph.nodes if n.op == "placeholder"]
    batch = int(example.shape[0])
    return [InputSpec.dynamic_batch(names[0] if names else "input", tuple(example.shape[1:]), 1, batch, max(32, batch))]


def _step_capture(run: _Run) -> None:
    cfg, steps = run.config, run.steps
    run.model = load_model(cfg.model)
    params = sum(p.numel() for p in run.model.parameters())
    steps.note(f"model {cfg.model.display_name} ({type(run.model).__name__}, {params / 1e6:.2f} M parameters)")
    calib_ds = load_dataset(cfg.calibration, cfg.preprocess, "calibration")
    for line in capture_notes(cfg, calib_ds, run.model):  # preprocessing, image channels, evaluation data
        steps.note(line)
    run.batches = calib_batches(cfg.calibration, calib_ds)
    check_input_fits(run.model, run.batches[0], cfg.preprocess, cfg.calibration.source)
    items = sum(int(b.shape[0]) for b in run.batches)
    steps.note(f"calibration data: {items} items in {len(run.batches)} batches from {cfg.calibration.source}")
    if cfg.evaluation is not None:
        _load_evaluation(run)
    run.prepared = prepare(run.model, (run.batches[0],), cfg.quant)
    if summary_line(run.prepared) is not None:
        steps.note(summary_line(run.prepared))
    run.inputs = _derive_inputs(run)
    placement = prepared_info(run.prepared).placement
    steps.note(
        f"captured {len(run.prepared.graph.nodes)} FX nodes; {len(placement.groups)} activation scale "
        f"groups, {len(placement.weights)} INT8 weight layers"
    )


def _load_evaluation(run: _Run) -> None:
    """The evaluation set, its class folders mapped to the model's outputs; an impossible search refused now."""
    cfg = run.config
    run.eval_ds = load_dataset(cfg.evaluation, cfg.preprocess, "evaluation")
    for line in image_notes(run.eval_ds, run.model, "evaluation"):
        run.steps.note(line)
    labels = attach_labels(run.eval_ds, run.model, cfg.evaluation)
    if labels is not None:
        run.facts["labels"] = labels
        run.steps.note(f"evaluation labels: {labels}")


def _step_quantize(run: _Run) -> None:
    calibrate(run.prepared, run.batches, show_progress=run.steps.interactive)
    run.qgm = tune_step.quantize_for_run(run)  # the configured calibrator, or the automatic choices
    if get_quant_state(run.qgm).config.placement == "plan-cost":
        plan_step.place_for_run(run)
    digest = save_quant_state(run.qgm, run.stage / STATE_FILE)
    quant = get_quant_state(run.qgm).config
    pct = f" {quant.percentile}" if quant.calibrator == "percentile" else ""
    how = " (best of the search)" if run.config.search_calibrator else ""
    run.steps.note(f"calibrator {quant.calibrator}{pct}{how}; state {STATE_FILE} (sha256 {digest[:12]})")


def _step_network(run: _Run) -> None:
    from fx2trt_pipeline.network.network import network_from_graph_module  # heavy: converters register on import

    names = list(run.config.model.output_names) if run.config.model.output_names else None
    start = time.perf_counter()
    run.builder, run.network, ctx = network_from_graph_module(
        run.qgm, run.inputs, builder=create_builder(), output_names=names
    )
    run.network_seconds = time.perf_counter() - start
    run.keep_alive.append(ctx)
    view = graph_view(run.qgm)
    atomic_write_text(run.stage / GRAPH_SVG, render_svg(view, f"{run.config.model.display_name}: quantized graph"))
    atomic_write_text(run.stage / GRAPH_DOT, to_dot(view))
    run.facts["network"] = analysis.network_figures(run.network)
    run.steps.note(
        f"{run.network.num_layers} TensorRT layers ({run.facts['network']['quantize_layers']} quantize, "
        f"{run.facts['network']['dequantize_layers']} dequantize); graph drawn to {GRAPH_SVG}"
    )
    plan_step.lint_for_run(run)


def _step_engine(run: _Run) -> None:
    """Build the network of the network step (no second conversion); write engine and sidecar once."""
    cfg = run.config
    built = engine_from_network(run.builder, run.network, run.inputs, cfg.build, network_seconds=run.network_seconds)
    extra = model_metadata(run.qgm, cfg.build)
    if cfg.preprocess is not None:  # a server must prepare inputs exactly as calibration did
        extra["preprocess"] = cfg.preprocess.to_dict()
    run.artifact = save_engine(built.data, run.stage / ENGINE_FILE, {**built.metadata, **extra}, built.plan)
    run.engine_plan = built.plan
    meta = run.artifact.metadata
    run.steps.note(
        f"{ENGINE_FILE}: {run.artifact.size_bytes / 1e6:.2f} MB, built in "
        f"{meta['build']['build_seconds']:.1f} s with {meta['library']['name']} "
        f"{meta['library']['version']}"
    )
    run.steps.note(f"deployment target: {deployment_target(meta)}")
    plan_step.audit_for_run(run)
    model_dir = write_triton_repository(
        run.stage / TRITON_DIR,
        triton_model_name(cfg.model.display_name),
        built.data,
        meta,
        cfg.triton.max_queue_delay_microseconds,
        cfg.triton.instance_count,
    )
    run.facts["triton_model"] = model_dir.name
    run.steps.note(f"Triton repository: {TRITON_DIR}/{model_dir.name}/config.pbtxt + 1/model.plan")


def _step_onnx(run: _Run) -> None:
    cfg = run.config
    if not cfg.export.onnx:
        run.steps.note("skipped (export.onnx = false)")
        return
    try:
        importlib.import_module("onnx")
    except ImportError:
        run.steps.note("skipped: onnx is not installed (pip install 'fx2trt-pipeline[onnx]')")
        return
    example = run.batches[0][:2]  # batch 2: a batch of 1 would let torch.export specialise the dimension
    export_qdq_onnx(
        run.qgm,
        (example,),
        run.stage / ONNX_FILE,
        input_names=[s.name for s in run.inputs],
        output_names=run.artifact.output_names,
        dynamic_batch=any(s.is_dynamic for s in run.inputs),
        opset=cfg.export.opset,
    )
    run.steps.note(
        f"{ONNX_FILE}: {(run.stage / ONNX_FILE).stat().st_size / 1e6:.2f} MB (QuantizeLinear / "
        "DequantizeLinear, opset " + str(cfg.export.opset) + ")"
    )


def _step_validate(run: _Run) -> None:
    cfg, steps = run.config, run.steps
    side = EngineSide(
        run.inputs,
        run.artifact.output_names,
        run.network,
        run.stage / ENGINE_FILE,
        run.stage / ONNX_FILE,
        run.artifact.metadata,
    )
    if not (run.facts.get("placement") or {}).get("is_int8_engine", True):
        steps.note("plan-cost placement kept no layer INT8: the rows named INT8 below are the float16 model it chose")
    held_out = cfg.search_calibrator or cfg.mixed_precision is not None  # report on the images not chosen on
    request = EvalRequest(cfg, run.eval_ds, fallback=run.batches[0], progress=steps.note, held_out=held_out)
    run.evaluation = evaluate_run(RunModels(run.model, run.qgm), side, request)
    audit = run.facts.get("plan_audit")
    if audit is not None:  # the precision audit is part of the gate: a layer run in float by mistake fails it
        extend_gate(run.evaluation, audit["gate_lines"], bool(audit["passed"]))
    for line in run.evaluation.gate_lines:
        steps.note(line)
    try:
        run.facts["layers"] = analysis.layer_errors(run.model, run.qgm, (run.batches[0][:LAYER_BATCH],))
    except Fx2TrtError as exc:  # the report says so; accuracy above is unaffected
        run.facts["layers"], run.facts["layers_error"] = [], str(exc).splitlines()[0]
        steps.note(f"per-layer error table unavailable: {run.facts['layers_error']}")
    run.facts["histograms"] = analysis.worst_layer_histograms(run.qgm, run.facts["layers"])
    run.facts["kept_in_float"] = analysis.kept_in_float(run.qgm)


def _file_entries(stage: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(p for p in stage.rglob("*") if p.is_file()):
        data = path.read_bytes()
        out.append(
            {
                "path": path.relative_to(stage).as_posix(),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return out


def _versions() -> dict[str, str]:
    return {
        "fx2trt_pipeline": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tensorrt_library": f"{trt_api.library_name()} {trt_api.library_version()}",
    }


def _step_report(run: _Run) -> dict[str, Any]:
    from fx2trt_pipeline.deploy.report import render_report

    record = run.steps.records["report"]  # the manifest is written from inside this step: time it so far
    record.status, record.seconds = "ok", time.perf_counter() - record.started
    manifest = {
        "format": "fx2trt.run/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "config": run.config.to_dict(),
        "inputs": [s.to_dict() for s in run.inputs],
        "model": analysis.model_summary(run.model, run.qgm),
        "engine": run.artifact.metadata,
        "triton_model": run.facts.get("triton_model"),
        "network": run.facts.get("network", {}),
        "plan": run.facts.get("plan"),
        "plan_audit": run.facts.get("plan_audit"),
        "plans": run.facts.get("plans"),
        "placement": run.facts.get("placement"),
        "lint": run.facts.get("lint", []),
        "evaluation": run.evaluation.to_dict() if run.evaluation else None,
        "layers": run.facts.get("layers", []),
        "layers_error": run.facts.get("layers_error"),
        "histograms": run.facts.get("histograms", []),
        "kept_in_float": run.facts.get("kept_in_float", []),
        "calibrator_search": run.facts.get("calibrator_search"),
        "mixed_precision": run.facts.get("mixed_precision"),
        "labels": run.facts.get("labels"),
        "eval_on_calibration": run.config.evaluation is None,  # the report says the agreement is optimistic
        "images": {
            "calibration": sum(int(b.shape[0]) for b in run.batches),
            "layers": int(run.batches[0][:LAYER_BATCH].shape[0]),
        },
        "preprocess": run.config.preprocess.to_dict() if run.config.preprocess is not None else None,
        "steps": run.steps.to_list(),
        "passed": bool(run.evaluation and run.evaluation.passed),
    }
    if run.trt_log is not None:  # every TensorRT message of the build, listed with the other artifacts
        run.trt_log.write(run.stage / TENSORRT_LOG)
        run.steps.note(run.trt_log.summary())
    manifest["artifacts"] = _file_entries(run.stage)  # the report lists them; itself and the manifest follow
    html = render_report(manifest, (run.stage / GRAPH_SVG).read_text(encoding="utf-8"), str(run.output))
    atomic_write_text(run.stage / REPORT_FILE, html)
    manifest["artifacts"] = _file_entries(run.stage)
    atomic_write_text(run.stage / MANIFEST_NAME, json.dumps(json_safe(manifest), indent=1, allow_nan=False) + "\n")
    return manifest


def run_build(
    config: RunConfig,
    output: Path,
    *,
    force: bool = False,
    stream: TextIO | None = None,
    quiet: bool = False,
) -> BuildOutcome:
    """Run every step into a staging directory and publish it as ``output``.

    Args:
        config: the run configuration (``config_loader.run_config_from_sources``).
        output: directory to create (or replace, when it is a previous run's or ``force`` is set).
        force: replace a non-empty ``output`` that no fx2trt run wrote.
        stream, quiet: where progress lines go / print nothing.

    Returns:
        The :class:`BuildOutcome` (``passed``: the accuracy gate verdict; the build itself succeeded).

    Raises:
        StepFailedError: a step raised; its message is the one line to print, ``output`` is unchanged.
        ConfigError: ``output`` cannot be used (checked before any step runs).
    """
    steps = Steps(STEP_NAMES, stream=stream, quiet=quiet)
    output = Path(output)
    with staged_output(output, force) as stage, tensorrt_log() as trt_log:
        run = _Run(config, stage, steps, output, trt_log=trt_log)
        with steps.step("capture", "load the model and data, trace, fold BatchNorm, place Q/DQ"):
            _step_capture(run)
        with steps.step("quantize", "calibrate (one pass) and derive scales"):
            _step_quantize(run)
        with steps.step("build network", "convert to a strongly typed TensorRT network"):
            _step_network(run)
        with steps.step("build engine", "serialize the engine, write the Triton repository"):
            _step_engine(run)
        with steps.step("export onnx", "QDQ ONNX for ONNX Runtime / other runtimes"):
            _step_onnx(run)
        with steps.step("validate", "accuracy of FP32, simulated INT8 and the engine side; per-layer error"):
            _step_validate(run)
        with steps.step("report", f"{MANIFEST_NAME} and {REPORT_FILE}"):
            manifest = _step_report(run)
    return BuildOutcome(output, manifest, bool(manifest["passed"]), steps.total_seconds)


__all__ = ["BuildOutcome", "STEP_NAMES", "run_build"]
