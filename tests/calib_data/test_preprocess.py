"""PreprocessSpec: resize / letterbox geometry, channels, normalization, serialization."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fx2trt_pipeline.calib_data import PreprocessSpec, TransformParams
from fx2trt_pipeline.errors import CalibrationError, ConfigError


def test_identity_scales_uint8_to_unit_range() -> None:
    img = np.array([[0, 255], [51, 102]], np.uint8)
    x, params = PreprocessSpec().apply(img)
    assert x.dtype == torch.float32 and x.shape == (1, 2, 2)
    torch.testing.assert_close(x[0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert params == TransformParams(orig_h=2, orig_w=2)


def test_resize_stretches_and_records_scales() -> None:
    x, p = PreprocessSpec(size=(20, 40)).apply(np.full((10, 10), 255, np.uint8))
    assert x.shape == (1, 20, 40)
    torch.testing.assert_close(x, torch.ones(1, 20, 40))
    assert (p.scale_x, p.scale_y, p.pad_x, p.pad_y) == (4.0, 2.0, 0.0, 0.0)


def test_letterbox_keeps_aspect_and_centres() -> None:
    img = np.full((50, 100), 255, np.uint8)  # wide image into a square: pad top and bottom
    spec = PreprocessSpec(size=(64, 64), mode="letterbox", pad_value=0.5)
    x, p = spec.apply(img)
    assert (p.scale_x, p.scale_y, p.pad_x, p.pad_y) == (0.64, 0.64, 0.0, 16.0)
    assert torch.all(x[0, :16] == 0.5) and torch.all(x[0, 48:] == 0.5)
    torch.testing.assert_close(x[0, 16:48], torch.ones(32, 64))


def test_boxes_round_trip_through_letterbox() -> None:
    _, p = PreprocessSpec(size=(64, 64), mode="letterbox").apply(np.zeros((50, 100), np.uint8))
    orig = torch.tensor([[10.0, 5.0, 60.0, 45.0]])
    in_net = orig * 0.64 + torch.tensor([0.0, 16.0, 0.0, 16.0])
    torch.testing.assert_close(p.boxes_to_original(in_net), orig)
    # boxes in the padding are clipped to the image
    assert p.boxes_to_original(torch.tensor([[0.0, 0.0, 64.0, 64.0]])).tolist() == [[0.0, 0.0, 100.0, 50.0]]


def test_channels_conversion_and_normalization() -> None:
    gray = np.full((4, 4), 255, np.uint8)
    x = PreprocessSpec(channels=3, mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 0.5))(gray)
    assert x.shape == (3, 4, 4)
    assert x[:, 0, 0].tolist() == [1.0, 1.0, 0.0]
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 255
    y = PreprocessSpec(channels=1)(rgb)
    torch.testing.assert_close(y, torch.full((1, 4, 4), 0.587))
    assert PreprocessSpec(channels_first=False)(rgb).shape == (4, 4, 3)


def test_mean_std_must_match_channels() -> None:
    with pytest.raises(CalibrationError, match="3 channels"):
        PreprocessSpec(mean=(0.1, 0.2))(np.zeros((4, 4, 3), np.uint8))


def test_dict_round_trip_through_json() -> None:
    spec = PreprocessSpec(
        size=(96, 128),
        mode="letterbox",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        channels=3,
        channels_first=False,
        pad_value=0.447,
    )
    again = PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and hash(again) == hash(spec)


@pytest.mark.parametrize("kwargs", [{"mode": "crop"}, {"size": (0, 4)}, {"channels": 2}, {"std": (0.0,)}])
def test_invalid_specs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PreprocessSpec(**kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="sizes"):
        PreprocessSpec.from_dict({"sizes": [1, 2]})


# -- as torchvision's transforms prepare a decoded image -----------------------------------------------------------


@pytest.mark.parametrize("photo", ["chelsea", "coffee", "astronaut"])
@pytest.mark.parametrize(("crop", "resize"), [(224, 256), (96, 110)])
def test_resize_and_crop_match_the_weights_transforms_on_photos(photo: str, crop: int, resize: int) -> None:
    """Against torchvision's ImageClassification on the PIL image (what ``weights.transforms()`` does)."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image
    from torchvision.transforms._presets import ImageClassification

    image = getattr(data, photo)()
    reference = ImageClassification(crop_size=crop, resize_size=resize)(Image.fromarray(image))
    spec = PreprocessSpec(size=(crop, crop), resize=resize, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    ours = spec(image)
    levels = ((ours - reference) * torch.tensor(spec.std).view(3, 1, 1) * 255).abs()  # in uint8 steps
    assert ours.shape == reference.shape == (3, crop, crop)
    assert float(levels.max()) <= 1.0 + 1e-3 and float((levels > 0.5).float().mean()) < 0.01


def test_uint8_images_are_resized_as_uint8() -> None:
    """A uint8 image resized in uint8 then scaled: every value is a multiple of 1/255 before normalization."""
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    x = PreprocessSpec(size=(16, 16), resize=20)(image) * 255
    torch.testing.assert_close(x, x.round(), atol=1e-4, rtol=0)
    y = PreprocessSpec(size=(16, 16), resize=20)(image.astype(np.float32) / 255) * 255  # float images stay float
    assert float((y - y.round()).abs().max()) > 0.01


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision.io decoding (0.29)
def test_rgba_drops_alpha_as_torchvision_decode_image_does(tmp_path) -> None:
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_image

    from fx2trt_pipeline.calib_data import read_image

    rgba = np.random.default_rng(1).integers(0, 255, (12, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    ours = PreprocessSpec(channels=3)(read_image(tmp_path / "a.png"))
    torchvision_rgb = decode_image(str(tmp_path / "a.png"), mode=ImageReadMode.RGB).float() / 255
    torch.testing.assert_close(ours, torchvision_rgb, atol=0, rtol=0)


def test_interpolation_is_checked_recorded_and_described() -> None:
    with pytest.raises(ConfigError, match="interpolation must be one of"):
        PreprocessSpec(interpolation="lanczos")
    spec = PreprocessSpec(size=(8, 8), resize=9, interpolation="bicubic", weights="ResNet50_Weights.IMAGENET1K_V2")
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.describe() == "resize 9, centre crop 8x8, bicubic antialiased, mean [0.0], std [1.0]"
    assert PreprocessSpec(size=(4, 6), mode="letterbox").describe().startswith("letterbox 4x6 (padded with 0.0)")
