"""Map-style datasets for calibration and evaluation.

All of them are plain ``torch.utils.data.Dataset`` objects, so they also work with a
``DataLoader``. Bad input raises :class:`~fx2trt_pipeline.errors.CalibrationError` naming the
file or folder, at construction time where possible so a long calibration never dies halfway.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fx2trt_pipeline.errors import CalibrationError

from .labels import LabelMap
from .preprocess import IMAGE_EXTENSIONS, PreprocessSpec, TransformParams, image_modes, read_image


class ImageFolderDataset(Dataset):
    """Every image file under a folder (recursively, sorted by path), preprocessed by ``spec``.

    Args:
        path: Folder with images (any depth).
        spec: How to turn each image into a network input.
        with_labels: Also return a class index taken from the first-level subfolder name
            (torchvision ``ImageFolder`` layout), for top-1 evaluation: the folder's position among the
            sorted folders until :meth:`use_label_map` maps folders to model outputs
            (:func:`~fx2trt_pipeline.calib_data.labels.map_classes`).

    Raises:
        CalibrationError: the folder is missing or holds no image files.

    Example:
        >>> ds = ImageFolderDataset("calib_images/", PreprocessSpec(size=(224, 224), channels=3))  # doctest: +SKIP
        >>> ds[0].shape  # doctest: +SKIP
        torch.Size([3, 224, 224])
    """

    def __init__(self, path: str | Path, spec: PreprocessSpec, with_labels: bool = False) -> None:
        self.root = Path(path)
        self.spec = spec
        self.with_labels = with_labels
        if not self.root.is_dir():
            raise CalibrationError(f"Image folder not found: {self.root}")
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise CalibrationError(f"Image folder {self.root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
        self.classes = sorted({p.relative_to(self.root).parts[0] for p in self.files if p.parent != self.root})
        if with_labels and (not self.classes or any(p.parent == self.root for p in self.files)):
            raise CalibrationError(
                f"with_labels=True needs every image of {self.root} inside a class subfolder (root/<class>/img)."
            )
        self.label_of = {c: i for i, c in enumerate(self.classes)}
        self.label_source = "position among the sorted class folders"

    @cached_property
    def modes(self) -> dict[str, list[Path]]:
        """PIL mode of each image (``"L"`` greyscale, ``"RGB"``, ``"RGBA"``...) -> its files (headers only)."""
        return image_modes(self.files)

    def use_label_map(self, label_map: LabelMap) -> None:
        """Label each image with ``label_map.index[folder]`` (a model output index) from now on."""
        self.label_of, self.label_source = dict(label_map.index), label_map.how

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        x = self.spec(read_image(self.files[i]))
        if not self.with_labels:
            return x
        return x, self.label_of[self.files[i].relative_to(self.root).parts[0]]


class NumpyDataset(Dataset):
    """Items of a numpy array (or an ``.npy`` / ``.npz`` file) along the first axis.

    Without ``spec`` the items are taken as already preprocessed network inputs (e.g. an
    ``(N, C, H, W)`` float array) and only converted to float32 tensors. With ``spec`` they are
    raw ``HW`` / ``HWC`` images, preprocessed one by one.

    Args:
        array_or_path: An array, or a path to ``.npy`` or ``.npz``.
        spec: Optional preprocessing for raw images.
        key: Array name inside an ``.npz``; may be omitted when it holds one array or ``images``.

    Raises:
        CalibrationError: missing/unreadable file, unknown key or an empty array.

    Example:
        >>> ds = NumpyDataset(np.random.rand(8, 3, 32, 32).astype(np.float32))
        >>> len(ds), ds[0].shape
        (8, torch.Size([3, 32, 32]))
    """

    def __init__(
        self, array_or_path: np.ndarray | str | Path, spec: PreprocessSpec | None = None, key: str | None = None
    ) -> None:
        self.spec = spec
        self.source = "<array>"
        if isinstance(array_or_path, (str, Path)):
            self.source = str(array_or_path)
            self.array = _load_numpy(Path(array_or_path), key)
        else:
            self.array = np.asarray(array_or_path)
        if self.array.ndim == 0 or len(self.array) == 0:
            raise CalibrationError(f"Numpy calibration data {self.source} is empty (shape {self.array.shape}).")

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.array[i]
        if self.spec is not None:
            return self.spec(item)
        return torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))


def _load_numpy(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise CalibrationError(f"Numpy file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"Cannot read numpy file {path}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if key is None:
            key = names[0] if len(names) == 1 else "images" if "images" in names else None
        if key not in names:
            raise CalibrationError(
                f"{path} holds arrays {names}; name the one to use: fx2trt validate --npz-key NAME, "
                "a [calibration] / [evaluation] key = NAME in the config file, or key= in Python"
            )
        return loaded[key]


class CocoDetectionDataset(Dataset):
    """A COCO-format detection set: ``ds[i] -> (image tensor, image id)``.

    Images come from a folder (``images_dir / image["file_name"]``) or, for compact shipped
    sets, from an ``.npz`` file holding ``images`` (``N x H x W[x C]`` uint8) and ``image_ids``.
    :meth:`transform` gives each image's resize/letterbox parameters, so detections in
    network-input pixels can be mapped back (``TransformParams.boxes_to_original``) before
    scoring against :attr:`coco`.

    Args:
        images_dir: Folder with the image files, or an ``.npz`` as described above.
        annotation_json: COCO instances JSON.
        spec: Preprocessing applied to every image.

    Raises:
        CalibrationError: missing/unreadable JSON or images, or an image listed in the JSON
            that is not in the image source.

    Example:
        >>> ds = CocoDetectionDataset("val2017/", "instances_val2017.json",
        ...                           PreprocessSpec(size=(512, 512), mode="letterbox", channels=3))  # doctest: +SKIP
        >>> x, image_id = ds[0]  # doctest: +SKIP
    """

    def __init__(self, images_dir: str | Path, annotation_json: str | Path, spec: PreprocessSpec) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_json = Path(annotation_json)
        self.spec = spec
        self.dataset = _load_json(self.annotation_json)
        self.images: list[dict[str, Any]] = list(self.dataset.get("images", []))
        if not self.images:
            raise CalibrationError(f"COCO annotation file {self.annotation_json} lists no images.")
        self.image_ids = [int(im["id"]) for im in self.images]
        self._array: np.ndarray | None = None
        if self.images_dir.suffix == ".npz":
            self._array = self._load_npz()
        elif not self.images_dir.is_dir():
            raise CalibrationError(f"COCO image folder not found: {self.images_dir}")
        else:
            missing = [im["file_name"] for im in self.images if not (self.images_dir / im["file_name"]).is_file()]
            if missing:
                raise CalibrationError(
                    f"{len(missing)} image(s) listed in {self.annotation_json} are missing from "
                    f"{self.images_dir}, e.g. {missing[:3]}."
                )

    def _load_npz(self) -> np.ndarray:
        if not self.images_dir.is_file():
            raise CalibrationError(f"COCO image archive not found: {self.images_dir}")
        try:
            with np.load(self.images_dir, allow_pickle=False) as z:
                images, ids = z["images"], z["image_ids"].tolist()
        except (OSError, ValueError, KeyError) as exc:
            raise CalibrationError(
                f"Cannot read {self.images_dir}: {exc}. It must be an .npz with 'images' and 'image_ids'."
            ) from exc
        pos = {int(i): k for k, i in enumerate(ids)}
        missing = [i for i in self.image_ids if i not in pos]
        if missing or len(ids) != len(images):
            raise CalibrationError(
                f"{self.images_dir} does not match {self.annotation_json}: {len(missing)} image id(s) "
                f"missing (e.g. {missing[:3]}), {len(images)} images for {len(ids)} ids."
            )
        return images[[pos[i] for i in self.image_ids]]

    def __len__(self) -> int:
        return len(self.images)

    def raw_image(self, i: int) -> np.ndarray:
        """Return image ``i`` as stored (``uint8`` ``HW`` / ``HWC``), before preprocessing."""
        if self._array is not None:
            return self._array[i]
        return read_image(self.images_dir / self.images[i]["file_name"])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.spec(self.raw_image(i)), self.image_ids[i]

    def transform(self, i: int) -> TransformParams:
        """Return the resize/letterbox parameters of image ``i`` (computed from its stored size)."""
        im = self.images[i]
        h, w = int(im["height"]), int(im["width"])
        if self.spec.size is None or (h, w) == self.spec.size:
            return TransformParams(orig_h=h, orig_w=w)
        # Only the geometry matters: run the spec on a blank image of the same size.
        return self.spec.apply(np.zeros((h, w), np.uint8))[1]

    @cached_property
    def coco(self) -> Any:
        """The ground truth as a ``pycocotools.coco.COCO`` object (built once, quietly)."""
        return coco_from_dict(self.dataset)

    @property
    def categories(self) -> list[dict[str, Any]]:
        """The COCO ``categories`` list."""
        return list(self.dataset.get("categories", []))


def coco_from_dict(dataset: Mapping[str, Any]) -> Any:
    """Build a ``pycocotools.coco.COCO`` from an in-memory COCO dict without its prints.

    Example:
        >>> gt = coco_from_dict({"images": [{"id": 1, "height": 8, "width": 8}], "annotations": [],
        ...                      "categories": [{"id": 0, "name": "0"}]})
    """
    from pycocotools.coco import COCO  # the [eval] extra; only COCO ground truth needs it

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dict(dataset)
        coco.createIndex()
    return coco


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CalibrationError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"Cannot read COCO annotation file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CalibrationError(f"COCO annotation file {path} must hold a JSON object, got {type(data).__name__}.")
    return data
