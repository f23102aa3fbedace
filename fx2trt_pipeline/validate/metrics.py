"""Task metrics: COCO mAP (through pycocotools' COCOeval) and top-k accuracy.

``evaluate_detector`` runs any callable that maps an input batch to detector outputs (the float
model, the simulated INT8 GraphModule, the network executor, an engine runner) over a COCO-style
dataset and scores it, so the same numbers gate every stage of the pipeline.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fx2trt_pipeline.calib_data.datasets import coco_from_dict
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.eval_data import Shard

# COCOeval.stats order; -1.0 means "no ground truth in that area range" (pycocotools' convention).
COCO_STAT_NAMES = (
    "mAP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)

DecodeFn = Callable[[Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
Detections = tuple[Any, Any, Any]  # (boxes_xyxy, scores, classes): tensors or per-image lists


def _as_coco(coco_gt: Any) -> Any:
    if isinstance(coco_gt, (str, Path)):
        with open(coco_gt, encoding="utf-8") as f:
            return coco_from_dict(json.load(f))
    if isinstance(coco_gt, Mapping):
        return coco_from_dict(coco_gt)
    return coco_gt


def coco_map(
    predictions: Sequence[Mapping[str, Any]], coco_gt: Any, img_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """Score box detections against COCO ground truth with pycocotools' ``COCOeval`` (quietly).

    Args:
        predictions: COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
            in original-image pixels (see :func:`detections_to_coco`).
        coco_gt: A ``pycocotools.coco.COCO``, a COCO dict, or a path to a COCO JSON.
        img_ids: Images to evaluate (default: every image of ``coco_gt``); images without
            predictions count as misses.

    Returns:
        ``{"mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100",
        "AR_small", "AR_medium", "AR_large"}``; ``mAP`` is AP@[.5:.95]. -1.0 where the
        ground truth has no object of that size. No predictions at all scores 0.

    Raises:
        ConfigError: a prediction names an image that is not in the ground truth.

    Example:
        >>> from fx2trt_pipeline.calib_data import load_mnist_detection
        >>> gt = load_mnist_detection("val").coco
        >>> preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
        ...           "score": 1.0} for a in gt.dataset["annotations"]]
        >>> coco_map(preds, gt)["mAP"]
        1.0
    """
    from pycocotools.cocoeval import COCOeval

    gt = _as_coco(coco_gt)
    ids = sorted(int(i) for i in (img_ids if img_ids is not None else gt.getImgIds()))
    if not predictions:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    unknown = {int(p["image_id"]) for p in predictions} - set(gt.getImgIds())
    if unknown:
        raise ConfigError(
            f"{len(unknown)} predicted image id(s) are not in the ground truth, e.g. {sorted(unknown)[:5]}."
        )
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(p) for p in predictions])  # loadRes adds keys: keep callers' dicts intact
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}


def detections_to_coco(
    image_ids: Sequence[int],
    detections: Detections,
    category_ids: Sequence[int] | None = None,
    transforms: Sequence[Any] | None = None,
    score_threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """Turn per-image detections into COCO result dicts.

    Args:
        image_ids: One COCO image id per image.
        detections: ``(boxes_xyxy, scores, classes)``: ``(B, K, 4)`` boxes in network-input pixels,
            ``(B, K)`` confidences and ``(B, K)`` class indices (or per-image lists of ``(K_i, ...)``).
        category_ids: COCO category id of each class index (default: the index itself).
        transforms: Per-image :class:`~fx2trt_pipeline.calib_data.TransformParams` mapping boxes
            back to original-image pixels (default: identity).
        score_threshold: Drop detections scoring below this.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.

    Example:
        >>> detections_to_coco([7], (torch.tensor([[[1.0, 2.0, 5.0, 8.0]]]), torch.tensor([[0.9]]),
        ...                          torch.tensor([[3]])))
        [{'image_id': 7, 'category_id': 3, 'bbox': [1.0, 2.0, 4.0, 6.0], 'score': 0.9}]
    """
    boxes_xyxy, scores, classes = detections
    results: list[dict[str, Any]] = []
    for b, image_id in enumerate(image_ids):
        box = torch.as_tensor(boxes_xyxy[b]).detach().float().cpu().reshape(-1, 4)
        if transforms is not None:
            box = transforms[b].boxes_to_original(box)
        score = torch.as_tensor(scores[b]).detach().float().cpu().reshape(-1)
        cls = torch.as_tensor(classes[b]).detach().cpu().reshape(-1).long()
        keep = score >= score_threshold
        for (x0, y0, x1, y1), s, c in zip(box[keep].tolist(), score[keep].tolist(), cls[keep].tolist()):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[c]) if category_ids is not None else int(c),
                    "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                    "score": round(float(s), 5),
                }
            )
    return results


def topk_accuracy(
    logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Fraction of samples whose label is among the ``k`` highest logits, for each ``k``.

    Ties are broken by ``torch.topk`` (first index wins), as in torchvision's references.

    Raises:
        ConfigError: shapes do not match or ``k`` exceeds the number of classes.

    Example:
        >>> topk_accuracy(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]]), torch.tensor([2, 0]), ks=(1, 2))
        {'top1': 0.5, 'top2': 1.0}
    """
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels).long().reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"topk_accuracy needs (N, C) logits and (N,) labels, got {tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    if max(ks) > logits.shape[1]:
        raise ConfigError(f"k={max(ks)} exceeds the {logits.shape[1]} classes.")
    top = logits.topk(max(ks), dim=1).indices
    hits = top == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}


