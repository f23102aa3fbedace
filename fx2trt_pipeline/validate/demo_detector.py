"""The shipped demo detector as an accuracy fixture: calibrate once, validate with any calibrator.

Used by the accuracy benchmark and the tests: the CenterNet trained on real MNIST digit scenes, its
``calib`` split for calibration and its ``val`` split (COCO annotations) for mAP, decoded by
``fx2trt_pipeline.models.centernet.centernet_decode``.

Example:
    >>> from fx2trt_pipeline.validate.demo_detector import validate_demo_detector
    >>> print(validate_demo_detector("mse", max_images=100))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fx2trt_pipeline.models.centernet import centernet_decode
from fx2trt_pipeline.validate.accuracy import validate_detector
from fx2trt_pipeline.validate.results import Evaluation


@dataclass
class DemoSetup:
    """The shipped demo detector, its calibrated prepared model and the labelled splits."""

    model: nn.Module
    prepared: torch.fx.GraphModule
    val: Any
    calib_batches: list[torch.Tensor] = field(default_factory=list)


def demo_setup(calib_images: int | None = None, batch_size: int = 50, weights: str | Path | None = None) -> DemoSetup:
    """Load the demo detector, prepare it and calibrate ONCE on the ``calib`` split.

    Args:
        calib_images: calibrate on this many ``calib`` scenes (default: all 200).
        batch_size: calibration batch size.
        weights: a checkpoint to load instead of the shipped one.

    Example:
        >>> setup = demo_setup(calib_images=100)                                # doctest: +SKIP
        >>> qgm = ftp.convert(setup.prepared, ftp.QuantConfig(calibrator="mse"))  # doctest: +SKIP
    """
    from fx2trt_pipeline.calib_data import calibration_batches, load_mnist_detection
    from fx2trt_pipeline.models.centernet import load_demo_detector
    from fx2trt_pipeline.quantize.api import calibrate, prepare
    from fx2trt_pipeline.quantize.config import QuantConfig

    model = load_demo_detector(weights)
    calib = load_mnist_detection("calib")
    batches = list(calibration_batches(calib, calib_images, batch_size, show_progress=False))
    prepared = prepare(model, (batches[0][:1],), QuantConfig(show_progress=False))
    calibrate(prepared, batches, show_progress=False)
    return DemoSetup(model, prepared, load_mnist_detection("val"), batches)


def validate_demo_detector(
    calibrator: str = "mse",
    percentile: float = 99.99,
    *,
    max_images: int | None = None,
    backends: str | Sequence[str] = "auto",
    setup: DemoSetup | None = None,
) -> Evaluation:
    """Quantize the shipped demo detector with one calibrator and validate it on the ``val`` split (gated with
    the default :class:`~fx2trt_pipeline.validate.gate.GateSpec`).

    Example:
        >>> print(validate_demo_detector("mse", max_images=100))   # doctest: +SKIP
    """
    from fx2trt_pipeline.quantize.api import convert
    from fx2trt_pipeline.quantize.config import QuantConfig

    setup = setup or demo_setup()
    config = QuantConfig(calibrator=calibrator, percentile=percentile, show_progress=False)
    qgm = convert(setup.prepared, config)
    return validate_detector(
        setup.model, qgm, setup.val, backends=backends, max_images=max_images, decode_fn=centernet_decode
    )
