"""Accuracy on real labels: FP32 model vs simulated INT8 vs an engine backend, by task metric.

::

    float model ───────────────┐
    simulated INT8 GraphModule ├─ runners ─> detector: COCO mAP / AP50 (pycocotools)
    engine backend ────────────┘             classifier: top-1 / top-5

The engine backend is the TensorRT engine where a GPU the library supports is present; otherwise the
converted network definition itself, executed layer by layer (:class:`NetworkExecutor`), and/or ONNX
Runtime on the exported QDQ ONNX. Which backend ran, and why, is part of the result: a fallback is
never silent. :func:`fx2trt_pipeline.validate.gate.check_parity` turns a result into a pass/fail.

Example:
    >>> from fx2trt_pipeline.validate.demo_detector import validate_demo_detector
    >>> result = validate_demo_detector(calibrator="mse", max_images=100)     # doctest: +SKIP
    >>> print(result)                                                          # doctest: +SKIP
    >>> result.int8_drop, result.engine_delta                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.compare import format_table
from fx2trt_pipeline.validate.metrics import evaluate_detector, topk_accuracy
from fx2trt_pipeline.validate.runners import (
    NetworkExecutorRunner,
    OnnxRuntimeRunner,
    Runner,
    TensorRTEngineRunner,
    TorchRunner,
)

#: Engine backends, in the order "auto" prefers them.
ENGINE_BACKENDS = ("tensorrt", "network_executor", "onnxruntime")
#: Detector output names of the CenterNet models (what ``evaluate_detector`` picks by name).
DETECTOR_OUTPUTS = ("hm", "wh", "reg")

Evaluator = Callable[[Any], dict[str, float]]


@dataclass
class BackendRun:
    """Metrics of one way of running the model, and how long evaluating it took."""

    name: str
    metrics: dict[str, float]
    seconds: float


@dataclass
class AccuracyResult:
    """Task metrics of the FP32 model, the simulated INT8 model and the engine backend(s).

    Attributes:
        task: ``"detection"`` or ``"classification"``.
        metric: the primary metric (``"mAP"`` or ``"top1"``); the gate compares it.
        runs: ``fp32``, ``simulated`` and one entry per engine backend that ran.
        engine_backend: the backend standing for the engine (first that ran), ``None`` if none could.
        engine_reason: why that backend (e.g. why the TensorRT engine itself could not run here).
        num_samples: images / samples scored.
    """

    task: str
    metric: str
    runs: dict[str, BackendRun]
    engine_backend: str | None
    engine_reason: str
    num_samples: int

    def value(self, run: str, metric: str | None = None) -> float | None:
        """One metric of one run (``None`` when that run did not happen)."""
        entry = self.runs.get(run)
        return None if entry is None else entry.metrics.get(metric or self.metric)

    @property
    def fp32(self) -> float:
        """Primary metric of the float model."""
        return float(self.runs["fp32"].metrics[self.metric])

    @property
    def simulated(self) -> float:
        """Primary metric of the simulated INT8 GraphModule."""
        return float(self.runs["simulated"].metrics[self.metric])

    @property
    def engine(self) -> float | None:
        """Primary metric of the engine backend, ``None`` when no backend could run."""
        return None if self.engine_backend is None else self.value(self.engine_backend)

    @property
    def int8_drop(self) -> float:
        """``fp32 - simulated`` (positive: INT8 is worse)."""
        return self.fp32 - self.simulated

    @property
    def engine_delta(self) -> float | None:
        """``|engine - simulated|``, ``None`` without an engine backend."""
        return None if self.engine is None else abs(self.engine - self.simulated)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; :meth:`from_dict` inverts it."""
        return {"task": self.task, "metric": self.metric, "engine_backend": self.engine_backend,
                "engine_reason": self.engine_reason, "num_samples": self.num_samples,
                "runs": {k: {"metrics": dict(r.metrics), "seconds": r.seconds} for k, r in self.runs.items()},
                "fp32": self.fp32, "simulated": self.simulated, "engine": self.engine,
                "int8_drop": self.int8_drop, "engine_delta": self.engine_delta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracyResult:
        """Rebuild a result saved with :meth:`to_dict` (e.g. by a CI job that ran the validator).

        Raises:
            ConfigError: keys are missing or the runs lack ``fp32`` / ``simulated``.
        """
        try:
            runs = {k: BackendRun(k, {m: float(v) for m, v in r["metrics"].items()},
                                  float(r.get("seconds", 0.0))) for k, r in data["runs"].items()}
            result = cls(str(data["task"]), str(data["metric"]), runs, data.get("engine_backend"),
                         str(data.get("engine_reason", "")), int(data.get("num_samples", 0)))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(f"Not an AccuracyResult dict ({exc.__class__.__name__}: {exc}); write it with "
                              "AccuracyResult.to_dict().") from exc
        missing = [k for k in ("fp32", "simulated") if k not in runs or result.metric not in runs[k].metrics]
        if missing:
            raise ConfigError(f"AccuracyResult dict lacks the {result.metric!r} metric of run(s) {missing}.")
        return result

    def __str__(self) -> str:
        names = [n for n in ("mAP", "AP50", "top1", "top5")
                 if any(n in r.metrics for r in self.runs.values())]
        rows = []
        for key, run in self.runs.items():
            label = key + (" (engine)" if key == self.engine_backend else "")
            rows.append((label, *[_pct(run.metrics.get(n)) for n in names], f"{run.seconds:.1f}"))
        table = format_table(("backend", *names, "seconds"), rows)
        delta = self.engine_delta
        return (f"{self.task} accuracy on {self.num_samples} samples ({self.metric}, in points):\n{table}\n"
                f"INT8 drop (fp32 - simulated): {100 * self.int8_drop:+.2f} points; engine vs simulated: "
                + ("n/a" if delta is None else f"{100 * delta:.2f} points") +
                f"\nengine backend: {self.engine_backend or 'none'} ({self.engine_reason})")


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def choose_engine_backends(requested: str | Sequence[str] = "auto") -> tuple[list[str], str]:
    """Resolve which backends stand for the engine here, and say why.

    ``"auto"``: the TensorRT engine when a supported GPU is present, else the network executor
    (which runs the very network definition the engine is built from), else ONNX Runtime on the
    QDQ ONNX. An explicit list is honoured exactly: asking for ``"tensorrt"`` where it cannot run is
    an error rather than a quiet switch to another backend.

    Raises:
        ConfigError: an unknown backend name, or a requested backend that cannot run here.

    Example:
        >>> backends, why = choose_engine_backends("auto")
        >>> backends[0] in ENGINE_BACKENDS and isinstance(why, str)
        True
    """
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    gpu_reason = gpu_unavailable_reason()
    if isinstance(requested, str) and requested != "auto":
        requested = [requested]
    if requested == "auto":
        if gpu_reason is None:
            return ["tensorrt"], f"a GPU that {trt_api.library_name()} supports is present"
        if trt_api.is_available():
            return ["network_executor"], (f"the TensorRT engine cannot run here ({gpu_reason}); the network "
                                          "executor runs the converted network definition instead")
        if _onnx_available():
            return ["onnxruntime"], f"no TensorRT library ({gpu_reason}); ONNX Runtime runs the QDQ ONNX"
        raise ConfigError(f"No engine backend can run here: {gpu_reason}, and ONNX Runtime / the QDQ "
                          "exporter is missing. Install fx2trt-pipeline[rtx] or onnxruntime.")
    names = list(requested)
    unknown = [n for n in names if n not in ENGINE_BACKENDS]
    if unknown or not names:
        raise ConfigError(f"Unknown engine backend(s) {unknown or names}; choose from {ENGINE_BACKENDS} "
                          "or 'auto'.")
    if "tensorrt" in names and gpu_reason is not None:
        raise ConfigError(f"Backend 'tensorrt' was requested but engines cannot run here: {gpu_reason}. "
                          "Ask for 'network_executor' / 'onnxruntime' or use 'auto'.")
    if "network_executor" in names and not trt_api.is_available():
        raise ConfigError("Backend 'network_executor' needs TensorRT or TensorRT-RTX installed (pip install "
                          "'fx2trt-pipeline[rtx]').")
    if "onnxruntime" in names and not _onnx_available():
        raise ConfigError("Backend 'onnxruntime' needs onnxruntime, onnx and the QDQ exporter installed.")
    if gpu_reason is not None and "tensorrt" not in names:
        return names, f"requested explicitly (the TensorRT engine cannot run here: {gpu_reason})"
    return names, "requested explicitly"


def _onnx_available() -> bool:
    try:
        importlib.import_module("onnxruntime")
        importlib.import_module("fx2trt_pipeline.validate.onnx_export")
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def engine_runners(qgm: torch.fx.GraphModule, example: torch.Tensor, backends: Sequence[str], *,
                   input_name: str = "images", output_names: Sequence[str] | None = None, max_batch: int = 50,
                   engine: Any = None) -> Iterator[list[Runner]]:
    """Runners for the named engine backends of ``qgm``; temporary files and weights live until exit.

    Args:
        qgm: the reference-quantized GraphModule.
        example: one input batch (its shape after dim 0 fixes the network input shape).
        backends: names from :data:`ENGINE_BACKENDS`.
        input_name, output_names: network / ONNX tensor names.
        max_batch: largest batch the network, engine profile and ONNX model must accept.
        engine: for ``"tensorrt"``: an :class:`~fx2trt_pipeline.engine.runtime.Engine` or engine path;
            ``None`` builds one from ``qgm`` into a temporary directory.
    """
    from fx2trt_pipeline.network.inputs import InputSpec

    # opt = max: the evaluation batches are full except the last one
    spec = InputSpec.dynamic_batch(input_name, tuple(example.shape[1:]), 1, max_batch, max_batch)
    outs = list(output_names) if output_names is not None else None
    with tempfile.TemporaryDirectory(prefix="fx2trt_accuracy_") as tmp:
        runners: list[Runner] = []
        keep: list[Any] = []  # conversion contexts hold the weights the networks point at, until exit
        for name in backends:
            if name == "network_executor":
                from fx2trt_pipeline.network.network import network_from_graph_module

                _, network, ctx = network_from_graph_module(qgm, [spec], output_names=outs)
                keep.append(ctx)
                runners.append(NetworkExecutorRunner(network, name=name))
            elif name == "onnxruntime":
                from fx2trt_pipeline.validate.onnx_export import export_qdq_onnx

                path = export_qdq_onnx(qgm, (example[:1].cpu(),), Path(tmp) / "model_qdq.onnx",
                                       input_names=[input_name], output_names=outs, dynamic_batch=True)
                runners.append(OnnxRuntimeRunner(path, name=name))
            elif name == "tensorrt":
                if engine is None:
                    from fx2trt_pipeline.engine.engine_builder import build_engine

                    artifact = build_engine(qgm, [spec], Path(tmp) / "model.engine", output_names=outs)
                    engine = artifact.engine_path
                runners.append(TensorRTEngineRunner(engine, name=name))
            else:
                raise ConfigError(f"Unknown engine backend {name!r}; choose from {ENGINE_BACKENDS}.")
        yield runners


def _as_model_fn(runner: Runner, input_name: str) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    return lambda x: runner.run({input_name: x})


def detection_evaluator(dataset: Any, *, max_images: int | None = None, batch_size: int = 50,
                        decode_fn: Any = None) -> Evaluator:
    """A function ``evaluate(model_or_runner) -> COCO metrics`` over ``dataset`` (labels it carries).

    The calibrator search and the mixed-precision search score candidate models with it.

    Example:
        >>> evaluate = detection_evaluator(load_mnist_detection("val"), max_images=50)   # doctest: +SKIP
        >>> evaluate(load_demo_detector())["mAP"]                                       # doctest: +SKIP
    """
    def evaluate(model: Any) -> dict[str, float]:
        return evaluate_detector(model, dataset, decode_fn=decode_fn, batch_size=batch_size,
                                 max_images=max_images)

    return evaluate


def _timed(runner: Runner, score: Callable[[Runner], Mapping[str, float]]) -> BackendRun:
    start = time.perf_counter()
    metrics = score(runner)
    return BackendRun(runner.name, {k: float(v) for k, v in metrics.items()}, time.perf_counter() - start)


def validate_detector(model: nn.Module, qgm: torch.fx.GraphModule, dataset: Any, *,
                      backends: str | Sequence[str] = "auto", engine: Any = None, input_name: str = "images",
                      output_names: Sequence[str] = DETECTOR_OUTPUTS, max_images: int | None = None,
                      batch_size: int = 50, decode_fn: Any = None) -> AccuracyResult:
    """COCO mAP / AP50 of the FP32 model, the simulated INT8 model and the engine backend(s).

    Args:
        model: the float detector.
        qgm: its reference-quantized GraphModule (``ftp.quantize``).
        dataset: ``ds[i] -> (image, image_id)`` with ``ds.coco`` ground truth, e.g.
            ``load_mnist_detection("val")``.
        backends: ``"auto"`` (see :func:`choose_engine_backends`) or names from :data:`ENGINE_BACKENDS`;
            the first one stands for the engine, the others are reported beside it.
        engine: a built engine (or its path) for the ``"tensorrt"`` backend; built from ``qgm`` if ``None``.
        input_name, output_names: network tensor names (outputs in graph-output order).
        max_images: score only the first N images; batch_size: images per call.
        decode_fn: outputs -> boxes/scores/classes (default: CenterNet decode).

    Returns:
        An :class:`AccuracyResult` with runs ``fp32``, ``simulated`` and each backend.

    Raises:
        ConfigError: no engine backend can run, or a requested one cannot.

    Example:
        >>> result = validate_detector(model, qgm, load_mnist_detection("val"))  # doctest: +SKIP
        >>> result.engine_backend, round(result.int8_drop, 4)                    # doctest: +SKIP
        ('network_executor', 0.0012)
    """
    names, reason = choose_engine_backends(backends)
    evaluate = detection_evaluator(dataset, max_images=max_images, batch_size=batch_size, decode_fn=decode_fn)
    torch_runners = [TorchRunner(model, [input_name], output_names, name="fp32"),
                     TorchRunner(qgm, [input_name], output_names, name="simulated")]
    with engine_runners(qgm, dataset[0][0][None].float(), names, input_name=input_name,
                        output_names=output_names, max_batch=batch_size, engine=engine) as engines:
        runs = {r.name: _timed(r, lambda runner: evaluate(_as_model_fn(runner, input_name)))
                for r in (*torch_runners, *engines)}
    count = int(runs["fp32"].metrics.get("num_images", 0))
    return AccuracyResult("detection", "mAP", runs, names[0], reason, count)


def validate_classifier(model: nn.Module, qgm: torch.fx.GraphModule,
                        data: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                        backends: str | Sequence[str] = "auto", engine: Any = None,
                        input_name: str = "images", output_name: str = "logits", max_batch: int | None = None,
                        ks: Sequence[int] = (1, 5)) -> AccuracyResult:
    """Top-k accuracy of the FP32 model, the simulated INT8 model and the engine backend(s).

    Args:
        model, qgm: the float classifier and its reference-quantized GraphModule (one logits output).
        data: re-iterable ``(images, labels)`` batches (a list or a DataLoader; each backend reads it).
        backends, engine, input_name: as in :func:`validate_detector`; output_name: the logits tensor.
        max_batch: largest batch (default: the first batch's size).
        ks: the ``k`` of top-k (capped at the number of classes).

    Raises:
        ConfigError: ``data`` is a one-shot iterator or empty; no engine backend can run.

    Example:
        >>> batches = [(x, y)]                                              # doctest: +SKIP
        >>> print(validate_classifier(model, qgm, batches))                 # doctest: +SKIP
    """
    if iter(data) is data:
        raise ConfigError("validate_classifier needs re-iterable data (a list or a DataLoader), not an "
                          "iterator: every backend reads it once.")
    first = next(iter(data), None)
    if first is None:
        raise ConfigError("validate_classifier got no batches.")
    names, reason = choose_engine_backends(backends)

    def score(runner: Runner) -> dict[str, float]:
        logits, labels = [], []
        for x, y in data:
            out = runner.run({input_name: x.float()})
            value = out[output_name] if output_name in out else next(iter(out.values()))
            logits.append(torch.as_tensor(value).detach().float().cpu())
            labels.append(torch.as_tensor(y).reshape(-1))
        stacked = torch.cat(logits)
        wanted = tuple(k for k in ks if k <= stacked.shape[1]) or (1,)
        return {**topk_accuracy(stacked, torch.cat(labels), wanted), "num_samples": float(stacked.shape[0])}

    torch_runners = [TorchRunner(model, [input_name], [output_name], name="fp32"),
                     TorchRunner(qgm, [input_name], [output_name], name="simulated")]
    with engine_runners(qgm, first[0].float(), names, input_name=input_name, output_names=[output_name],
                        max_batch=max_batch or first[0].shape[0], engine=engine) as engines:
        runs = {r.name: _timed(r, score) for r in (*torch_runners, *engines)}
    return AccuracyResult("classification", "top1", runs, names[0], reason,
                          int(runs["fp32"].metrics["num_samples"]))
