"""Deploy: the ``fx2trt`` command, its artifacts and its report.

::

    fx2trt build  (== scripts/build_engine.py)                               pipeline.py, steps.py
      config.py  TOML/YAML + flags -> RunConfig        sources.py  model, weights, calib_data loaders
      capture -> quantize -> build network -> build engine -> export onnx -> validate -> report
                                   |               |                          |           |
                              graph_svg.py     triton.py            evaluate_run.py   report.py + charts.py
                                                                 (-> validate.evaluation) (report_template.py)
                                                                       analysis.py
      cli.py runs the commands, cli_args.py holds their flags;  plan_cmd.py is ``fx2trt plan``
      preprocess_defaults.py: torchvision weights' transforms <- [preprocess] <- --input-size/--resize/...
      torchvision_weights.py: which torchvision weights entry a weights file is (name, sha256, tensors)
      input_checks.py: the data fits the model before capture (the flag that fixes it when not)
      tune_step.py: --calibrator auto and --mixed-precision, chosen on half the images, reported on the rest
      plan_step.py + plan_view.py: placement by plan cost, lint, the plan's audit, INT8 vs FP16, its report view
      trt_log.py: TensorRT's warnings on the console, every message in tensorrt.log
      staged into out/.tmp-<name>-<pid>-XXXX, renamed to out/<name> when every step ran (SIGINT/SIGTERM:
      removed; a killed run's stage is removed by the next run)

    fx2trt validate RUN_DIR | --onnx/--engine + --data                        validate_cmd.py
      torchrun.py: one process group, one GPU per rank, the data sharded
      build and validate exit with errors.ExitCode: 0 pass, 1 gate failed (build: artifacts written),
      2 bad input (config, model name, data, preprocessing), 3 backend unavailable

Output directory: ``model.plan`` + ``model.plan.json`` (engine and sidecar), ``model.quant.json``,
``model.qdq.onnx``, ``triton/<model>/config.pbtxt`` + ``triton/<model>/1/model.plan``, ``graph.svg`` /
``graph.dot``, ``model.plan.layers.json`` (TensorRT's plan), ``tensorrt.log``, ``report.html`` and the run manifest
``fx2trt_run.json``.
"""
