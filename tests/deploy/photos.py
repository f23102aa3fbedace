"""Real photos (scikit-image's sample images) as JPEG class folders, for ``fx2trt build`` on user data.

ImageNet classes that torchvision's MobileNetV2 (real weights) predicts confidently on these photos and on
the crops below (checked by ``tests/deploy/test_user_photos.py`` with the FP32 model itself):

    chelsea  -> 285 Egyptian cat (n02124075)     coffee -> 967 espresso (n07920052)
    camera   -> 872 tripod (n04485082)           (the cameraman photo: a camera on a tripod)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: photo -> (ImageNet class index, WordNet id)
EVAL_CLASSES = {"chelsea": (285, "n02124075"), "coffee": (967, "n07920052"), "camera": (872, "n04485082")}
#: Photos of none of those classes: calibration data.
CALIB_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "coins", "colorwheel")
#: Crops as fractions of the photo (top, left, bottom, right), plus a mirrored copy of the full photo.
CROPS = ((0.0, 0.0, 1.0, 1.0), (0.05, 0.1, 0.95, 0.9), (0.0, 0.0, 0.9, 0.9))


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3])


def _crops(img: np.ndarray, count: int) -> list[np.ndarray]:
    h, w = img.shape[:2]
    out = [img[int(t * h) : int(b * h), int(left * w) : int(r * w)] for t, left, b, r in CROPS]
    out.append(img[:, ::-1])
    return out[:count]


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path, quality=92)


def eval_folders(root: Path, per_class: int = 2, by: str = "index") -> Path:
    """``root/<class index or WordNet id>/<photo>_<i>.jpg`` for the :data:`EVAL_CLASSES`."""
    for name, (index, wnid) in EVAL_CLASSES.items():
        for i, crop in enumerate(_crops(_photo(name), per_class)):
            _save(crop, root / (str(index) if by == "index" else wnid) / f"{name}_{i}.jpg")
    return root


def calib_folder(root: Path, count: int = 4) -> Path:
    """``root/<photo>.jpg`` for the first ``count`` :data:`CALIB_PHOTOS` (no labels)."""
    for name in CALIB_PHOTOS[:count]:
        _save(_photo(name), root / f"{name}.jpg")
    return root


def random_class_folders(
    root: Path, rng: np.random.Generator, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (20, 24)
) -> Path:
    """``root/class<c>/<i>.png`` of random RGB pixels (no photo content: for flows, not accuracy), drawn from
    ``rng`` so that a caller keeps its random stream."""
    from PIL import Image

    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root
