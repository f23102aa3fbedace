"""Validate: prove the INT8 engine against the simulated model, layer by layer and by task metric.

```
runners.py        one interface: float model | simulated INT8 | network executor | ONNX Runtime | engine
compare.py        cosine, SQNR, max/mean abs error -> ComparisonResult (truthy when it passes)
layer_report.py   layer_parity (simulated vs executor per layer)
quant_error.py    quant_error_table (INT8 error each quantized layer adds, worst layers first)
tie_parity.py     tie-aware parity of engine-side backends, quantize layer by quantize layer (tie_regions.py runs
                  the regions, tie_report.py holds what it found)
metrics.py        COCO mAP via pycocotools (evaluate_detector: the one detection scorer, shardable), top-k
                  accuracy, agreement with FP32
backends.py       the engine-side backends, one selection rule ("auto" / explicit, exit code 3 if unavailable)
runner_set.py     EngineSide -> availability (the one rule) and the runners of an evaluation (library and CLI)
results.py        BackendRow, Evaluation: what an evaluation found (the one vocabulary; JSON round trip)
eval_data.py      EvalData (task, dataset or batches, limits, class output) and Shard (this rank's part under
                  torchrun); split_alternate: choose on one half, report on the other
scoring.py        score_runner (task metric of the class output, the parity batch kept), agreement with FP32,
                  CandidateScorer (what automatic choices rank by)
evaluation.py     THE evaluation: score runners on EvalData (torchrun-sharded), compare, gate -> Evaluation
gate.py           GateSpec + ordered checks (engine ran, output parity, task-metric parity/budget, minimum,
                  agreement / output cosine vs FP32);
                  the only place that judges a row's status and the verdict
accuracy.py       library entry points validate_detector / validate_classifier (-> evaluation.py)
demo_detector.py  the shipped detector as an accuracy fixture (calibrate once, validate any calibrator)
```

The network executor and TensorRT's arithmetic on foreign graphs are ``fx2trt_pipeline.executor``; the QDQ ONNX
exporter is ``fx2trt_pipeline.export``. Calibrator search and mixed precision live in ``fx2trt_pipeline.tune``.
Modules are imported on use; none is needed to quantize.
"""
