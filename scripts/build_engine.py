#!/usr/bin/env python
"""Quantize a model, build its TensorRT engine, validate it and write every artifact: ``fx2trt build``.

    python scripts/build_engine.py                      # the bundled demo detector -> out/demo
    python scripts/build_engine.py --output out/demo --max-eval-images 100
    python scripts/build_engine.py --model resnet18 --weights r18.pth --config r18.toml --output out/r18

See ``fx2trt build --help`` for every option and ``fx2trt_pipeline/deploy/config.py`` for the config file.
"""

from __future__ import annotations

import sys

from fx2trt_pipeline.deploy.cli import build_main

if __name__ == "__main__":
    sys.exit(build_main())
