"""Loaders (image folder, numpy, COCO) and calibration_batches, including every error path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fx2trt_pipeline.calib_data import (
    CocoDetectionDataset,
    ImageFolderDataset,
    NumpyDataset,
    PreprocessSpec,
    calibration_batches,
)
from fx2trt_pipeline.errors import CalibrationError

SPEC = PreprocessSpec(size=(16, 16), channels=3)


def _write_png(path: Path, value: int, shape: tuple[int, ...] = (8, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_image_folder_sorted_recursive_with_labels(tmp_path: Path) -> None:
    _write_png(tmp_path / "dog" / "b.png", 200)
    _write_png(tmp_path / "cat" / "a.png", 100, (8, 12, 3))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, SPEC, with_labels=True)
    assert len(ds) == 2 and ds.classes == ["cat", "dog"]
    x, label = ds[1]
    assert x.shape == (3, 16, 16) and label == 1
    torch.testing.assert_close(x, torch.full((3, 16, 16), 200 / 255))


def test_image_folder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not found: .*missing"):
        ImageFolderDataset(tmp_path / "missing", SPEC)
    with pytest.raises(CalibrationError, match="holds no image files"):
        ImageFolderDataset(tmp_path, SPEC)
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    ds = ImageFolderDataset(tmp_path, SPEC)
    with pytest.raises(CalibrationError, match="broken.png"):
        ds[0]
    with pytest.raises(CalibrationError, match="class subfolder"):
        ImageFolderDataset(tmp_path, SPEC, with_labels=True)


def test_numpy_dataset_array_npy_npz(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    ds = NumpyDataset(arr)
    assert len(ds) == 2 and ds[1].dtype == torch.float32
    torch.testing.assert_close(ds[1], torch.from_numpy(arr[1]).float())
    np.save(tmp_path / "a.npy", arr)
    assert len(NumpyDataset(tmp_path / "a.npy")) == 2
    np.savez(tmp_path / "b.npz", images=np.zeros((5, 8, 8), np.uint8), labels=np.arange(5))
    raw = NumpyDataset(tmp_path / "b.npz", spec=SPEC)  # picks "images"; raw images get preprocessed
    assert len(raw) == 5 and raw[0].shape == (3, 16, 16)
    assert len(NumpyDataset(tmp_path / "b.npz", key="labels")) == 5


def test_numpy_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not found: .*nope.npz"):
        NumpyDataset(tmp_path / "nope.npz")
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(CalibrationError, match=r"\['a', 'b'\]; name the one to use: fx2trt validate --npz-key NAME"):
        NumpyDataset(tmp_path / "two.npz")
    with pytest.raises(CalibrationError, match="empty"):
        NumpyDataset(np.zeros((0, 3)))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(CalibrationError, match="bad.npy"):
        NumpyDataset(tmp_path / "bad.npy")


def _tiny_coco(tmp_path: Path) -> Path:
    _write_png(tmp_path / "imgs" / "a.png", 255, (50, 100))
    _write_png(tmp_path / "imgs" / "b.png", 0, (40, 40))
    coco = {
        "images": [
            {"id": 3, "file_name": "a.png", "height": 50, "width": 100},
            {"id": 9, "file_name": "b.png", "height": 40, "width": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 1, "bbox": [10, 5, 50, 40], "area": 2000, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_dataset_letterbox_transform(tmp_path: Path) -> None:
    ann = _tiny_coco(tmp_path)
    ds = CocoDetectionDataset(tmp_path / "imgs", ann, PreprocessSpec(size=(64, 64), mode="letterbox"))
    x, image_id = ds[0]
    assert x.shape == (1, 64, 64) and image_id == 3 and ds.image_ids == [3, 9]
    t = ds.transform(0)
    assert (t.scale_x, t.pad_y) == (0.64, 16.0)
    assert ds.transform(1).scale_x == 1.6
    torch.testing.assert_close(
        t.boxes_to_original(torch.tensor([[6.4, 19.2, 38.4, 44.8]])), torch.tensor([[10.0, 5.0, 60.0, 45.0]])
    )
    assert ds.coco.getAnnIds(imgIds=[3]) == [1]


def test_coco_dataset_errors(tmp_path: Path) -> None:
    ann = _tiny_coco(tmp_path)
    spec = PreprocessSpec()
    with pytest.raises(CalibrationError, match="not found: .*nope.json"):
        CocoDetectionDataset(tmp_path / "imgs", tmp_path / "nope.json", spec)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="bad.json"):
        CocoDetectionDataset(tmp_path / "imgs", tmp_path / "bad.json", spec)
    (tmp_path / "imgs" / "b.png").unlink()
    with pytest.raises(CalibrationError, match=r"1 image\(s\) listed .* missing .*b.png"):
        CocoDetectionDataset(tmp_path / "imgs", ann, spec)
    np.savez(tmp_path / "imgs.npz", images=np.zeros((1, 4, 4), np.uint8), image_ids=np.array([3]))
    with pytest.raises(CalibrationError, match="does not match"):
        CocoDetectionDataset(tmp_path / "imgs.npz", ann, spec)


def test_calibration_batches_deterministic_subset() -> None:
    ds = NumpyDataset(np.arange(20, dtype=np.float32).reshape(20, 1))
    first = [b.flatten().tolist() for b in calibration_batches(ds, 7, batch_size=3, show_progress=False)]
    again = [b.flatten().tolist() for b in calibration_batches(ds, 7, batch_size=3, show_progress=False)]
    other = [b.flatten().tolist() for b in calibration_batches(ds, 7, batch_size=3, seed=1, show_progress=False)]
    assert first == again != other
    assert [len(b) for b in first] == [3, 3, 1]
    assert len({v for batch in first for v in batch}) == 7  # no item twice
    every = torch.cat(list(calibration_batches(ds, None, batch_size=8, show_progress=False)))
    assert every.flatten().tolist() == list(range(20)) and every.dtype == torch.float32


def test_calibration_batches_take_first_tuple_element(tmp_path: Path) -> None:
    ds = CocoDetectionDataset(tmp_path / "imgs", _tiny_coco(tmp_path), PreprocessSpec(size=(8, 8)))
    (batch,) = calibration_batches(ds, 2, batch_size=4, show_progress=False)
    assert batch.shape == (2, 1, 8, 8)


def test_calibration_batches_errors(tmp_path: Path) -> None:
    ds = NumpyDataset(np.zeros((4, 2), np.float32))
    with pytest.raises(CalibrationError, match="num_samples=5 but .* 4 items"):
        next(calibration_batches(ds, 5, 2, show_progress=False))
    with pytest.raises(CalibrationError, match="empty"):
        next(calibration_batches([], 1, 2, show_progress=False))
    bad = np.zeros((4, 2), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(CalibrationError, match="item 2 contains NaN"):
        list(calibration_batches(NumpyDataset(bad), None, 2, show_progress=False))
    folder = tmp_path / "mixed"
    _write_png(folder / "a.png", 1, (8, 8))
    _write_png(folder / "b.png", 1, (8, 9))
    with pytest.raises(CalibrationError, match="item 1 has shape .* fixed size"):
        list(calibration_batches(ImageFolderDataset(folder, PreprocessSpec()), None, 2, show_progress=False))
