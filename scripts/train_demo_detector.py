#!/usr/bin/env python
"""Train the demo CenterNet on the shipped MNIST detection set (CPU, a few minutes, fixed seed).

Loss as in CenterNet: penalty-reduced focal loss on the class heatmap (Gaussian peaks at box
centres), L1 on box size (x``--wh-weight``) and centre offset at the centre cells. Augmentation: random
translations that keep every digit inside the image. Prints val mAP and writes the fp32
checkpoint atomically to ``fx2trt_pipeline/models/weights/demo_centernet.pt``.

    python scripts/train_demo_detector.py                 # defaults used for the shipped weights
    python scripts/train_demo_detector.py --epochs 5 --out /tmp/quick.pt
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fx2trt_pipeline.calib_data import MNIST_DET_SPEC, load_mnist_detection
from fx2trt_pipeline.models.centernet import (
    DEMO_CONFIG,
    DEMO_WEIGHTS,
    CenterNet,
    DemoDetectorConfig,
    centernet_decode,
    demo_centernet,
)
from fx2trt_pipeline.validate.metrics import evaluate_detector

MAX_OBJECTS = 8  # scenes hold at most 5 digits
GAUSSIAN_ALPHA = 0.54  # heatmap Gaussian sigma = alpha * box side / 6 (TTFNet-style elliptical peaks)


def load_split_arrays(split: str) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
    """Images (N, 1, H, W) float32 preprocessed by MNIST_DET_SPEC, per-image xyxy boxes and classes."""
    ds = load_mnist_detection(split)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    by_image: dict[int, list[dict]] = {i: [] for i in ds.image_ids}
    for ann in ds.dataset["annotations"]:
        by_image[ann["image_id"]].append(ann)
    boxes, classes = [], []
    for image_id in ds.image_ids:
        anns = by_image[image_id]
        boxes.append(
            np.array(
                [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                np.float32,
            ).reshape(-1, 4)
        )
        classes.append(np.array([a["category_id"] for a in anns], np.int64))
    return images, boxes, classes


def random_shift(image: torch.Tensor, boxes: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Translate image and boxes by a random integer offset that keeps every box inside."""
    _, h, w = image.shape
    dx = int(rng.integers(-int(boxes[:, 0].min()), w - int(boxes[:, 2].max()) + 1))
    dy = int(rng.integers(-int(boxes[:, 1].min()), h - int(boxes[:, 3].max()) + 1))
    out = torch.zeros_like(image)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out, boxes + np.array([dx, dy, dx, dy], np.float32)


def make_targets(
    boxes: list[np.ndarray], classes: list[np.ndarray], num_classes: int, out_hw: tuple[int, int], stride: int
) -> dict[str, torch.Tensor]:
    """CenterNet targets: Gaussian heatmaps, and size/offset/index/mask at each object's centre cell."""
    b, (oh, ow) = len(boxes), out_hw
    hm = np.zeros((b, num_classes, oh, ow), np.float32)
    wh = np.zeros((b, MAX_OBJECTS, 2), np.float32)
    reg = np.zeros((b, MAX_OBJECTS, 2), np.float32)
    ind = np.zeros((b, MAX_OBJECTS), np.int64)
    mask = np.zeros((b, MAX_OBJECTS), np.float32)
    gy, gx = np.mgrid[0:oh, 0:ow].astype(np.float32)
    for i, (bx, cl) in enumerate(zip(boxes, classes)):
        for j, ((x0, y0, x1, y1), c) in enumerate(zip(bx / stride, cl)):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ix, iy = min(int(cx), ow - 1), min(int(cy), oh - 1)
            sx, sy = max(GAUSSIAN_ALPHA * (x1 - x0) / 6, 0.3), max(GAUSSIAN_ALPHA * (y1 - y0) / 6, 0.3)
            g = np.exp(-((gx - ix) ** 2) / (2 * sx**2) - ((gy - iy) ** 2) / (2 * sy**2))
            np.maximum(hm[i, c], g, out=hm[i, c])
            wh[i, j], reg[i, j] = (x1 - x0, y1 - y0), (cx - ix, cy - iy)
            ind[i, j], mask[i, j] = iy * ow + ix, 1.0
    return {k: torch.from_numpy(v) for k, v in {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "mask": mask}.items()}


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha=2, beta=4), normalized by the number of peaks."""
    p = logits.sigmoid()
    pos = target.eq(1).float()
    pos_term = F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_term = F.logsigmoid(-logits) * p**2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_term.sum() + neg_term.sum()) / pos.sum().clamp(min=1)


def masked_l1(pred: torch.Tensor, ind: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between ``pred`` (B, 2, H, W) gathered at ``ind`` and ``target`` (B, K, 2), over real objects."""
    b = pred.shape[0]
    gathered = pred.reshape(b, 2, -1).gather(2, ind[:, None, :].expand(-1, 2, -1)).transpose(1, 2)
    return (F.l1_loss(gathered, target, reduction="none") * mask[..., None]).sum() / (2 * mask.sum()).clamp(min=1)


