"""Plan: what TensorRT will run, judged before any GPU.

```
EnginePlan (fx2trt_pipeline.engine.engine_plan, read from the build log or IEngineInspector JSON)
  -> audit.py             every conv / deconv / linear / matmul the network quantizes runs INT8 in the plan (gate)
  -> lint.py              Q/DQ placement rules TensorRT documents, checked on the network before the build
     network_view.py      the network indexed once (producers, consumers, Q/DQ scales), shared by both
  -> cost.py, gpus.py     roofline estimate per engine layer on datasheet GPUs; per-node cost by dataflow
  -> cost_placement.py    per-layer INT8-or-float choice from two plans
     placement_search.py  candidates rebuilt and judged on their own plans
  -> onnx_plan.py         the plan of a QDQ ONNX through TensorRT's own ONNX parser, compared with ours
```

Modules are imported on use; this package imports nothing.
"""
