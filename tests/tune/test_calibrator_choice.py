"""``--calibrator auto`` ranks by fidelity to FP32 on held-out images, not by top-1 on noisy labels.

A small MLP trained on scikit-learn's real handwritten digits, calibrated on a batch with one outlier image
(so the calibrators really differ), evaluated on 48 digits whose labels are noisy in favour of one calibrator:
wherever that calibrator changes the FP32 prediction, the "label" agrees with it. Top-1 then prefers the
calibrator that changes the most predictions; the search the build runs (choose on the even-numbered images,
rank by agreement with FP32, then output cosine, labels last) must pick one within one image of the best
agreement. Agreement is recomputed here from argmaxes, independent of the scorer.
"""

from __future__ import annotations

import pytest
import torch

from fx2trt_pipeline.quantize.api import calibrate, convert, prepare
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.tune.calibrator_search import DEFAULT_CHOICES, compare_calibrators, fidelity_order, pick_best
from fx2trt_pipeline.validate.eval_data import EvalData, split_alternate
from fx2trt_pipeline.validate.scoring import CandidateScorer

CONFIG = QuantConfig(show_progress=False)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, torch.fx.GraphModule, torch.Tensor]:
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:1200]), y[:1200]).backward()
        opt.step()
    model.eval()
    prepared = prepare(model, (x[:8],), CONFIG)
    calib = x[:200].clone()
    calib[:1] *= 300.0  # one outlier: min-max scales stretch, clipping calibrators do not
    calibrate(prepared, [calib], show_progress=False)
    return model, prepared, x[1200:1248]


def _agreement(model: torch.nn.Module, prepared: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, int]:
    """Images whose INT8 top-1 equals FP32's, per calibrator (argmax here, not the scorer)."""
    with torch.no_grad():
        ref = model(x).argmax(1)
        return {c.label: int((convert(prepared, c.config(CONFIG))(x).argmax(1) == ref).sum()) for c in DEFAULT_CHOICES}


def test_auto_picks_within_one_image_of_the_best_agreement_despite_noisy_labels(digits) -> None:
    model, prepared, x = digits
    agree = _agreement(model, prepared, x)
    worst_kept = min(agree, key=agree.__getitem__)
    favoured = sorted(agree, key=agree.__getitem__)[-2]  # the runner-up in agreement: the noise favours it
    with torch.no_grad():
        fp32 = model(x).argmax(1)
        noisy = convert(prepared, next(c for c in DEFAULT_CHOICES if c.label == favoured).config(CONFIG))(x).argmax(1)
    labels = torch.where(noisy != fp32, noisy, fp32)  # label noise that agrees with the favoured calibrator
    assert agree[favoured] < max(agree.values()) - 1 and agree[worst_kept] < agree[favoured]

    data = EvalData("classification", batches=[(x, labels)], input_name="x", batch_size=16)
    choose, report = split_alternate(data)
    scorer = CandidateScorer(model, choose)
    order = fidelity_order(scorer.classifies, data.metric)
    assert order == ("agree_top1", "cosine_fp32", "top1")
    table = compare_calibrators(prepared, scorer, metric=order[0], tie_breakers=order[1:], base_config=CONFIG)

    # by top-1 on the noisy labels the favoured calibrator would win, changing more predictions
    assert pick_best(table.rows, "top1", tie_breakers=()).label == favoured
    # by fidelity, on the held-out half, the choice is within one image of the best agreement
    held_out = report.local_batches()[0][0]
    agree_held_out = _agreement(model, prepared, held_out)
    assert agree_held_out[table.best.label] >= max(agree_held_out.values()) - 1, (table.best.label, agree_held_out)
    assert agree[table.best.label] >= max(agree.values()) - 1
    assert table.to_dict()["order"] == ["agree_top1", "cosine_fp32", "top1"]


def test_mixed_precision_flag_keeps_float_layers_within_an_agreement_budget(tmp_path) -> None:
    """``fx2trt build --mixed-precision 0``: every prediction of the chosen half must stay FP32's; the search runs
    on the even-numbered images and the report on the others, and the manifest records both."""
    import json

    import numpy as np

    from fx2trt_pipeline import trt_api

    if not trt_api.is_available():
        pytest.skip("no TensorRT library installed (pip install 'fx2trt-pipeline[rtx]')")
    from tests.deploy.conftest import run_cli
    from tests.deploy.photos import random_class_folders

    rng = np.random.default_rng(1)
    random_class_folders(tmp_path / "val", rng, size=(16, 16))
    np.save(tmp_path / "calib.npy", rng.normal(size=(16, 3, 16, 16)).astype(np.float32))
    config = tmp_path / "run.toml"
    config.write_text(
        "[preprocess]\nsize = [16, 16]\nchannels = 3\n[gate]\nint8_budget = 1.0\nengine_tolerance = 1.0\n"
    )
    code, out, err = run_cli(
        ["build", "--model", "tests.deploy.models:tiny_classifier", "--calib-data", str(tmp_path / "calib.npy")]
        + ["--eval-data", str(tmp_path / "val"), "--mixed-precision", "0", "--config", str(config), "--no-onnx"]
        + ["--output", str(tmp_path / "out")]
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "fx2trt_run.json").read_text())
    mp = manifest["mixed_precision"]
    assert mp["metric"] == "agree_top1" and mp["budget"] == 0.0 and mp["fp32"] == 1.0
    assert mp["met_budget"] == (mp["final"] >= 1.0 - 1e-12) and "chosen on 6 of 12" in mp["held_out"]
    assert manifest["config"]["quant"]["mixed_precision"] == 0.0
    assert manifest["evaluation"]["num_samples"] == 6 and "mixed precision:" in out
