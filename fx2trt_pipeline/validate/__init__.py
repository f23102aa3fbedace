"""Validate: prove the INT8 engine against the simulated model, layer by layer and by task metric.

```
runners.py        one interface: float model | simulated INT8 | network executor | ONNX Runtime | engine
network_executor  runs the built INetworkDefinition layer by layer in torch (TensorRT semantics)
                  executor_common.py, executor_layers.py, executor_tensor_ops.py
compare.py        cosine, SQNR, max/mean abs error -> ComparisonResult (truthy when it passes)
layer_report.py   layer_parity (simulated vs executor per layer), quant_error_table (worst layers first)
onnx_export.py    QDQ ONNX (QuantizeLinear/DequantizeLinear, per-channel axis) for ORT and TensorRT
metrics.py        COCO mAP via pycocotools, top-k accuracy
accuracy.py       FP32 / simulated / engine backend on real labels -> AccuracyResult
demo_detector.py  the shipped detector as an accuracy fixture (calibrate once, any calibrator)
gate.py           CI parity gate: |engine - simulated| and FP32 - INT8 budget -> exit code
```

Calibrator search and mixed precision live in ``fx2trt_pipeline.tune``, which uses this package.
Modules are imported on use; none is needed to quantize.
"""
