"""Accuracy with real weights: MobileNetV2 (ImageNet) on real photos, simulated INT8 vs FP32.

Calibration and evaluation use disjoint random crops of scikit-image's bundled photos. Floors sit a
little below what was measured (docs/benchmarks.md has the figures and the command).
"""

from __future__ import annotations

import pytest
import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_batches

# (calibrator, percentile) -> (min top-1 agreement with FP32, min mean cosine of the logits)
FLOORS = {
    ("minmax", 99.99): (0.65, 0.91),
    ("percentile", 99.9): (0.68, 0.95),
    ("percentile", 99.99): (0.68, 0.94),
    ("percentile", 99.999): (0.65, 0.92),
    ("entropy", 99.99): (0.68, 0.95),
    ("mse", 99.99): (0.65, 0.93),
}


@pytest.fixture(scope="module")
def calibrated():
    pytest.importorskip("skimage")
    model = mobilenet_v2_imagenet()
    calib = photo_batches(batch_size=8, num_batches=3, seed=0)
    evaluation = torch.cat(photo_batches(batch_size=16, num_batches=2, seed=1))
    with torch.no_grad():
        reference = model(evaluation)
    prepared = ftp.prepare(model, (calib[0],), ftp.QuantConfig(show_progress=False))
    ftp.calibrate(prepared, calib)
    return prepared, evaluation, reference


def agreement(prepared, evaluation, reference, calibrator: str, percentile: float) -> tuple[float, float]:
    qgm = ftp.convert(prepared, ftp.QuantConfig(calibrator=calibrator, percentile=percentile, show_progress=False))
    with torch.no_grad():
        out = qgm(evaluation)
    top1 = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    cos = torch.nn.functional.cosine_similarity(out, reference, dim=1).mean().item()
    return top1, cos


@pytest.mark.parametrize("calibrator,percentile", list(FLOORS))
def test_int8_tracks_fp32_on_real_photos(calibrated, calibrator: str, percentile: float) -> None:
    top1, cos = agreement(*calibrated, calibrator, percentile)
    min_top1, min_cos = FLOORS[(calibrator, percentile)]
    print(f"{calibrator} {percentile}: top-1 agreement {top1:.3f}, cosine {cos:.4f}")
    assert top1 >= min_top1 and cos >= min_cos, (top1, cos)


def test_fp32_model_is_confident_on_photos(calibrated) -> None:
    """The real weights loaded: FP32 predictions are confident on real photos (random weights are not)."""
    _, _, reference = calibrated
    assert reference.softmax(1).max(1).values.mean().item() > 0.3


def test_best_settings_reach_cosine_099_all_int8(calibrated) -> None:
    """Activation equalization + per-group calibrators + AdaRound with quantized inputs: every conv and
    linear stays INT8, and the logits track FP32 at cosine >= 0.99 with top-1 agreement >= 0.90."""
    _, evaluation, reference = calibrated
    model = mobilenet_v2_imagenet()
    calib = photo_batches(batch_size=8, num_batches=3, seed=0)
    cfg = ftp.QuantConfig(
        equalization="activations",
        calibrator="auto_per_group",
        bias_correction=True,
        adaround=True,
        show_progress=False,
    )
    qgm = ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=cfg)
    state = ftp.get_quant_state(qgm)
    assert not state.config.skip and len(state.placement.weights) == 53 and len(state.edits.rounding) >= 40
    with torch.no_grad():
        out = qgm(evaluation)
    top1 = (out.argmax(1) == reference.argmax(1)).float().mean().item()
    cos = torch.nn.functional.cosine_similarity(out, reference, dim=1).mean().item()
    print(f"best settings: top-1 agreement {top1:.3f}, cosine {cos:.4f}")
    assert cos >= 0.99 and top1 >= 0.90, (top1, cos)  # measured: 0.9922 / 0.938
