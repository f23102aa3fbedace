"""Validate: prove the INT8 engine against the simulated model, layer by layer and by task metric.

```
runners.py        one interface: float model | simulated INT8 | network executor | ONNX Runtime | engine
network_executor  runs the built INetworkDefinition layer by layer in torch (TensorRT semantics)
                  executor_common.py, executor_layers.py, executor_tensor_ops.py,
                  executor_shape_ops.py
compare.py        cosine, SQNR, max/mean abs error -> ComparisonResult (truthy when it passes)
layer_report.py   layer_parity (simulated vs executor per layer)
quant_error.py    quant_error_table (INT8 error each quantized layer adds, worst layers first)
exact_reference   TensorRTArithmetic: torch.ao / PT2E graphs evaluated with TensorRT's integer arithmetic
tie_parity.py     tie-aware parity of engine-side backends, quantize layer by quantize layer (tie_regions.py)
onnx_export.py    QDQ ONNX (QuantizeLinear/DequantizeLinear, per-channel axis) for ORT and TensorRT
metrics.py        COCO mAP via pycocotools (shardable predictions), top-k accuracy, agreement with FP32
backends.py       the engine-side backends, one selection rule ("auto" / explicit, exit code 3 if unavailable)
results.py        BackendRow, AccuracyResult, Evaluation: what an evaluation found
eval_data.py      EvalData (task, dataset or batches, limits) and Shard (this rank's part under torchrun)
evaluation.py     THE evaluation: score runners on EvalData (torchrun-sharded), compare, gate -> Evaluation
gate.py           GateSpec + ordered checks (engine ran, output parity, task-metric parity/budget, minimum)
accuracy.py       library entry points validate_detector / validate_classifier (-> evaluation.py)
demo_detector.py  the shipped detector as an accuracy fixture; centernet_decode
```

Calibrator search and mixed precision live in ``fx2trt_pipeline.tune``, which uses this package.
Modules are imported on use; none is needed to quantize.
"""
