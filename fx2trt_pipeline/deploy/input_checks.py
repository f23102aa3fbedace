"""Check, before capture, that the prepared data fits the model, and name the flag that fixes it when it does not.

::

    capture_notes(config, data, model) the preprocessing and its origin, image_notes, "no --eval-data" (optimistic)
    image_notes(dataset, model)        greyscale / RGB images vs the model's first convolution  -> --channels N
                                       RGBA images: their alpha channel is dropped; said once per folder
    check_input_fits(model, batch)     one forward pass on one prepared item; a shape failure   -> --input-size

Without these, a wrong input size ends in torch's ``mat1 and mat2 shapes cannot be multiplied`` and greyscale
images in a capture error, neither of which names what to change.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    >>> check_input_fits(model, torch.zeros(1, 3, 8, 8), None, "calib.npy")
    >>> check_input_fits(model, torch.zeros(1, 3, 9, 9), None, "calib.npy")
    Traceback (most recent call last):
    ...
    fx2trt_pipeline.errors.ConfigError: The model cannot run on the inputs of calib.npy, shaped (1, 3, 9, 9) ...
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from fx2trt_pipeline.calib_data import ImageFolderDataset, PreprocessSpec
from fx2trt_pipeline.errors import ConfigError, one_line

#: Channels a PIL mode gives after read_image (which converts every mode but L, RGB and RGBA to RGB).
_MODE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 3}
#: torch's words for a failure caused by the input's shape (conv / linear / reshape / pooling messages).
_SHAPE_WORDS = re.compile(r"shape|size|dimension|channels", re.IGNORECASE)
_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels", re.IGNORECASE)


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution (module order), ``None`` without one."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def _example(files: list[Any]) -> str:
    return f"{len(files)} image(s), e.g. {files[0]}"


def image_notes(dataset: Any, model: nn.Module, role: str) -> list[str]:
    """Lines to print about the images' channels; refuses images whose channels cannot fit the model.

    Raises:
        ConfigError: greyscale images for a model whose first convolution takes 3 channels (or RGB images for
            one that takes 1), or a mix of both, while ``--channels`` is not given; names ``--channels N``.
    """
    if not isinstance(dataset, ImageFolderDataset):
        return []
    modes, spec = dataset.modes, dataset.spec
    expected = first_conv_channels(model)
    native = {_MODE_CHANNELS.get(mode, 3) for mode in modes}
    grey, colour = modes.get("L", []), [f for m, fs in modes.items() if m != "L" for f in fs]
    if spec.channels is None and (len(native) > 1 or (expected is not None and native != {expected})):
        want = expected if expected in (1, 3) else (3 if colour else 1)
        found = f"{_example(grey)} are greyscale" if want == 3 else f"{_example(colour)} are colour"
        needs = (
            f"the model's first convolution takes {expected} channels"
            if expected
            else "a batch needs one channel count"
        )
        raise ConfigError(
            f"{role.capitalize()} data {dataset.root}: {found}, but {needs}; give --channels {want} "
            f"([preprocess] channels = {want}) to convert them"
        )
    if spec.channels is not None and expected is not None and spec.channels != expected:
        raise ConfigError(
            f"--channels {spec.channels} makes {spec.channels}-channel inputs, but the model's first convolution "
            f"takes {expected}; give --channels {expected}"
        )
    notes = []
    if modes.get("RGBA"):
        notes.append(
            f"{role} data: {_example(modes['RGBA'])} have an alpha channel: it is dropped, not composited "
            "(as torchvision.io.decode_image(mode=RGB) and PIL's convert('RGB') do)"
        )
    if grey and spec.channels == 3:
        notes.append(f"{role} data: {_example(grey)} are greyscale: repeated into 3 channels (--channels 3)")
    return notes


def capture_notes(config: Any, dataset: Any, model: nn.Module) -> list[str]:
    """The capture step's lines about the data: the preprocessing and where it came from, the calibration
    images' channels (:func:`image_notes`), and, without evaluation data, that agreement is measured on it.

    Raises:
        ConfigError: as :func:`image_notes`.
    """
    lines = []
    if config.preprocess is not None:
        lines.append(
            f"preprocessing: {config.preprocess.describe()}; from {config.preprocess_origin or 'the configuration'}"
        )
    lines += image_notes(dataset, model, "calibration")
    if config.evaluation is None:  # the report says so too (manifest "eval_on_calibration")
        lines.append(
            "no --eval-data: INT8 is compared with FP32 on calibration images, the data its scales were fitted to, "
            "so the agreement is optimistic; give --eval-data with other images for a fair figure"
        )
    return lines


def check_input_fits(model: nn.Module, batch: torch.Tensor, preprocess: PreprocessSpec | None, source: str) -> None:
    """Run the model once on one prepared item; a failure caused by its shape names ``--input-size``.

    Raises:
        ConfigError: the model refuses the input's shape: ``--channels`` or ``--input-size`` (or, for arrays of
            network inputs, the array's shape) is named with torch's message.
    """
    x = batch[:1]
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as exc:
        message = one_line(str(exc))
        if not _SHAPE_WORDS.search(message):
            return  # not about the input's shape: capture reports it with the node that failed
        raise ConfigError(_shape_failure(x, preprocess, source, message)) from exc


def _shape_failure(x: torch.Tensor, preprocess: PreprocessSpec | None, source: str, message: str) -> str:
    shape = tuple(x.shape)
    channels = _CHANNELS.search(message)
    if channels and preprocess is not None:
        want = int(channels.group(1))
        return (
            f"The model's first convolution takes {want} channels but the images of {source} give "
            f"{int(channels.group(2))} (torch: {message}); give --channels {want}"
        )
    if preprocess is None:
        return (
            f"The model cannot run on the inputs of {source}, shaped {shape} (torch: {message}); store the arrays "
            "at the shape the model takes, or give raw uint8 images with --input-size"
        )
    now = "x".join(str(v) for v in preprocess.size) if preprocess.size else "each image's own size"
    return (
        f"The model cannot run on the inputs the preprocessing makes from {source}, shaped {shape} (input size "
        f"{now}; torch: {message}); give the input size the model was made for with --input-size"
    )


__all__ = ["capture_notes", "check_input_fits", "first_conv_channels", "image_notes"]
