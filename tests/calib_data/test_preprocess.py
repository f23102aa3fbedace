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
