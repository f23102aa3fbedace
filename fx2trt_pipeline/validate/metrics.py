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
from tqdm.auto import tqdm

from fx2trt_pipeline.errors import ConfigError

# COCOeval.stats order; -1.0 means "no ground truth in that area range" (pycocotools' convention).
COCO_STAT_NAMES = (
    "mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)

DecodeFn = Callable[[Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def coco_from_dict(dataset: Mapping[str, Any]) -> Any:
    """Build a ``pycocotools.coco.COCO`` from an in-memory COCO dict without its prints.

    Example:
        >>> gt = coco_from_dict({"images": [{"id": 1, "height": 8, "width": 8}], "annotations": [],
        ...                      "categories": [{"id": 0, "name": "0"}]})
    """
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dict(dataset)
        coco.createIndex()
    return coco


def _as_coco(coco_gt: Any) -> Any:
    if isinstance(coco_gt, (str, Path)):
        with open(coco_gt, encoding="utf-8") as f:
            return coco_from_dict(json.load(f))
    if isinstance(coco_gt, Mapping):
        return coco_from_dict(coco_gt)
    return coco_gt


def coco_map(predictions: Sequence[Mapping[str, Any]], coco_gt: Any,
             img_ids: Sequence[int] | None = None) -> dict[str, float]:
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
        raise ConfigError(f"{len(unknown)} predicted image id(s) are not in the ground truth, "
                          f"e.g. {sorted(unknown)[:5]}.")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(p) for p in predictions])  # loadRes adds keys: keep callers' dicts intact
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}


def detections_to_coco(image_ids: Sequence[int], boxes_xyxy: torch.Tensor | Sequence[torch.Tensor],
                       scores: torch.Tensor | Sequence[torch.Tensor], classes: torch.Tensor | Sequence[torch.Tensor],
                       category_ids: Sequence[int] | None = None, transforms: Sequence[Any] | None = None,
                       score_threshold: float = 0.0) -> list[dict[str, Any]]:
    """Turn per-image detections into COCO result dicts.

    Args:
        image_ids: One COCO image id per image.
        boxes_xyxy: ``(B, K, 4)`` or a list of ``(K_i, 4)`` boxes in network-input pixels.
        scores: ``(B, K)`` or a list of ``(K_i,)`` confidences.
        classes: ``(B, K)`` or a list of ``(K_i,)`` class indices.
        category_ids: COCO category id of each class index (default: the index itself).
        transforms: Per-image :class:`~fx2trt_pipeline.calib_data.TransformParams` mapping boxes
            back to original-image pixels (default: identity).
        score_threshold: Drop detections scoring below this.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.

    Example:
        >>> detections_to_coco([7], torch.tensor([[[1.0, 2.0, 5.0, 8.0]]]), torch.tensor([[0.9]]),
        ...                    torch.tensor([[3]]))
        [{'image_id': 7, 'category_id': 3, 'bbox': [1.0, 2.0, 4.0, 6.0], 'score': 0.9}]
    """
    results: list[dict[str, Any]] = []
    for b, image_id in enumerate(image_ids):
        box = torch.as_tensor(boxes_xyxy[b]).detach().float().cpu().reshape(-1, 4)
        if transforms is not None:
            box = transforms[b].boxes_to_original(box)
        score = torch.as_tensor(scores[b]).detach().float().cpu().reshape(-1)
        cls = torch.as_tensor(classes[b]).detach().cpu().reshape(-1).long()
        keep = score >= score_threshold
        for (x0, y0, x1, y1), s, c in zip(box[keep].tolist(), score[keep].tolist(), cls[keep].tolist()):
            results.append({
                "image_id": int(image_id),
                "category_id": int(category_ids[c]) if category_ids is not None else int(c),
                "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                "score": round(float(s), 5),
            })
    return results


