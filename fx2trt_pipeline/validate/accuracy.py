"""Library entry points: FP32 model vs simulated INT8 vs the engine side, on real labels, by task metric.

::

    float model ───────────────┐
    simulated INT8 GraphModule ├─ evaluation.evaluate_backends ─> Evaluation ─> AccuracyResult
    engine side (built here) ──┘   (the same code path as ``fx2trt build`` / ``fx2trt validate``)

The engine side is built from the quantized GraphModule into a temporary directory: the TensorRT engine
where a GPU the library supports is present, else the converted network definition executed layer by
layer (:class:`NetworkExecutor`); ONNX Runtime on the exported QDQ ONNX when asked for (or when no
TensorRT library is installed). Which backend ran, and why, is part of the result: a fallback is never
silent. :func:`fx2trt_pipeline.validate.gate.check_parity` turns a result into a pass/fail.

Example:
    >>> from fx2trt_pipeline.validate.demo_detector import validate_demo_detector
    >>> result = validate_demo_detector(calibrator="mse", max_images=100)     # doctest: +SKIP
    >>> print(result)                                                          # doctest: +SKIP
    >>> result.int8_drop, result.engine_delta                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.backends import Availability, BackendPlan, ChunkedRunner, select_backends
from fx2trt_pipeline.validate.evaluation import EvalData, evaluate_backends
from fx2trt_pipeline.validate.gate import GateSpec
from fx2trt_pipeline.validate.metrics import evaluate_detector
from fx2trt_pipeline.validate.results import AccuracyResult, BackendRun
from fx2trt_pipeline.validate.runners import (
    NetworkExecutorRunner,
    OnnxRuntimeRunner,
    Runner,
    TensorRTEngineRunner,
    TorchRunner,
)

#: Detector output names of the CenterNet models.
DETECTOR_OUTPUTS = ("hm", "wh", "reg")

Evaluator = Callable[[Any], dict[str, float]]


@dataclass(frozen=True)
class ValidationOptions:
    """Tensor names and limits of a library validation.

    Attributes:
        input_name, output_names: network / ONNX tensor names (outputs in graph-output order).
        max_images: score only the first N items; batch_size: items per call (and the engine profile's
            largest batch).
        decode_fn: detector outputs -> (boxes, scores, classes).
        gate: thresholds applied to the evaluation (the library reports; :func:`check_parity` judges).
    """

    input_name: str = "images"
    output_names: tuple[str, ...] | None = None
    max_images: int | None = None
    batch_size: int = 50
    decode_fn: Callable[[Any], Any] | None = None
    gate: GateSpec = GateSpec(min_cosine=None)


def _onnx_available() -> bool:
    try:
        importlib.import_module("onnxruntime")
        importlib.import_module("fx2trt_pipeline.export.onnx_export")
    except ImportError:
        return False
    return True


def library_availability(requested: str | Sequence[str] = "auto") -> Availability:
    """What the library can build and run here; ``"auto"`` builds ONNX only without a TensorRT library.

    Example:
        >>> library_availability().reason("tensorrt") is None or True
        True
    """
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    trt_reason = None if trt_api.is_available() else "no TensorRT library (pip install 'fx2trt-pipeline[rtx]')"
    onnx_reason = None if _onnx_available() else "onnxruntime, onnx or the QDQ exporter is missing"
    if requested == "auto" and trt_reason is None and onnx_reason is None:
        onnx_reason = "not requested (pass backends=['network_executor', 'onnxruntime'] to run it too)"
    return Availability(
        {"tensorrt": gpu_unavailable_reason(), "network_executor": trt_reason, "onnxruntime": onnx_reason}
    )


def choose_engine_backends(requested: str | Sequence[str] = "auto") -> BackendPlan:
    """Resolve which backends stand for the engine here, and say why.

    ``"auto"``: the TensorRT engine when a supported GPU is present, and the network executor (the very
    network definition the engine is built from) wherever a TensorRT library is installed; ONNX Runtime
    when no TensorRT library is. An explicit list is honoured exactly.

    Raises:
        ConfigError: an unknown backend name.
        BackendUnavailableError: a requested backend cannot run here.

    Example:
        >>> plan = choose_engine_backends("auto")
        >>> plan.engine in ("tensorrt", "network_executor", "onnxruntime") and isinstance(plan.reason, str)
        True
    """
    return select_backends(library_availability(requested), requested)


def _engine_runner(name: str, qgm: torch.fx.GraphModule, spec: Any, tmp: Path, engine: Any) -> tuple[Runner, Any]:
    """One engine-side runner built from ``qgm`` (and what must stay alive while it runs)."""
    outs = list(spec.output_names) if spec.output_names is not None else None
    if name == "network_executor":
        from fx2trt_pipeline.network.network import network_from_graph_module

        _, network, ctx = network_from_graph_module(qgm, [spec.input], output_names=outs)
        return NetworkExecutorRunner(network, name=name), ctx
    if name == "onnxruntime":
        from fx2trt_pipeline.export.onnx_export import export_qdq_onnx

        path = export_qdq_onnx(
            qgm,
            (spec.example[:1].cpu(),),
            tmp / "model_qdq.onnx",
            input_names=[spec.input.name],
            output_names=outs,
            dynamic_batch=True,
        )
        return OnnxRuntimeRunner(path, name=name), None
    if engine is None:
        from fx2trt_pipeline.engine.engine_builder import build_engine

        engine = build_engine(qgm, [spec.input], tmp / "model.engine", output_names=outs).engine_path
    return TensorRTEngineRunner(engine, name=name), None


@dataclass(frozen=True)
class _BuildSpec:
    input: Any
    example: torch.Tensor
    output_names: tuple[str, ...] | None


@contextlib.contextmanager
def engine_runners(
    qgm: torch.fx.GraphModule,
    example: torch.Tensor,
    backends: Sequence[str],
    options: ValidationOptions = ValidationOptions(),
    engine: Any = None,
) -> Iterator[list[Runner]]:
    """Runners for the named engine backends of ``qgm``; temporary files and weights live until exit.

    Args:
        qgm: the reference-quantized GraphModule.
        example: one input batch (its shape after dim 0 fixes the network input shape).
        backends: names from :data:`~fx2trt_pipeline.validate.backends.ENGINE_BACKENDS`.
        options: tensor names and the largest batch (``batch_size``) every backend must accept.
        engine: for ``"tensorrt"``: an :class:`~fx2trt_pipeline.engine.runtime.Engine` or engine path;
            ``None`` builds one from ``qgm`` into a temporary directory.
    """
    from fx2trt_pipeline.network.inputs import InputSpec

    limit = options.batch_size
    # opt = max: the evaluation batches are full except the last one
    spec = _BuildSpec(
        InputSpec.dynamic_batch(options.input_name, tuple(example.shape[1:]), 1, limit, limit),
        example,
        options.output_names,
    )
    with tempfile.TemporaryDirectory(prefix="fx2trt_accuracy_") as tmp:
        built = [_engine_runner(name, qgm, spec, Path(tmp), engine) for name in backends]
        yield [ChunkedRunner(runner, limit) for runner, _keep in built]


def detection_evaluator(
    dataset: Any, decode_fn: Callable[[Any], Any], *, max_images: int | None = None, batch_size: int = 50
) -> Evaluator:
    """A function ``evaluate(model_or_runner) -> COCO metrics`` over ``dataset`` (labels it carries).

    Example:
        >>> from fx2trt_pipeline.models.centernet import centernet_decode
        >>> evaluate = detection_evaluator(load_mnist_detection("val"), centernet_decode)   # doctest: +SKIP
        >>> evaluate(load_demo_detector())["mAP"]                                          # doctest: +SKIP
    """

    def evaluate(model: Any) -> dict[str, float]:
        return evaluate_detector(model, dataset, decode_fn, batch_size=batch_size, max_images=max_images)

    return evaluate


def _validate(
    models: tuple[nn.Module, torch.fx.GraphModule],
    data: EvalData,
    backends: str | Sequence[str],
    engine: Any,
    options: ValidationOptions,
) -> AccuracyResult:
    plan = choose_engine_backends(backends)
    names = list(options.output_names) if options.output_names is not None else None
    example = next(iter(data.parity_feeds().values()))
    with engine_runners(models[1], example, plan.names, options, engine) as engines:
        runners = {
            "fp32": TorchRunner(models[0], [options.input_name], names, name="fp32"),
            "simulated": TorchRunner(models[1], [options.input_name], names, name="simulated"),
            **{r.name: r for r in engines},
        }
        evaluation = evaluate_backends(runners, data, plan, options.gate)
    result = evaluation.accuracy()
    if result is None:
        raise ConfigError("The data carries no labels: no task metric to report (see evaluation agreement).")
    return result


def validate_detector(
    model: nn.Module,
    qgm: torch.fx.GraphModule,
    dataset: Any,
    *,
    backends: str | Sequence[str] = "auto",
    engine: Any = None,
    **options: Any,
) -> AccuracyResult:
    """COCO mAP / AP50 of the FP32 model, the simulated INT8 model and the engine backend(s).

    Args:
        model: the float detector.
        qgm: its reference-quantized GraphModule (``ftp.quantize_model``).
        dataset: ``ds[i] -> (image, image_id)`` with ``ds.coco`` ground truth, e.g.
            ``load_mnist_detection("val")``.
        backends: ``"auto"`` (see :func:`choose_engine_backends`) or backend names; the first one
            stands for the engine, the others are reported beside it.
        engine: a built engine (or its path) for the ``"tensorrt"`` backend; built from ``qgm`` if ``None``.
        options: :class:`ValidationOptions` fields; ``decode_fn`` is required (e.g.
            :func:`~fx2trt_pipeline.validate.demo_detector.centernet_decode`), ``output_names`` defaults
            to CenterNet's ``hm, wh, reg``.

    Raises:
        ConfigError: no decode_fn, or an unknown backend; BackendUnavailableError: a requested one cannot run.

    Example:
        >>> result = validate_detector(model, qgm, load_mnist_detection("val"),
        ...                            decode_fn=centernet_decode)                   # doctest: +SKIP
        >>> result.engine_backend, round(result.int8_drop, 4)                    # doctest: +SKIP
        ('network_executor', 0.0012)
    """
    opts = ValidationOptions(**{"output_names": DETECTOR_OUTPUTS, **options})
    data = EvalData(
        "detection",
        dataset=dataset,
        input_name=opts.input_name,
        decode_fn=opts.decode_fn,
        max_images=opts.max_images,
        batch_size=opts.batch_size,
    )
    return _validate((model, qgm), data, backends, engine, opts)


def validate_classifier(
    model: nn.Module,
    qgm: torch.fx.GraphModule,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    backends: str | Sequence[str] = "auto",
    engine: Any = None,
    **options: Any,
) -> AccuracyResult:
    """Top-1 / top-5 accuracy (and agreement with FP32) of the FP32, simulated INT8 and engine backend(s).

    Args:
        model, qgm: the float classifier and its reference-quantized GraphModule (one logits output).
        data: re-iterable ``(images, labels)`` batches (a list or a DataLoader).
        backends, engine: as in :func:`validate_detector`.
        options: :class:`ValidationOptions` fields (``output_names`` defaults to ``("logits",)``,
            ``batch_size`` to the first batch's size).

    Raises:
        ConfigError: ``data`` is a one-shot iterator or empty; no engine backend can run.

    Example:
        >>> print(validate_classifier(model, qgm, [(x, y)]))                 # doctest: +SKIP
    """
    if iter(data) is data:
        raise ConfigError(
            "validate_classifier needs re-iterable data (a list or a DataLoader), not an "
            "iterator: every backend reads it once."
        )
    batches = [(torch.as_tensor(x).float(), torch.as_tensor(y).reshape(-1)) for x, y in data]
    if not batches:
        raise ConfigError("validate_classifier got no batches.")
    opts = ValidationOptions(**{"output_names": ("logits",), "batch_size": int(batches[0][0].shape[0]), **options})
    eval_data = EvalData(
        "classification",
        batches=batches,
        input_name=opts.input_name,
        max_images=opts.max_images,
        batch_size=opts.batch_size,
    )
    return _validate((model, qgm), eval_data, backends, engine, opts)


__all__ = [
    "AccuracyResult",
    "BackendRun",
    "DETECTOR_OUTPUTS",
    "ValidationOptions",
    "choose_engine_backends",
    "detection_evaluator",
    "engine_runners",
    "library_availability",
    "validate_classifier",
    "validate_detector",
]
