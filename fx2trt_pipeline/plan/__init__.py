"""Plan: what TensorRT will run, judged before any GPU.

```
EnginePlan (fx2trt_pipeline.engine.engine_plan, read from the build log or IEngineInspector JSON)
  -> audit.py   every conv / deconv / linear / matmul the graph quantizes runs INT8 in the plan (gate)
  -> lint.py    Q/DQ placement rules TensorRT documents, checked on the network before the build
```

Modules are imported on use; this package imports nothing.
"""
