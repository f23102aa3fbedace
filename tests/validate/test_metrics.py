"""COCO mAP through pycocotools, detection conversion, top-k accuracy, evaluate_detector plumbing."""

from __future__ import annotations

import pytest
import torch

from fx2trt_pipeline.calib_data import PreprocessSpec, load_mnist_detection
from fx2trt_pipeline.calib_data.preprocess import TransformParams
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.metrics import coco_map, detections_to_coco, evaluate_detector, topk_accuracy


@pytest.fixture(scope="module")
def val():
    return load_mnist_detection("val")


def _gt_predictions(val, dx: float = 0.0) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": [a["bbox"][0] + dx, a["bbox"][1], a["bbox"][2], a["bbox"][3]],
            "score": 1.0,
        }
        for a in val.dataset["annotations"]
    ]


def test_ground_truth_as_predictions_is_perfect(val) -> None:
    m = coco_map(_gt_predictions(val), val.coco)
    assert m["mAP"] == 1.0 and m["AP50"] == 1.0 and m["AP75"] == 1.0 and m["AR100"] == 1.0
    assert m["AP_large"] == -1.0  # no digit is larger than 96^2 px: pycocotools' "undefined"


def test_shifted_boxes_score_lower(val) -> None:
    # A 1 px shift keeps IoU >= 0.5 for every digit (even a 4 px wide "1") but fails the strict
    # thresholds on narrow digits; a larger shift costs more.
    m = coco_map(_gt_predictions(val, dx=1.0), val.coco)
    assert m["AP50"] == 1.0
    assert 0.6 < m["mAP"] < 0.9 and m["AP75"] < 1.0
    assert coco_map(_gt_predictions(val, dx=3.0), val.coco)["mAP"] < m["mAP"] - 0.2
    assert coco_map(_gt_predictions(val, dx=40.0), val.coco)["mAP"] < 0.05


def test_img_ids_restrict_the_evaluation(val) -> None:
    preds = [p for p in _gt_predictions(val) if p["image_id"] <= 10]
    assert coco_map(preds, val.coco, img_ids=range(1, 11))["mAP"] == 1.0
    assert coco_map(preds, val.coco)["AR100"] < 0.1  # the other 290 images count as misses


def test_coco_map_edge_cases(val) -> None:
    assert coco_map([], val.coco)["mAP"] == 0.0
    with pytest.raises(ConfigError, match="not in the ground truth"):
        coco_map([{"image_id": 12345, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1.0}], val.coco)
    assert coco_map(_gt_predictions(val), val.dataset)["mAP"] == 1.0  # a plain COCO dict works too


def test_detections_to_coco_maps_boxes_and_categories() -> None:
    t = TransformParams(orig_h=50, orig_w=100, scale_x=0.5, scale_y=0.5, pad_y=10.0)
    out = detections_to_coco(
        [4],
        (
            torch.tensor([[[5.0, 15.0, 25.0, 35.0], [0.0, 0.0, 1.0, 1.0]]]),
            torch.tensor([[0.8, 0.01]]),
            torch.tensor([[1, 0]]),
        ),
        category_ids=[7, 9],
        transforms=[t],
        score_threshold=0.05,
    )
    assert out == [{"image_id": 4, "category_id": 9, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.8}]


def test_topk_accuracy_hand_computed() -> None:
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.9],  # label 3: top-1 hit
            [0.8, 0.1, 0.7, 0.0],  # label 2: second -> top-2 hit
            [0.3, 0.2, 0.1, 0.4],  # label 2: last -> miss at k=1,2,3
            [0.0, 0.9, 0.5, 0.6],  # label 3: second -> top-2 hit
        ]
    )
    labels = torch.tensor([3, 2, 2, 3])
    assert topk_accuracy(logits, labels, ks=(1, 2, 3, 4)) == {"top1": 0.25, "top2": 0.75, "top3": 0.75, "top4": 1.0}
    with pytest.raises(ConfigError, match="exceeds"):
        topk_accuracy(logits, labels, ks=(5,))
    with pytest.raises(ConfigError, match="labels"):
        topk_accuracy(logits, labels[:3])


def test_evaluate_detector_maps_letterboxed_boxes_back() -> None:
    """An oracle detector (returns the ground truth in network-input pixels) must score 1.0.

    The letterbox to 80x120 scales by 5/6 and pads 20 px left and right, so this checks that
    batching, image ids and the per-image transforms line up.
    """
    ds = load_mnist_detection("val", PreprocessSpec(size=(80, 120), mode="letterbox"))
    anns: dict[int, list] = {}
    for a in ds.dataset["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    seen: list[int] = []

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 80, 120)
        return x

    def oracle(x: torch.Tensor):
        batch = ds.image_ids[len(seen) : len(seen) + len(x)]
        seen.extend(batch)
        boxes = torch.zeros(len(batch), 5, 4)
        scores = torch.zeros(len(batch), 5)
        classes = torch.zeros(len(batch), 5, dtype=torch.long)
        for b, image_id in enumerate(batch):
            for j, a in enumerate(anns.get(image_id, [])):
                x, y, w, h = a["bbox"]
                boxes[b, j] = torch.tensor([x, y, x + w, y + h]) * 5 / 6 + torch.tensor([20.0, 0.0, 20.0, 0.0])
                scores[b, j], classes[b, j] = 1.0, a["category_id"]
        return boxes, scores, classes

    m = evaluate_detector(model_fn, ds, decode_fn=oracle, batch_size=16, max_images=40)
    assert m["num_images"] == 40 and seen == ds.image_ids[:40]
    assert m["mAP"] > 0.99
