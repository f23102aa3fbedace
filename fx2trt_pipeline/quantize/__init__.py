"""Quantize: capture -> fold BN -> place Q/DQ -> calibrate -> reference-quantized GraphModule.

```
nn.Module --capture--> GraphModule --fold_bn--> --place_qdq--> Placement
   --insert_observers + run_calibration--> TensorStats per scale group
   --calibrators.compute_amax--> amax per group --build_reference--> quantized GraphModule + QuantState
```
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "prepare": "api",
    "calibrate": "api",
    "convert": "api",
    "quantize_model": "api",
    "rebuild_quantized": "api",
    "QuantConfig": "config",
    "LayerOverride": "config",
    "TensorStats": "statistics",
    "compute_amax": "calibrators",
    "all_reduce_stats": "distributed",
    "QuantState": "state",
    "get_quant_state": "state",
    "load_quant_state": "state",
    "save_quant_state": "state",
}


def __getattr__(name: str) -> Any:
    # Lazy so that importing a leaf module (e.g. qdq_ops) does not pull in the whole quantizer.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fx2trt_pipeline.quantize.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fx2trt_pipeline.quantize' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
