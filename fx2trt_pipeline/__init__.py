"""fx2trt-pipeline: PyTorch -> torch.fx INT8 quantization -> strongly typed TensorRT engine, with proof.

Example:
    >>> import torch, torchvision
    >>> import fx2trt_pipeline as ftp
    >>> model = torchvision.models.resnet18().eval()
    >>> x = torch.randn(2, 3, 64, 64)
    >>> qgm = ftp.quantize(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> tuple(qgm(x).shape)
    (2, 1000)
"""

from __future__ import annotations

import importlib
from typing import Any

from fx2trt_pipeline import errors

# Imported eagerly: the functions ``quantize`` and ``convert`` share their names with subpackages, and
# a function shadows a subpackage only when bound after that subpackage was imported (importing a
# submodule later does not rebind an already imported package).
import fx2trt_pipeline.convert  # noqa: F401  (must precede the binding of the function ``convert``)
from fx2trt_pipeline.quantize.api import calibrate, convert, prepare, quantize, rebuild_quantized
from fx2trt_pipeline.quantize.config import LayerOverride, QuantConfig
from fx2trt_pipeline.quantize.state import QuantState, get_quant_state, load_quant_state, save_quant_state

__version__ = "0.1.0"

# The other entry points load on first use so `import fx2trt_pipeline` stays fast and works on machines without
# TensorRT or ONNX.
_LAZY = {
    "InputSpec": "fx2trt_pipeline.convert.inputs",
    "build_engine": "fx2trt_pipeline.build.engine_builder",
    "BuildOptions": "fx2trt_pipeline.build.options",
    "EngineArtifact": "fx2trt_pipeline.build.artifact",
    "Engine": "fx2trt_pipeline.build.runtime",
    "network_from_graph_module": "fx2trt_pipeline.convert.network",
    "find_unsupported": "fx2trt_pipeline.convert.network",
    "supported_ops": "fx2trt_pipeline.converters",
    "compare_outputs": "fx2trt_pipeline.validate.compare",
    "layer_parity": "fx2trt_pipeline.validate.layer_report",
    "quant_error_table": "fx2trt_pipeline.validate.layer_report",
    "calibrate_distributed": "fx2trt_pipeline.quantize.distributed_calibration",
    "shard_for_rank": "fx2trt_pipeline.quantize.distributed_calibration",
    "run_build": "fx2trt_pipeline.deploy.pipeline",
    "NetworkExecutor": "fx2trt_pipeline.validate.network_executor",
    "export_qdq_onnx": "fx2trt_pipeline.validate.onnx_export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fx2trt_pipeline' has no attribute {name!r}")


__all__ = ["LayerOverride", "QuantConfig", "QuantState", "calibrate", "convert", "errors", "get_quant_state",
           "load_quant_state", "prepare", "quantize", "rebuild_quantized", "save_quant_state", *_LAZY]
