"""Library entry points: FP32 model vs simulated INT8 vs the engine side, on real labels, by task metric.

::

    float model ───────────────┐
    simulated INT8 GraphModule ├─ evaluation.evaluate_backends ─> Evaluation (gated)
    engine side (built here) ──┘   (the same code path as ``fx2trt build`` / ``fx2trt validate``)

The engine side is built from the quantized GraphModule into a temporary directory (:func:`library_side`):
the TensorRT engine where a GPU the library supports is present, the converted network definition executed
layer by layer (:class:`NetworkExecutor`) wherever a TensorRT library is installed, ONNX Runtime on the
exported QDQ ONNX when asked for (or when no TensorRT library is). Which backend ran, and why, is part of the
result (:mod:`.runner_set` decides, as for the CLI): a fallback is never silent. The returned
:class:`~fx2trt_pipeline.validate.results.Evaluation` is gated with ``gate``; ``evaluation.raise_for_failure()``
(or :func:`~fx2trt_pipeline.validate.gate.enforce_gate` with other thresholds) makes it an exception.

Example:
    >>> from fx2trt_pipeline.validate.demo_detector import validate_demo_detector
    >>> evaluation = validate_demo_detector(calibrator="mse", max_images=100)     # doctest: +SKIP
    >>> print(evaluation)                                                          # doctest: +SKIP
    >>> evaluation.int8_drop, evaluation.engine_delta, evaluation.passed           # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.validate.backends import select_backends
from fx2trt_pipeline.validate.eval_data import EvalData
from fx2trt_pipeline.validate.evaluation import evaluate_backends
from fx2trt_pipeline.validate.gate import GateSpec
from fx2trt_pipeline.validate.metrics import evaluate_detector
from fx2trt_pipeline.validate.results import Evaluation
from fx2trt_pipeline.validate.runner_set import EngineSide, RunModels, availability, check_backend_names, runner_set

#: Detector output names of the CenterNet models.
DETECTOR_OUTPUTS = ("hm", "wh", "reg")

Evaluator = Callable[[Any], dict[str, float]]


def _wanted(name: str, requested: str | Sequence[str]) -> bool:
    return requested == "auto" or name == requested or (not isinstance(requested, str) and name in requested)


def library_side(
    qgm: torch.fx.GraphModule,
    inputs: InputSpec,
    example: torch.Tensor,
    output_names: Sequence[str] | None,
    requested: str | Sequence[str],
    tmp: Path,
    engine: Any = None,
) -> EngineSide:
    """The artifacts ``requested`` needs, made from ``qgm`` into ``tmp`` (and why the others were not made).

    ``"auto"``: the network (wherever a TensorRT library is installed), the engine (on a GPU the library
    supports), the QDQ ONNX only without a TensorRT library; an explicit list makes what it names.

    Raises:
        ConfigError: an unknown backend name (before anything is built).
    """
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    check_backend_names(requested)
    outs = list(output_names) if output_names is not None else None
    side = EngineSide([inputs], outs, engine=engine)
    if not trt_api.is_available():
        side.not_made["network_executor"] = side.not_made["tensorrt"] = (
            "no TensorRT library (pip install 'fx2trt-pipeline[rtx]')"
        )
    elif _wanted("network_executor", requested):
        from fx2trt_pipeline.network.network import network_from_graph_module

        _, side.network, context = network_from_graph_module(qgm, [inputs], output_names=outs)
        side.keep_alive.append(context)  # the network points at weights the context owns
    else:
        side.not_made["network_executor"] = "not requested"
    gpu = gpu_unavailable_reason()
    if side.engine is None and trt_api.is_available():
        if gpu is not None or not _wanted("tensorrt", requested):
            side.not_made["tensorrt"] = gpu or "not requested"
        else:
            from fx2trt_pipeline.engine.engine_builder import build_engine

            side.engine = build_engine(qgm, [inputs], tmp / "model.engine", output_names=outs).engine_path
    explicit_onnx = requested != "auto" and _wanted("onnxruntime", requested)
    if explicit_onnx or (requested == "auto" and not trt_api.is_available()):
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            side.not_made["onnxruntime"] = "onnxruntime or onnx is not installed (pip install 'fx2trt-pipeline[onnx]')"
        else:
            from fx2trt_pipeline.export.onnx_export import export_qdq_onnx

            side.onnx_path = export_qdq_onnx(
                qgm,
                (example[:2].cpu(),),
                tmp / "model_qdq.onnx",
                input_names=[inputs.name],
                output_names=outs,
                dynamic_batch=True,
            )
    else:
        side.not_made["onnxruntime"] = "not requested (pass backends=['network_executor', 'onnxruntime'] to run it too)"
    return side


def _evaluate(
    models: RunModels,
    data: EvalData,
    backends: str | Sequence[str],
    engine: Any,
    output_names: Sequence[str] | None,
    gate: GateSpec | None,
) -> Evaluation:
    example = next(iter(data.parity_feeds().values()))
    # opt = max: the evaluation batches are full except the last one
    spec = InputSpec.dynamic_batch(data.input_name, tuple(example.shape[1:]), 1, data.batch_size, data.batch_size)
    with tempfile.TemporaryDirectory(prefix="fx2trt_accuracy_") as tmp:
        side = library_side(models.qgm, spec, example, output_names, backends, Path(tmp), engine)
        plan = select_backends(availability(side), backends)
        return evaluate_backends(runner_set(models, side, plan), data, plan, gate or GateSpec())


def validate_detector(
    model: nn.Module,
    qgm: torch.fx.GraphModule,
    dataset: Any,
    *,
    decode_fn: Callable[[Any], Any],
    backends: str | Sequence[str] = "auto",
    engine: Any = None,
    input_name: str = "images",
    output_names: Sequence[str] | None = DETECTOR_OUTPUTS,
    max_images: int | None = None,
    batch_size: int = 50,
    gate: GateSpec | None = None,
) -> Evaluation:
    """COCO mAP / AP50 of the FP32 model, the simulated INT8 model and the engine backend(s), gated.

    Args:
        model: the float detector.
        qgm: its reference-quantized GraphModule (``ftp.quantize_model``).
        dataset: ``ds[i] -> (image, image_id)`` with ``ds.coco`` ground truth, e.g.
            ``load_mnist_detection("val")``.
        decode_fn: detector outputs -> (boxes, scores, classes), e.g.
            :func:`~fx2trt_pipeline.models.centernet.centernet_decode`.
        backends: ``"auto"`` (see :func:`library_side`) or backend names; the first one that runs stands
            for the engine, the others are reported beside it.
        engine: a built engine (or its path) for the ``"tensorrt"`` backend; built from ``qgm`` if ``None``.
        input_name, output_names: network tensor names (outputs in graph-output order; CenterNet's by default).
        max_images: score only the first N images; batch_size: images per call (and the engine profile's
            largest batch).
        gate: thresholds the evaluation is gated with (default :class:`GateSpec`).

    Returns:
        The gated :class:`~fx2trt_pipeline.validate.results.Evaluation`.

    Raises:
        ConfigError: an unknown backend; BackendUnavailableError: a requested one cannot run here.

    Example:
        >>> val = load_mnist_detection("val")                                       # doctest: +SKIP
        >>> ev = validate_detector(model, qgm, val, decode_fn=centernet_decode)     # doctest: +SKIP
        >>> ev.engine_backend, round(ev.int8_drop, 4), ev.passed                   # doctest: +SKIP
        ('network_executor', 0.0012, True)
    """
    data = EvalData(
        "detection",
        dataset=dataset,
        input_name=input_name,
        decode_fn=decode_fn,
        max_images=max_images,
        batch_size=batch_size,
    )
    return _evaluate(RunModels(model, qgm), data, backends, engine, output_names, gate)


def validate_classifier(
    model: nn.Module,
    qgm: torch.fx.GraphModule,
    data: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    backends: str | Sequence[str] = "auto",
    engine: Any = None,
    input_name: str = "images",
    output_names: Sequence[str] | None = ("logits",),
    max_images: int | None = None,
    batch_size: int | None = None,
    gate: GateSpec | None = None,
) -> Evaluation:
    """Top-1 / top-5 accuracy and agreement with FP32 of the FP32, simulated INT8 and engine backend(s), gated.

    Args:
        model, qgm: the float classifier and its reference-quantized GraphModule.
        data: re-iterable ``(images, labels)`` batches (a list or a DataLoader); ``labels`` may be ``None``
            (agreement with FP32 only).
        backends, engine, input_name, max_images, gate: as in :func:`validate_detector`.
        output_names: output names in graph-output order (one logits output by default).
        batch_size: items per backend call and the engine profile's largest batch (default: the first
            batch's size).

    Raises:
        ConfigError: ``data`` is a one-shot iterator or empty, or an unknown backend;
            BackendUnavailableError: a requested backend cannot run here.

    Example:
        >>> print(validate_classifier(model, qgm, [(x, y)]))                 # doctest: +SKIP
    """
    if iter(data) is data:
        raise ConfigError(
            "validate_classifier needs re-iterable data (a list or a DataLoader), not an "
            "iterator: every backend reads it once."
        )
    batches = [(torch.as_tensor(x).float(), None if y is None else torch.as_tensor(y).reshape(-1)) for x, y in data]
    if not batches:
        raise ConfigError("validate_classifier got no batches.")
    labelled = all(y is not None for _, y in batches)
    eval_data = EvalData(
        "classification" if labelled else "none",
        batches=batches,
        input_name=input_name,
        max_images=max_images,
        batch_size=int(batch_size or batches[0][0].shape[0]),
    )
    return _evaluate(RunModels(model, qgm), eval_data, backends, engine, output_names, gate)


def detection_evaluator(
    dataset: Any, decode_fn: Callable[[Any], Any], *, max_images: int | None = None, batch_size: int = 50
) -> Evaluator:
    """A function ``evaluate(model_or_runner) -> COCO metrics`` over ``dataset`` (labels it carries), for the
    calibrator search and mixed precision (:func:`~fx2trt_pipeline.validate.metrics.evaluate_detector`).

    Example:
        >>> from fx2trt_pipeline.models.centernet import centernet_decode
        >>> evaluate = detection_evaluator(load_mnist_detection("val"), centernet_decode)   # doctest: +SKIP
        >>> evaluate(load_demo_detector())["mAP"]                                          # doctest: +SKIP
    """

    def evaluate(model: Any) -> dict[str, float]:
        return evaluate_detector(model, dataset, decode_fn, batch_size=batch_size, max_images=max_images)

    return evaluate


__all__ = [
    "DETECTOR_OUTPUTS",
    "detection_evaluator",
    "library_side",
    "validate_classifier",
    "validate_detector",
]
