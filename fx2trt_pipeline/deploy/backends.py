"""Which backends stand for the engine on this machine, and the inputs they are compared on.

::

    tensorrt          the engine file, when a GPU the TensorRT library supports is present (else skipped,
                      with the reason from build.runtime.gpu_unavailable_reason)
    network_executor  the built network definition, executed layer by layer in torch (any machine)
    onnxruntime       the QDQ ONNX file, when it exists and onnxruntime is installed

Every runner is wrapped in a :class:`~fx2trt_pipeline.deploy.evaluation.ChunkedRunner` so no call exceeds
the engine profile's largest batch.

Example:
    >>> side, skipped, why = engine_side_runners(specs, net, Path("model.plan"), None, meta)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Sequence

import torch

from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.deploy.config import RunConfig
from fx2trt_pipeline.deploy.evaluation import ChunkedRunner
from fx2trt_pipeline.deploy.sources import resolve_callable
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.runners import NetworkExecutorRunner, OnnxRuntimeRunner, TensorRTEngineRunner

#: Images compared output by output between backends.
PARITY_BATCH = 16


def max_batch_of(inputs: list[InputSpec]) -> int:
    """The largest batch every input's profile (or static shape) accepts."""
    return min((s.max_shape[0] if s.is_dynamic and s.max_shape else s.shape[0]) for s in inputs)


def engine_side_runners(
    inputs: list[InputSpec],
    network: Any,
    engine_path: Path | None,
    onnx_path: Path | None,
    metadata: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str], str]:
    """The engine-side runners that can run here, the skipped ones with reasons, and the engine reason."""
    from fx2trt_pipeline.engine.runtime import gpu_unavailable_reason

    limit = max_batch_of(inputs)
    runners: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    gpu_reason = gpu_unavailable_reason(metadata) if engine_path is not None else "no engine file"
    if gpu_reason is None and engine_path is not None:
        runners["tensorrt"] = ChunkedRunner(TensorRTEngineRunner(engine_path, name="tensorrt"), limit)
        reason = f"the engine ran on {torch.cuda.get_device_name()}"
    else:
        skipped["tensorrt"] = str(gpu_reason)
        reason = f"the TensorRT engine cannot run here ({gpu_reason})"
    if network is not None:
        runners["network_executor"] = ChunkedRunner(NetworkExecutorRunner(network), limit)
        if "tensorrt" not in runners:
            reason += "; the network executor runs the built network definition instead"
    if onnx_path is not None and onnx_path.is_file():
        try:
            runners["onnxruntime"] = ChunkedRunner(OnnxRuntimeRunner(onnx_path), limit)
        except ImportError:
            skipped["onnxruntime"] = "onnxruntime is not installed"
    return runners, skipped, reason


def decode_fn_for(run_config: RunConfig, model: Any, task: str) -> Any:
    """The detector decoder: ``model.decode`` from the config, CenterNet's built-in one, or an error."""
    if task != "detection":
        return None
    if run_config.model.decode:
        return resolve_callable(run_config.model.decode, "Detector decode function")
    from fx2trt_pipeline.models.centernet import CenterNet

    if isinstance(model, CenterNet):
        return None  # evaluate_detector's default is the CenterNet decoder
    raise ConfigError(
        "Detection mAP needs a decoder for this model's outputs: set [model] decode = "
        "'package.module:function' (outputs -> boxes, scores, classes), or task = 'none'"
    )


def parity_inputs(task: str, dataset: Any, batches: Sequence[Any], fallback: torch.Tensor) -> torch.Tensor:
    """The batch the backends' outputs are compared on: the first evaluation images, else ``fallback``.

    Example:
        >>> parity_inputs("none", None, [], torch.zeros(20, 3)).shape
        torch.Size([16, 3])
    """
    if task == "detection":
        first = torch.stack([dataset[i][0] for i in range(min(PARITY_BATCH, len(dataset)))]).float()
    else:
        first = batches[0][0] if batches else fallback
    return first[:PARITY_BATCH]


__all__ = ["PARITY_BATCH", "decode_fn_for", "engine_side_runners", "max_batch_of", "parity_inputs"]
