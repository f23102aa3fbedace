"""Calibration and evaluation data: preprocessing, datasets and deterministic batches.

Installed as ``fx2trt_pipeline.calib_data``::

    PreprocessSpec ──> ImageFolderDataset / NumpyDataset / CocoDetectionDataset
                                  │
                                  └──> calibration_batches(ds, N, batch_size, seed)  ->  float32 batches

``load_mnist_detection(split)`` gives the shipped real-label detection set (MNIST digit scenes).
``map_classes`` maps class folders (output indices, WordNet ids, a labels file) to model outputs.
"""

from .datasets import CocoDetectionDataset, ImageFolderDataset, NumpyDataset
from .labels import LabelMap, imagenet_wnids, map_classes
from .mnist_detection import MNIST_DET_DIR, MNIST_DET_SPEC, MNIST_DET_SPLITS, load_mnist_detection
from .preprocess import PreprocessSpec, TransformParams, read_image
from .sampling import calibration_batches

__all__ = [
    "MNIST_DET_DIR",
    "MNIST_DET_SPEC",
    "MNIST_DET_SPLITS",
    "CocoDetectionDataset",
    "ImageFolderDataset",
    "LabelMap",
    "NumpyDataset",
    "PreprocessSpec",
    "TransformParams",
    "calibration_batches",
    "imagenet_wnids",
    "map_classes",
    "load_mnist_detection",
    "read_image",
]