def agreement(reference: torch.Tensor, test: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """How often ``test`` predicts what ``reference`` (the FP32 model) predicts: no labels needed.

    ``agree_top1``: the top-1 classes are equal; ``agree_topk``: the reference's top-1 class is among
    the test's ``k`` highest (``k`` capped at the number of classes).

    Example:
        >>> ref = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
        >>> agreement(ref, torch.tensor([[0.1, 0.6, 0.7], [0.9, 0.0, 0.1]]), ks=(1, 2))
        {'agree_top1': 0.5, 'agree_top2': 1.0}
    """
    reference, test = torch.as_tensor(reference).float(), torch.as_tensor(test).float()
    if reference.shape != test.shape or reference.ndim != 2:
        raise ConfigError(
            f"agreement needs two (N, C) outputs of one shape, got {tuple(reference.shape)} and {tuple(test.shape)}."
        )
    wanted = [k for k in ks if k <= reference.shape[1]] or [1]
    top = test.topk(max(wanted), dim=1).indices
    hits = top == reference.argmax(1)[:, None]
    return {f"agree_top{k}": float(hits[:, :k].any(1).float().mean()) for k in wanted}


def output_cosine(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Cosine similarity of two outputs taken as flat vectors (float64; 1.0 when both are zero).

    Example:
        >>> output_cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
        0.7071067811865475
    """
    a, b = torch.as_tensor(reference).double().flatten(), torch.as_tensor(test).double().flatten()
    norm = float(a.norm() * b.norm())
    return 1.0 if norm == 0.0 and float(a.norm() + b.norm()) == 0.0 else float(a @ b) / max(norm, 1e-300)


def detector_predictions(
    model_fn: Callable[[torch.Tensor], Any],
    dataset: Any,
    decode_fn: DecodeFn,
    indices: Sequence[int],
    batch_size: int = 50,
) -> list[dict[str, Any]]:
    """COCO result dicts of ``model_fn`` on the dataset items ``indices`` (any subset: a rank's shard).

    Predictions of disjoint shards concatenate into the predictions of their union, so several
    processes can each run a shard and :func:`coco_map` scores the union once.
    """
    category_ids = sorted(dataset.coco.getCatIds())
    predictions: list[dict[str, Any]] = []
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            idx = list(indices[start : start + batch_size])
            items = [dataset[i] for i in idx]
            x = torch.stack([item[0] for item in items]).float()
            detections = decode_fn(model_fn(x))
            transforms = [dataset.transform(i) for i in idx] if hasattr(dataset, "transform") else None
            predictions += detections_to_coco([int(item[1]) for item in items], detections, category_ids, transforms)
    return predictions


def image_ids_of(dataset: Any, indices: Sequence[int]) -> list[int]:
    """COCO image ids of the dataset items ``indices`` (without running any model)."""
    ids = getattr(dataset, "image_ids", None)
    if ids is not None:
        return [int(ids[i]) for i in indices]
    return [int(dataset[i][1]) for i in indices]


def evaluate_detector(
    model_fn: Callable[[torch.Tensor], Any],
    dataset: Any,
    decode_fn: DecodeFn | None,
    batch_size: int = 50,
    max_images: int | None = None,
    *,
    shard: Shard | None = None,
) -> dict[str, float]:
    """Run a detector callable over a COCO-style dataset and return its COCO metrics: THE detection scorer
    (the evaluation, the calibrator search and mixed precision all score detectors here).

    Args:
        model_fn: Maps a float32 ``(B, C, H, W)`` batch to raw outputs (whatever ``decode_fn`` takes):
            ``nn.Module``, GraphModule, executor or engine runner.
        dataset: ``ds[i] -> (image tensor, image id)`` with ``ds.coco`` (pycocotools ground truth)
            and optionally ``ds.transform(i)`` (boxes back to original pixels), e.g.
            :func:`~fx2trt_pipeline.calib_data.load_mnist_detection`.
        decode_fn: Maps outputs to ``(boxes_xyxy (B, K, 4), scores (B, K), classes (B, K))`` in
            network-input pixels, e.g. :func:`~fx2trt_pipeline.models.centernet.centernet_decode`.
            Required: no generic default can know a detector's output layout.
        batch_size: Images per call of ``model_fn``.
        max_images: Evaluate only the first N images (the metric then covers only those).
        shard: this process's part under ``torchrun`` (:class:`~fx2trt_pipeline.validate.eval_data.Shard`):
            it runs items ``rank::world``, every rank's predictions are gathered and scored once on the union
            (collective: every rank calls it). ``None``: one process, all items.

    Returns:
        :func:`coco_map`'s dict (``mAP``, ``AP50``, ...) plus ``num_images``.

    Raises:
        ConfigError: ``decode_fn`` is missing.

    Example:
        >>> from fx2trt_pipeline.calib_data import load_mnist_detection
        >>> from fx2trt_pipeline.models import load_demo_detector
        >>> from fx2trt_pipeline.models.centernet import centernet_decode
        >>> scores = evaluate_detector(load_demo_detector(), load_mnist_detection("val"), centernet_decode,
        ...                            max_images=32)
        >>> scores["num_images"], scores["AP50"] > 0.9
        (32.0, True)
    """
    if decode_fn is None:
        raise ConfigError(
            "evaluate_detector needs decode_fn (outputs -> boxes, scores, classes); for the "
            "demo CenterNet use fx2trt_pipeline.models.centernet.centernet_decode."
        )
    shard = shard or Shard()
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    local = detector_predictions(model_fn, dataset, decode_fn, list(range(n))[shard.rank :: shard.world], batch_size)
    predictions = [p for part in shard.gather(local) for p in part]
    ids = image_ids_of(dataset, range(n))
    return {**coco_map(predictions, dataset.coco, img_ids=ids), "num_images": float(len(ids))}