def topk_accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                  ks: Sequence[int] = (1, 5)) -> dict[str, float]:
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
        raise ConfigError(f"topk_accuracy needs (N, C) logits and (N,) labels, got {tuple(logits.shape)} "
                          f"and {tuple(labels.shape)}.")
    if max(ks) > logits.shape[1]:
        raise ConfigError(f"k={max(ks)} exceeds the {logits.shape[1]} classes.")
    top = logits.topk(max(ks), dim=1).indices
    hits = top == labels[:, None]
    return {f"top{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}


def _to_tensors(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, Mapping):
        # Named outputs (executor / engine runners): take the CenterNet names when present.
        if all(k in outputs for k in ("hm", "wh", "reg")):
            outputs = [outputs["hm"], outputs["wh"], outputs["reg"]]
        else:
            outputs = list(outputs.values())
    elif isinstance(outputs, (torch.Tensor, np.ndarray)):
        outputs = [outputs]
    return [torch.as_tensor(o).detach().float().cpu() for o in outputs]


def evaluate_detector(model_fn: Callable[[torch.Tensor], Any], dataset: Any, decode_fn: DecodeFn | None = None,
                      batch_size: int = 50, k: int = 100, max_images: int | None = None,
                      show_progress: bool = False) -> dict[str, float]:
    """Run a detector callable over a COCO-style dataset and return its COCO metrics.

    Args:
        model_fn: Maps a float32 ``(B, C, H, W)`` batch to raw outputs: a tuple/list of tensors or
            numpy arrays, or a dict (``hm``/``wh``/``reg`` are picked by name). Anything callable:
            ``nn.Module``, GraphModule, executor or engine runner.
        dataset: ``ds[i] -> (image tensor, image id)`` with ``ds.coco`` (pycocotools ground truth)
            and optionally ``ds.transform(i)`` (boxes back to original pixels), e.g.
            :func:`~fx2trt_pipeline.calib_data.load_mnist_detection`.
        decode_fn: Maps outputs to ``(boxes_xyxy (B, K, 4), scores (B, K), classes (B, K))`` in
            network-input pixels. Default: CenterNet :func:`~fx2trt_pipeline.models.decode` with
            the stride inferred from input and heatmap sizes.
        batch_size: Images per call of ``model_fn``.
        k: Detections kept per image by the default decoder.
        max_images: Evaluate only the first N images (the metric then covers only those).
        show_progress: Show a tqdm bar.

    Returns:
        :func:`coco_map`'s dict (``mAP``, ``AP50``, ...) plus ``num_images``.

    Example:
        >>> from fx2trt_pipeline.calib_data import load_mnist_detection
        >>> from fx2trt_pipeline.models import load_demo_detector
        >>> scores = evaluate_detector(load_demo_detector(), load_mnist_detection("val"), max_images=32)
        >>> scores["num_images"], scores["AP50"] > 0.9
        (32.0, True)
    """
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    category_ids = sorted(dataset.coco.getCatIds())
    predictions: list[dict[str, Any]] = []
    image_ids: list[int] = []
    with torch.inference_mode():
        for start in tqdm(range(0, n, batch_size), desc="evaluate", disable=not show_progress):
            idx = list(range(start, min(start + batch_size, n)))
            items = [dataset[i] for i in idx]
            x = torch.stack([item[0] for item in items]).float()
            ids = [int(item[1]) for item in items]
            outputs = model_fn(x)
            if decode_fn is None:
                from fx2trt_pipeline.models.centernet import decode

                hm, wh, reg = _to_tensors(outputs)[:3]
                boxes, scores, classes = decode(hm, wh, reg, k=k, stride=x.shape[-1] / hm.shape[-1])
            else:
                boxes, scores, classes = decode_fn(outputs)
            transforms = [dataset.transform(i) for i in idx] if hasattr(dataset, "transform") else None
            predictions += detections_to_coco(ids, boxes, scores, classes, category_ids, transforms)
            image_ids += ids
    return {**coco_map(predictions, dataset.coco, img_ids=image_ids), "num_images": float(len(image_ids))}
