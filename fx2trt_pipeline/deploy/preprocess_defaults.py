"""The preprocessing of a run: ``[preprocess]`` from the file, the torchvision weights' own transforms,
and the command-line flags, in that order of precedence (flags win).

::

    --model mobilenet_v2 (a torchvision name)  ->  get_model_weights("mobilenet_v2").DEFAULT.transforms()
                                                   resize 232, crop 224, ImageNet mean/std, 3 channels
    [preprocess] size/mean/std/channels/resize ->  replaces those defaults key by key
    --input-size --resize --mean --std --channels  replace both

Reading a torchvision weights enum downloads nothing: the transforms are metadata of the enum.

Example:
    >>> spec = preprocess_for("mobilenet_v2", {}, {"input_size": (160, 160), "resize": 176})
    >>> spec.size, spec.resize, spec.mean
    ((160, 160), 176, (0.485, 0.456, 0.406))
    >>> preprocess_for("pkg.module:factory", {}, {}) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fx2trt_pipeline.calib_data import PreprocessSpec
from fx2trt_pipeline.errors import ConfigError

#: Flag -> PreprocessSpec field.
PREPROCESS_FLAGS = {"input_size": "size", "resize": "resize", "mean": "mean", "std": "std", "channels": "channels"}


def torchvision_defaults(source: str) -> dict[str, Any]:
    """PreprocessSpec fields from a torchvision model's default weights' transforms (``{}`` if none).

    Example:
        >>> torchvision_defaults("resnet18")["resize"], torchvision_defaults("not_a_model")
        (256, {})
    """
    if ":" in source:
        return {}
    try:
        import torchvision

        transforms = torchvision.models.get_model_weights(source).DEFAULT.transforms()
    except (ImportError, ValueError, KeyError, AttributeError, TypeError):
        return {}
    crop, resize = getattr(transforms, "crop_size", None), getattr(transforms, "resize_size", None)
    if not crop or not resize:
        return {}
    return {
        "size": (int(crop[0]), int(crop[-1])),
        "resize": int(resize[0]),
        "mean": tuple(transforms.mean),
        "std": tuple(transforms.std),
        "channels": 3,
    }


def preprocess_for(source: str, section: Mapping[str, Any], flags: Mapping[str, Any]) -> PreprocessSpec | None:
    """The run's :class:`PreprocessSpec`, or ``None`` when nothing describes one (e.g. ``.npz`` inputs).

    Raises:
        ConfigError: a field is invalid (e.g. ``--resize`` smaller than ``--input-size``).
    """
    fields = {**torchvision_defaults(source), **dict(section)}
    fields.update({PREPROCESS_FLAGS[k]: v for k, v in flags.items() if k in PREPROCESS_FLAGS})
    if not fields:
        return None
    if (
        "size" in fields
        and "resize" in fields
        and "size" in {PREPROCESS_FLAGS[k] for k in flags if k in PREPROCESS_FLAGS}
        and "resize" not in flags
    ):
        # a new --input-size with the weights' resize: keep torchvision's crop ratio (224/256, 224/232)
        default = torchvision_defaults(source)
        if default and fields["resize"] == default.get("resize"):
            ratio = default["resize"] / max(default["size"])
            fields["resize"] = int(round(max(fields["size"]) * ratio))
    try:
        return PreprocessSpec.from_dict(fields)
    except TypeError as exc:
        raise ConfigError(f"Invalid preprocessing {fields}: {exc}") from exc


__all__ = ["PREPROCESS_FLAGS", "preprocess_for", "torchvision_defaults"]
