"""Multi-output models: the class output is chosen by index, and every output's parity is shown.

MTCNN's RNet and ONet (facenet-pytorch ships their trained weights) output box regression first and the
face probabilities last. Faces are the astronaut photo's face crops, non-faces are crops of photos without
faces; references are computed here from the float model and the rebuilt quantized model directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fx2trt_pipeline import trt_api

mtcnn = pytest.importorskip(
    "facenet_pytorch.models.mtcnn",
    reason="pip install --no-deps facenet-pytorch==2.6.0 (MTCNN's RNet / ONet with their weights; requests: [dev])",
)
pytest.importorskip("skimage", reason="scikit-image ships the sample photos")
if not trt_api.is_available():
    pytest.skip("no TensorRT library installed (pip install 'fx2trt-pipeline[rtx]')", allow_module_level=True)

#: The astronaut photo's face (rows, cols in the 512 x 512 photo) and photos without faces.
FACE = (70, 175, 170, 275)
NON_FACE = ("coffee", "rocket", "coins", "hubble_deep_field")


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(path)


def _folders(root: Path, per_class: int = 6) -> Path:
    """``root/0/`` non-face crops, ``root/1/`` face crops (RNet's output 1 is [not face, face])."""
    from skimage import data

    astronaut = data.astronaut()
    top, left, bottom, right = FACE
    for i in range(per_class):
        d = 4 * (i // 2)
        crop = astronaut[top - d : bottom + d, left - d : right + d]
        _save(crop[:, ::-1] if i % 2 else crop, root / "1" / f"face_{i}.png")
    for i in range(per_class):
        img = getattr(data, NON_FACE[i % len(NON_FACE)])()
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        h, w = img.shape[:2]
        _save(img[(i * h) // 20 : h // 2 + (i * h) // 20, w // 4 : w // 4 + h // 2], root / "0" / f"other_{i}.png")
    return root


def _factory_module(tmp: Path) -> None:
    (tmp / "mtcnn_nets.py").write_text(
        "from facenet_pytorch.models.mtcnn import ONet, RNet\n\n"
        "def rnet():\n    return RNet().eval()\n\n"
        "def onet():\n    return ONet().eval()\n"
    )


def _build(tmp: Path, net: str, size: int, extra: list[str]) -> tuple[int, str, dict]:
    from tests.deploy.conftest import run_cli

    _factory_module(tmp)
    data = _folders(tmp / "faces")
    # MTCNN's own normalisation: (x - 127.5) / 128 on 0..255 pixels
    pre = ["--input-size", str(size), "--mean", "0.5", "--std", "0.502", "--channels", "3"]
    argv = ["build", "--model", f"mtcnn_nets:{net}", "--calib-data", str(data), "--eval-data", str(data)]
    argv += [*pre, "--calibrator", "minmax", "--no-onnx", "--output", str(tmp / net), *extra]
    import os
    import sys

    cwd = os.getcwd()
    os.chdir(tmp)
    sys.path.insert(0, str(tmp))
    try:
        code, out, err = run_cli(argv)
    finally:
        os.chdir(cwd)
        sys.path.remove(str(tmp))
    assert code in (0, 1), err
    return code, out, json.loads((tmp / net / "fx2trt_run.json").read_text())


def _reference_probs(tmp: Path, net: str, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Face probabilities of the float model on the evaluation crops, and their folder labels."""
    from fx2trt_pipeline.calib_data import PreprocessSpec, read_image

    spec = PreprocessSpec.from_dict(manifest["preprocess"])
    files = sorted((tmp / "faces").rglob("*.png"))
    x = torch.stack([spec(read_image(f)) for f in files])
    model = getattr(mtcnn, {"rnet": "RNet", "onet": "ONet"}[net])().eval()
    with torch.no_grad():
        probs = model(x)[-1]
    return probs, torch.tensor([int(f.parent.name) for f in files])


def test_rnet_scores_the_face_probabilities_with_output_index_1(tmp_path: Path) -> None:
    code, out, manifest = _build(tmp_path, "rnet", 24, ["--output-index", "1"])
    ev = manifest["evaluation"]
    rows = {r["key"]: r for r in ev["rows"]}
    probs, labels = _reference_probs(tmp_path, "rnet", manifest)
    top1 = float((probs.argmax(1) == labels).float().mean())
    assert top1 >= 0.75  # the trained RNet tells these faces from the other crops
    assert rows["fp32"]["metrics"]["top1"] == pytest.approx(top1, abs=1e-12)
    assert "agree_top1" in rows["network_executor"]["metrics"] and ev["warnings"] == []
    names = [o["name"] for o in rows["network_executor"]["outputs"]]
    assert len(names) == 2  # box regression and face probabilities, both compared
    assert "outputs vs FP32" in out and all(n in out for n in names)


def test_onet_box_output_appears_in_the_parity_table(tmp_path: Path) -> None:
    _, out, manifest = _build(tmp_path, "onet", 48, ["--output-index", "2"])
    rows = {r["key"]: r for r in manifest["evaluation"]["rows"]}
    outputs = rows["network_executor"]["outputs"]
    assert len(outputs) == 3 and outputs[0]["shape"][1:] == [4]  # boxes, landmarks, probabilities
    for o in outputs:
        assert 0.9 < o["cosine_vs_fp32"] <= 1.0 + 1e-9 and o["max_abs_vs_fp32"] >= 0.0
        assert o["cosine_vs_simulated"] > 0.9999
    html = (tmp_path / "onet" / "report.html").read_text()
    assert outputs[0]["name"] in html and "Output parity" in html


def test_an_output_index_past_the_outputs_is_one_clear_error(tmp_path: Path) -> None:
    from tests.deploy.conftest import run_cli

    _factory_module(tmp_path)
    data = _folders(tmp_path / "faces", per_class=2)
    import os
    import sys

    cwd = os.getcwd()
    os.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        code, _, err = run_cli(
            ["build", "--model", "mtcnn_nets:rnet", "--calib-data", str(data), "--eval-data", str(data)]
            + ["--input-size", "24", "--mean", "0.5", "--std", "0.5", "--no-onnx", "--output-index", "5"]
            + ["--output", str(tmp_path / "o")]
        )
    finally:
        os.chdir(cwd)
        sys.path.remove(str(tmp_path))
    assert code == 2 and "--output-index 5" in err and "2 outputs" in err and err.count("\n") == 1
