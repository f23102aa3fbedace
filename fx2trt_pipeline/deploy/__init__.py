"""Deploy: the ``fx2trt`` command, its artifacts and its report.

::

    fx2trt build  (== scripts/build_engine.py)                               pipeline.py, steps.py
      config.py  TOML/YAML + flags -> RunConfig        sources.py  model, weights, calib_data loaders
      capture -> quantize -> build network -> build engine -> export onnx -> validate -> report
                                   |               |                          |           |
                              graph_svg.py     triton.py              evaluation.py   report.py + charts.py
                                                                       analysis.py    (report_template.py)
      staged into out/.tmp-<name>-XXXX, renamed to out/<name> when every step succeeded

    fx2trt validate RUN_DIR | --onnx/--engine + --data                        validate_cmd.py
      exit 0 pass, 1 gate failed, 2 bad input, 3 backend unavailable

Output directory: ``model.plan`` + ``model.plan.json`` (engine and sidecar), ``model.quant.json``,
``model.qdq.onnx``, ``triton/<model>/config.pbtxt`` + ``triton/<model>/1/model.plan``, ``graph.svg`` /
``graph.dot``, ``report.html`` and the run manifest ``fx2trt_run.json``.
"""
