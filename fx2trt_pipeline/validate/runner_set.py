"""The runners of an evaluation, in one place: which engine-side backends can run here and their runners.

::

    EngineSide (inputs, network, engine file, QDQ ONNX file, engine sidecar; why an artifact was not made)
        -> availability(side)              THE rule: a reason per backend that cannot run here (None: it can)
        -> backends.select_backends(...)   "auto" / explicit names -> BackendPlan (exit code 3 if unavailable)
        -> runner_set(models, side, plan)  fp32 + simulated + every planned backend, chunked to the max batch

Every caller fills an :class:`EngineSide` and reads availability and runners from here: the library
(``validate.accuracy`` makes the artifacts of a quantized GraphModule), ``fx2trt build`` and ``fx2trt validate
RUN_DIR`` (``deploy.evaluate_run``, a run's artifacts) and ``fx2trt validate --onnx/--engine`` (a lone file).

Example:
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> side = EngineSide([InputSpec("x", (4, 3))], ["y"], not_made={"network_executor": "not requested"})
    >>> available = availability(side)
    >>> available.reason("network_executor"), available.reason("onnxruntime")
    ('not requested', 'no QDQ ONNX file (built with --no-onnx?)')
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.validate.backends import ENGINE_BACKENDS, Availability, BackendPlan, ChunkedRunner, select_backends
from fx2trt_pipeline.validate.runners import (
    NetworkExecutorRunner,
    OnnxRuntimeRunner,
    Runner,
    TensorRTEngineRunner,
    TorchRunner,
)

#: Items per call of a backend whose batch limit nothing states (a lone ONNX file with a dynamic batch).
DEFAULT_MAX_BATCH = 64
#: Why ONNX Runtime cannot run without the package.
NO_ONNXRUNTIME = "onnxruntime is not installed (pip install 'fx2trt-pipeline[onnx]')"


@dataclass
class RunModels:
    """The float model and its simulated INT8 GraphModule: the two reference rows."""

    model: torch.nn.Module
    qgm: torch.nn.Module


@dataclass
class EngineSide:
    """What the engine-side backends run: the artifacts of one model, or why one was not made.

    Attributes:
        inputs: the network inputs (their profiles bound every call's batch).
        output_names: network / engine / ONNX output names, in graph-output order (``None``: the runners' own).
        network: the ``INetworkDefinition`` the engine is built from (the network executor runs it).
        engine: a serialized engine file, or a loaded :class:`~fx2trt_pipeline.engine.runtime.Engine`.
        onnx_path: the exported QDQ ONNX file.
        metadata: the engine sidecar (``model.plan.json``): which GPUs the engine runs on.
        not_made: backend -> why its artifact was deliberately not made (e.g. ``"not requested"``).
        max_batch: largest batch per call when no input profile states it (a lone ONNX file).
        keep_alive: objects the artifacts need while they run (the conversion context owns the network's weights).
    """

    inputs: list[InputSpec]
    output_names: list[str] | None = None
    network: Any = None
    engine: Any = None
    onnx_path: Path | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    not_made: dict[str, str] = field(default_factory=dict)
    max_batch: int | None = None
    keep_alive: list[Any] = field(default_factory=list)

    @property
    def batch_limit(self) -> int:
        """The largest batch every input's profile (or static shape) accepts."""
        if self.max_batch is not None:
            return int(self.max_batch)
        if not self.inputs:
            return DEFAULT_MAX_BATCH
        return min((s.max_shape[0] if s.is_dynamic and s.max_shape else s.shape[0]) for s in self.inputs)

    @property
    def input_name(self) -> str:
        """The name of the (single) network input the evaluation feeds.

        Raises:
            ConfigError: the side has no input specs (ask its runner instead).
        """
        if not self.inputs:
            raise ConfigError("the engine side names no input; give its InputSpec")
        return self.inputs[0].name


def _onnx_reason(side: EngineSide) -> str | None:
    if side.onnx_path is None or not Path(side.onnx_path).is_file():
        return side.not_made.get("onnxruntime", "no QDQ ONNX file (built with --no-onnx?)")
    return None if importlib.util.find_spec("onnxruntime") else NO_ONNXRUNTIME


def _engine_reason(side: EngineSide) -> str | None:
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    if side.engine is None:
        return side.not_made.get("tensorrt", "no engine file")
    if not isinstance(side.engine, (str, Path)):
        return None  # a loaded Engine runs here by construction
    return gpu_unavailable_reason(side.metadata or None)


def availability(side: EngineSide) -> Availability:
    """Why each engine-side backend cannot run on ``side`` here (``None`` where it can): the one rule.

    * ``tensorrt``: an engine file and a GPU it targets (the sidecar's compatibility list).
    * ``network_executor``: a converted network definition.
    * ``onnxruntime``: a QDQ ONNX file and the ``onnxruntime`` package.
    """
    network = side.not_made.get("network_executor", "the network was not converted") if side.network is None else None
    return Availability(
        {"tensorrt": _engine_reason(side), "network_executor": network, "onnxruntime": _onnx_reason(side)}
    )


def engine_side_runner(name: str, side: EngineSide) -> ChunkedRunner:
    """The runner of one engine-side backend over ``side`` (chunked to :attr:`EngineSide.batch_limit`).

    Raises:
        ConfigError: ``side`` has no artifact for ``name`` (check :func:`availability` first).
    """
    if name == "tensorrt" and side.engine is not None:
        runner: Runner = TensorRTEngineRunner(side.engine, name=name)
    elif name == "network_executor" and side.network is not None:
        runner = NetworkExecutorRunner(side.network, name=name)
    elif name == "onnxruntime" and side.onnx_path is not None:
        runner = OnnxRuntimeRunner(side.onnx_path, name=name)
    else:
        raise ConfigError(f"no artifact for the {name!r} backend: {availability(side).reason(name)}")
    if side.inputs and side.max_batch is None:
        return ChunkedRunner.for_inputs(runner, side.inputs)  # a static batch is padded, a profile's max is kept
    return ChunkedRunner(runner, side.batch_limit)


def runner_set(models: RunModels | None, side: EngineSide, plan: BackendPlan) -> dict[str, Runner]:
    """``fp32`` and ``simulated`` (when ``models`` is given) plus one runner per backend of ``plan``, by key.

    Example:
        >>> runners = runner_set(RunModels(model, qgm), side, select_backends(availability(side)))  # doctest: +SKIP
    """
    runners: dict[str, Runner] = {}
    if models is not None:
        names = list(side.output_names) if side.output_names is not None else None
        runners["fp32"] = TorchRunner(models.model, [side.input_name], names, name="fp32")
        runners["simulated"] = TorchRunner(models.qgm, [side.input_name], names, name="simulated")
    runners.update({name: engine_side_runner(name, side) for name in plan.names})
    return runners


def check_backend_names(requested: str | Sequence[str]) -> None:
    """Refuse unknown backend names before anything is built (the rule of :func:`~.backends.select_backends`).

    Raises:
        ConfigError: an unknown name.
    """
    select_backends(Availability({name: None for name in ENGINE_BACKENDS}), requested)


__all__ = [
    "DEFAULT_MAX_BATCH",
    "EngineSide",
    "RunModels",
    "availability",
    "check_backend_names",
    "engine_side_runner",
    "runner_set",
]