def train(epochs: int, batch_size: int, lr: float, seed: int, wh_weight: float) -> tuple[CenterNet, float]:
    """Train a fresh demo CenterNet; returns the model (eval mode) and the seconds it took."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, boxes, classes = load_split_arrays("train")
    model = demo_centernet(DemoDetectorConfig(**DEMO_CONFIG))
    stride = model.output_stride
    out_hw = (images.shape[2] // stride, images.shape[3] // stride)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order, totals = rng.permutation(len(images)), np.zeros(3)
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            shifted = [random_shift(images[i], boxes[i], rng) for i in idx]
            x = torch.stack([im for im, _ in shifted])
            t = make_targets([bx for _, bx in shifted], [classes[i] for i in idx], model.num_classes, out_hw, stride)
            hm, wh, reg = model(x)
            losses = (
                focal_loss(hm, t["hm"]),
                wh_weight * masked_l1(wh, t["ind"], t["mask"], t["wh"]),
                masked_l1(reg, t["ind"], t["mask"], t["reg"]),
            )
            opt.zero_grad(set_to_none=True)
            sum(losses).backward()
            opt.step()
            sched.step()
            totals += [float(v.detach()) for v in losses]
        hm_l, wh_l, reg_l = totals / steps_per_epoch
        print(
            f"epoch {epoch + 1:3d}/{epochs}  hm {hm_l:.4f}  wh {wh_l:.4f}  reg {reg_l:.4f}  "
            f"{time.perf_counter() - start:6.0f}s",
            flush=True,
        )
    return model.eval(), time.perf_counter() - start


def save_checkpoint(model: CenterNet, path: Path, metrics: dict[str, float], meta: dict[str, float]) -> None:
    """Write the fp32 state_dict plus architecture/preprocessing/metrics (weights_only-loadable), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "config": DEMO_CONFIG,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "preprocess": MNIST_DET_SPEC.to_dict(),
        "val": {k: metrics[k] for k in ("mAP", "AP50", "AP75")},
        "train": meta,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the demo CenterNet on MNIST detection scenes.")
    parser.add_argument("--epochs", type=int, default=70)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wh-weight", type=float, default=0.5, help="L1 weight of the box-size loss")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the CI hosts are shared)")
    parser.add_argument("--out", type=Path, default=DEMO_WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, seconds = train(args.epochs, args.batch_size, args.lr, args.seed, args.wh_weight)
    metrics = evaluate_detector(model, load_mnist_detection("val"), centernet_decode)
    print(
        f"val ({int(metrics['num_images'])} images): mAP {metrics['mAP']:.4f}  AP50 {metrics['AP50']:.4f}  "
        f"AP75 {metrics['AP75']:.4f}  (trained {seconds:.0f}s, {args.threads} thread(s))"
    )
    save_checkpoint(
        model,
        args.out,
        metrics,
        {
            "epochs": args.epochs,
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "batch_size": args.batch_size,
            "lr": args.lr,
            "wh_weight": args.wh_weight,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
