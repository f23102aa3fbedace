"""Reference models for tests, benchmarks and accuracy gates.

* :func:`load_demo_detector` -- small CenterNet trained here on real MNIST digit scenes
  (``fx2trt_pipeline.calib_data.load_mnist_detection``); real labels, so mAP means something.
* :func:`centernet_resnet18` -- full-size CenterNet on torchvision ResNet-18, random weights
  (converter / quantizer coverage).
* :func:`decode` -- CenterNet outputs to boxes, scores, classes; :func:`centernet_decode` the demo detector's.
"""

from .centernet import (
    CENTERNET_STRIDE,
    DEMO_CONFIG,
    DEMO_WEIGHTS,
    OUTPUT_NAMES,
    BasicBlock,
    CenterNet,
    DemoDetectorConfig,
    centernet_decode,
    centernet_resnet18,
    decode,
    demo_centernet,
    load_demo_detector,
    small_resnet,
)

__all__ = [
    "DEMO_CONFIG",
    "DEMO_WEIGHTS",
    "DemoDetectorConfig",
    "OUTPUT_NAMES",
    "BasicBlock",
    "CENTERNET_STRIDE",
    "CenterNet",
    "centernet_decode",
    "centernet_resnet18",
    "decode",
    "demo_centernet",
    "load_demo_detector",
    "small_resnet",
]
