"""The preprocessing of a run: the torchvision weights' own transforms, ``[preprocess]`` from the file, and the
command-line flags, in that order of precedence (flags win).

::

    --model mobilenet_v2 --weights w.pth  ->  the weights entry w.pth is (torchvision_weights.py), e.g.
                                              IMAGENET1K_V1: resize 256, crop 224, bilinear antialiased, ImageNet
                                              mean/std, 3 channels; --weights-tag names the entry instead
    [preprocess] size/mean/std/...        ->  replaces those values key by key
    --input-size --resize --mean --std --channels  replace both; a new size without a new resize keeps the
                                              weights' resize/crop ratio (crop 96 of IMAGENET1K_V1: resize 110)

The result carries one line saying where each value came from; the build prints it.

Example:
    >>> from fx2trt_pipeline.deploy.config import ModelSpec
    >>> choice = preprocess_choice(ModelSpec("mobilenet_v2", weights_tag="IMAGENET1K_V1"), {}, {"input_size": (96, 96)})
    >>> choice.spec.size, choice.spec.resize, choice.spec.weights
    ((96, 96), 110, 'MobileNet_V2_Weights.IMAGENET1K_V1')
    >>> preprocess_for("pkg.module:factory", {}, {}) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fx2trt_pipeline.calib_data import PreprocessSpec
from fx2trt_pipeline.deploy.config import ModelSpec
from fx2trt_pipeline.deploy.torchvision_weights import WeightsChoice, torchvision_weights, weights_enum
from fx2trt_pipeline.errors import ConfigError

#: Flag -> PreprocessSpec field.
PREPROCESS_FLAGS = {"input_size": "size", "resize": "resize", "mean": "mean", "std": "std", "channels": "channels"}
#: Flag spelling on the command line, for the line saying where values came from.
_FLAG_NAMES = {k: "--" + k.replace("_", "-") for k in PREPROCESS_FLAGS}
#: With every one of these given (a run manifest's config), the weights file is not examined.
_COMPLETE = ("size", "resize", "mean", "std", "channels")


@dataclass(frozen=True)
class PreprocessChoice:
    """The run's preprocessing and where it came from.

    Attributes:
        spec: the :class:`PreprocessSpec` (``None``: nothing describes one, e.g. ``.npz`` network inputs).
        origin: one line naming the weights entry, how it was found and which values flags or the file replaced.
        weights: the torchvision weights entry and why it was chosen (``None``: not a torchvision model).
    """

    spec: PreprocessSpec | None
    origin: str | None = None
    weights: WeightsChoice | None = None


def transforms_fields(entry: Any) -> dict[str, Any]:
    """PreprocessSpec fields of a torchvision weights entry's ``transforms()`` (``{}``: not a resize + crop).

    Example:
        >>> import torchvision
        >>> transforms_fields(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)["resize"]
        256
    """
    try:
        transforms = entry.transforms()
    except (TypeError, AttributeError):
        return {}
    crop, resize = getattr(transforms, "crop_size", None), getattr(transforms, "resize_size", None)
    if not crop or not resize:
        return {}
    interpolation = getattr(getattr(transforms, "interpolation", None), "value", "bilinear")
    return {
        "size": (int(crop[0]), int(crop[-1])),
        "resize": int(resize[0]),
        "mean": tuple(transforms.mean),
        "std": tuple(transforms.std),
        "channels": 3,
        "interpolation": interpolation,
        "antialias": bool(getattr(transforms, "antialias", True)),
        "weights": str(entry),
    }


def torchvision_defaults(source: str) -> dict[str, Any]:
    """PreprocessSpec fields from a torchvision model's DEFAULT weights' transforms (``{}`` if none).

    Example:
        >>> torchvision_defaults("resnet18")["resize"], torchvision_defaults("not_a_model")
        (256, {})
    """
    enum = weights_enum(source)
    return transforms_fields(enum.DEFAULT) if enum is not None else {}


def _rescaled_resize(base: Mapping[str, Any], size: tuple[int, int]) -> int:
    """The weights' resize for another crop size, keeping their ratio (256/224 at crop 96: 110)."""
    return int(round(max(size) * base["resize"] / max(base["size"])))


def preprocess_for(
    model: str | ModelSpec, section: Mapping[str, Any], flags: Mapping[str, Any]
) -> PreprocessSpec | None:
    """The :class:`PreprocessSpec` of :func:`preprocess_choice` (``model``: a ModelSpec, or just its source).

    Example:
        >>> preprocess_for("resnet18", {}, {"input_size": (112, 112)}).resize
        128
    """
    return preprocess_choice(model if isinstance(model, ModelSpec) else ModelSpec(model), section, flags).spec


def preprocess_choice(model: ModelSpec, section: Mapping[str, Any], flags: Mapping[str, Any]) -> PreprocessChoice:
    """The run's preprocessing: the weights entry's transforms <- ``[preprocess]`` ``section`` <- ``flags``.

    Raises:
        ConfigError: a field is invalid (e.g. ``--resize`` smaller than ``--input-size``), or ``--weights-tag``
            names no entry of the model's torchvision weights.
    """
    flagged = {PREPROCESS_FLAGS[k]: v for k, v in flags.items() if k in PREPROCESS_FLAGS}
    complete = all(k in section or k in flagged for k in _COMPLETE)
    choice = None if complete else torchvision_weights(model.source, model.weights, model.weights_tag)
    base = transforms_fields(choice.entry) if choice is not None else {}
    fields = {**base, **dict(section), **flagged}
    if not fields:
        return PreprocessChoice(None)
    sources = [f"[preprocess] {k}" for k in section] + [
        f"{_FLAG_NAMES[k]} {_flag_text(k, v)}" for k, v in flags.items() if k in PREPROCESS_FLAGS
    ]
    new_size = "size" in section or "size" in flagged
    if base and new_size and "resize" not in section and "resize" not in flagged and fields.get("size"):
        # a new crop size with the weights' resize: keep their crop ratio (224/256, 224/232)
        fields["resize"] = _rescaled_resize(base, tuple(fields["size"]))
        sources.append(f"resize {base['resize']} scaled to {fields['resize']} for crop {max(fields['size'])}")
    if not base and not {"mean", "std"} & set(fields):
        sources.append("no mean/std given: 0 and 1, images in [0, 1] (--mean/--std set them)")
    try:
        spec = PreprocessSpec.from_dict(fields)
    except TypeError as exc:
        raise ConfigError(f"Invalid preprocessing {fields}: {exc}") from exc
    return PreprocessChoice(spec, _origin(choice, sources), choice)


def _flag_text(flag: str, value: Any) -> str:
    if flag == "input_size" and len(set(value)) == 1:
        return str(value[0])
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _origin(choice: WeightsChoice | None, sources: list[str]) -> str:
    parts = []
    if choice is not None:
        parts.append(f"torchvision {choice.entry} transforms ({choice.how})")
    if sources:
        parts.append(("changed by " if choice is not None else "") + "; ".join(sources))
    return "; ".join(parts) if parts else "the run's configuration"


__all__ = [
    "PREPROCESS_FLAGS",
    "PreprocessChoice",
    "preprocess_choice",
    "preprocess_for",
    "torchvision_defaults",
    "transforms_fields",
]
