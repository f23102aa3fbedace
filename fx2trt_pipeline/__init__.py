"""fx2trt-pipeline: PyTorch -> torch.fx INT8 quantization -> strongly typed TensorRT engine, with proof.

Example:
    >>> import torch
    >>> import fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    ...                             torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> tuple(qgm(x).shape)
    (2, 10)

The stages, in pipeline order, are the subpackages ``capture`` -> ``quantize`` -> ``export`` -> ``network``
(+ ``converters``) -> ``executor`` -> ``engine`` -> ``plan`` -> ``validate`` -> ``tune`` -> ``deploy`` (CLI). Each
public name below is importable from here; none of them is called like a subpackage or module, so
``fx2trt_pipeline.quantize`` is always the quantize stage's package and ``fx2trt_pipeline.quantize.api`` its
module (tests/test_public_api.py checks every module this way).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fx2trt_pipeline import errors
from fx2trt_pipeline.quantize.api import calibrate, convert, prepare, quantize_model, rebuild_quantized
from fx2trt_pipeline.quantize.config import LayerOverride, QuantConfig
from fx2trt_pipeline.quantize.state import QuantState, get_quant_state, load_quant_state, save_quant_state

if TYPE_CHECKING:  # the same names as _LAZY, so IDEs and type checkers see them
    from fx2trt_pipeline.converters import supported_ops
    from fx2trt_pipeline.engine.artifact import EngineArtifact
    from fx2trt_pipeline.engine.engine_builder import build_engine
    from fx2trt_pipeline.engine.options import BuildOptions
    from fx2trt_pipeline.engine.runtime import Engine
    from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic
    from fx2trt_pipeline.executor.network_executor import NetworkExecutor
    from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
    from fx2trt_pipeline.network.inputs import InputSpec
    from fx2trt_pipeline.network.network import find_unsupported, network_from_graph_module
    from fx2trt_pipeline.quantize.distributed_calibration import calibrate_distributed, shard_for_rank
    from fx2trt_pipeline.validate.compare import ComparisonResult, Tolerance, compare_outputs
    from fx2trt_pipeline.validate.layer_report import layer_parity
    from fx2trt_pipeline.validate.quant_error import quant_error_table

__version__ = "0.1.0"

# Loaded on first use so `import fx2trt_pipeline` stays fast and works on machines without TensorRT or
# ONNX. Keep this table and the TYPE_CHECKING block above in step (tests/test_public_api.py checks it).
_LAZY = {
    "InputSpec": "fx2trt_pipeline.network.inputs",
    "network_from_graph_module": "fx2trt_pipeline.network.network",
    "find_unsupported": "fx2trt_pipeline.network.network",
    "supported_ops": "fx2trt_pipeline.converters",
    "build_engine": "fx2trt_pipeline.engine.engine_builder",
    "BuildOptions": "fx2trt_pipeline.engine.options",
    "EngineArtifact": "fx2trt_pipeline.engine.artifact",
    "Engine": "fx2trt_pipeline.engine.runtime",
    "calibrate_distributed": "fx2trt_pipeline.quantize.distributed_calibration",
    "shard_for_rank": "fx2trt_pipeline.quantize.distributed_calibration",
    "NetworkExecutor": "fx2trt_pipeline.executor.network_executor",
    "compare_outputs": "fx2trt_pipeline.validate.compare",
    "ComparisonResult": "fx2trt_pipeline.validate.compare",
    "Tolerance": "fx2trt_pipeline.validate.compare",
    "layer_parity": "fx2trt_pipeline.validate.layer_report",
    "TensorRTArithmetic": "fx2trt_pipeline.executor.exact_reference",
    "quant_error_table": "fx2trt_pipeline.validate.quant_error",
    "export_qdq_onnx": "fx2trt_pipeline.export.onnx_export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'fx2trt_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [  # a literal list, so linters and IDEs read it; tests/test_public_api.py keeps it in step
    "BuildOptions",
    "ComparisonResult",
    "Engine",
    "EngineArtifact",
    "InputSpec",
    "LayerOverride",
    "NetworkExecutor",
    "QuantConfig",
    "QuantState",
    "TensorRTArithmetic",
    "Tolerance",
    "build_engine",
    "calibrate",
    "calibrate_distributed",
    "compare_outputs",
    "convert",
    "errors",
    "export_qdq_onnx",
    "find_unsupported",
    "get_quant_state",
    "layer_parity",
    "load_quant_state",
    "network_from_graph_module",
    "prepare",
    "quant_error_table",
    "quantize_model",
    "rebuild_quantized",
    "save_quant_state",
    "shard_for_rank",
    "supported_ops",
]
