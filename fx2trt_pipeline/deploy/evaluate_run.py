"""The validate step of ``fx2trt build`` and ``fx2trt validate RUN_DIR``: one function for both.

::

    RunArtifacts (inputs, network, engine file, ONNX file, sidecar) -> Availability -> select_backends
    RunConfig [evaluation] + dataset -> EvalData (task, decoder, limits, torchrun shard)
    fp32 + simulated + engine side -> validate.evaluation.evaluate_backends -> Evaluation (gated)

Example:
    >>> ev = evaluate_run(RunModels(model, qgm), artifacts, EvalRequest(cfg, dataset))   # doctest: +SKIP
    >>> ev.passed, ev.gate_lines                                                        # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline.deploy.config import RunConfig
from fx2trt_pipeline.deploy.sources import resolve_callable, task_of
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.validate.backends import Availability, ChunkedRunner, select_backends
from fx2trt_pipeline.validate.evaluation import EvalData, Shard, evaluate_backends
from fx2trt_pipeline.validate.results import Evaluation
from fx2trt_pipeline.validate.runners import NetworkExecutorRunner, OnnxRuntimeRunner, TensorRTEngineRunner, TorchRunner


@dataclass
class RunArtifacts:
    """What a build produced that an engine-side backend can run."""

    inputs: list[InputSpec]
    output_names: list[str]
    network: Any = None
    engine_path: Path | None = None
    onnx_path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def max_batch(self) -> int:
        """The largest batch every input's profile (or static shape) accepts."""
        return min((s.max_shape[0] if s.is_dynamic and s.max_shape else s.shape[0]) for s in self.inputs)


@dataclass
class RunModels:
    """The float model and its simulated INT8 GraphModule."""

    model: torch.nn.Module
    qgm: torch.fx.GraphModule


@dataclass
class EvalRequest:
    """The run's configuration, its evaluation dataset (``None``: none given) and the backend asked for."""

    config: RunConfig
    dataset: Any = None
    backend: str = "auto"
    fallback: torch.Tensor | None = None  # inputs to compare outputs on when there is no evaluation data
    progress: Callable[[str], None] | None = None


def availability(art: RunArtifacts) -> Availability:
    """Why each engine-side backend cannot run on these artifacts here (``None`` where it can)."""
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    engine = gpu_unavailable_reason(art.metadata) if art.engine_path is not None else "no engine file"
    network = None if art.network is not None else "the network was not converted"
    if art.onnx_path is None or not art.onnx_path.is_file():
        onnx = "no QDQ ONNX file (built with --no-onnx?)"
    else:
        onnx = None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"
    return Availability({"tensorrt": engine, "network_executor": network, "onnxruntime": onnx})


def _engine_side_runner(name: str, art: RunArtifacts) -> ChunkedRunner:
    if name == "tensorrt":
        runner: Any = TensorRTEngineRunner(art.engine_path, name=name)
    elif name == "network_executor":
        runner = NetworkExecutorRunner(art.network, name=name)
    else:
        runner = OnnxRuntimeRunner(art.onnx_path, name=name)
    return ChunkedRunner.for_inputs(runner, art.inputs)  # a static batch: the last chunk is padded


def decode_fn_for(config: RunConfig, model: Any, task: str) -> Callable[[Any], Any] | None:
    """The detector decoder: ``[model] decode`` from the config, CenterNet's own, or an error."""
    if task != "detection":
        return None
    if config.model.decode:
        return resolve_callable(config.model.decode, "Detector decode function")
    from fx2trt_pipeline.models.centernet import CenterNet

    if isinstance(model, CenterNet):
        from fx2trt_pipeline.models.centernet import centernet_decode

        return centernet_decode
    raise ConfigError(
        "Detection mAP needs a decoder for this model's outputs: set [model] decode = "
        "'package.module:function' (outputs -> boxes, scores, classes), or task = 'none'"
    )


def eval_data_for(request: EvalRequest, model: Any, input_name: str) -> EvalData:
    """The :class:`EvalData` of a run: its evaluation set (sharded under torchrun) or the fallback batch."""
    spec = request.config.evaluation
    if spec is None or request.dataset is None:
        if request.fallback is None:
            raise ConfigError("No evaluation data and no inputs to compare outputs on.")
        return EvalData("none", batches=[(request.fallback, None)], input_name=input_name)
    task = task_of(spec, request.dataset)
    return EvalData(
        task,
        dataset=request.dataset,
        input_name=input_name,
        decode_fn=decode_fn_for(request.config, model, task),
        max_images=spec.max_images,
        batch_size=int(spec.batch_size),
        shard=Shard.current(),
    )


def evaluate_run(models: RunModels, art: RunArtifacts, request: EvalRequest) -> Evaluation:
    """Score FP32, simulated INT8 and every engine-side backend asked for; the gated :class:`Evaluation`.

    Raises:
        BackendUnavailableError: the requested backend cannot run here.
        ConfigError: bad evaluation settings (e.g. detection without a decoder).
    """
    plan = select_backends(availability(art), request.backend)
    in_name = art.inputs[0].name
    runners: dict[str, Any] = {
        "fp32": TorchRunner(models.model, [in_name], art.output_names, name="fp32"),
        "simulated": TorchRunner(models.qgm, [in_name], art.output_names, name="simulated"),
        **{name: _engine_side_runner(name, art) for name in plan.names},
    }
    data = eval_data_for(request, models.model, in_name)
    if request.progress is not None:
        skipped = "".join(f"; {key} skipped: {why}" for key, why in plan.skipped.items())
        request.progress(f"task: {data.task}; engine side: {', '.join(plan.names) or 'none'}{skipped}")
    evaluation = evaluate_backends(runners, data, plan, request.config.gate, request.progress)
    for warning in evaluation.warnings:
        if request.progress is not None:
            request.progress(f"WARNING {warning}")
    return evaluation


__all__ = ["EvalRequest", "RunArtifacts", "RunModels", "availability", "decode_fn_for", "eval_data_for", "evaluate_run"]
