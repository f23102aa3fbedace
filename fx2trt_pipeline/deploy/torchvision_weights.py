"""Which torchvision weights a weights file is, so that its own transforms prepare the images.

torchvision publishes several weights per architecture, each with its own preprocessing
(``MobileNet_V2_Weights.IMAGENET1K_V1``: resize 256, crop 224; ``IMAGENET1K_V2``: resize 232, crop 224).
Images prepared with another entry's transforms cost accuracy, so the entry is found, in this order::

    --weights-tag IMAGENET1K_V1        named by the user (also "MobileNet_V2_Weights.IMAGENET1K_V1", "DEFAULT")
    file name == the entry's url file  mobilenet_v2-b0353104.pth
    sha256(file) starts with its hash  the hub's own check: the "b0353104" of the url file (a renamed copy)
    the tensors' fingerprint           a copy re-saved with torch.save (other bytes, same tensors); known for
                                       the checkpoints in KNOWN_TENSOR_FINGERPRINTS
    none of these                      DEFAULT's transforms, and the console says so and names --weights-tag

Nothing is downloaded: transforms and urls are metadata of torchvision's weights enums.

Example:
    >>> choice = torchvision_weights("mobilenet_v2", None, "IMAGENET1K_V1")
    >>> str(choice.entry), choice.entry.transforms().resize_size, choice.how
    ('MobileNet_V2_Weights.IMAGENET1K_V1', [256], '--weights-tag IMAGENET1K_V1')
    >>> torchvision_weights("package.module:factory", None, None) is None
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from fx2trt_pipeline.errors import ConfigError

#: sha256 of a state dict's tensors (:func:`tensor_fingerprint`) -> the torchvision url file it was published as.
#: Only checkpoints whose tensors were hashed here are listed (``python -m
#: fx2trt_pipeline.deploy.torchvision_weights FILE`` prints a file's fingerprint); other copies are found by
#: name or sha256, or named with ``--weights-tag``.
KNOWN_TENSOR_FINGERPRINTS = {
    "c2712c86fd0dc129ffb96d6f8d29bfd2cead0007a8625326ab24cf238c3372b5": "mobilenet_v2-b0353104.pth",
}


@dataclass(frozen=True)
class WeightsChoice:
    """The torchvision weights entry whose transforms a run uses, and why.

    Attributes:
        entry: a torchvision ``WeightsEnum`` member (e.g. ``MobileNet_V2_Weights.IMAGENET1K_V1``).
        how: why this entry, for the console (``"--weights-tag IMAGENET1K_V1"``, ``"file name ..."``).
        recognised: ``False`` when the entry is DEFAULT only because nothing named or matched one.
    """

    entry: Any
    how: str
    recognised: bool = True


def url_file(entry: Any) -> str:
    """The file name of a weights entry's url (``mobilenet_v2-b0353104.pth``)."""
    return Path(urlparse(entry.url).path).name


def _hash_prefix(entry: Any) -> str | None:
    """The sha256 prefix torchvision's hub checks (``b0353104`` of ``mobilenet_v2-b0353104.pth``)."""
    stem = Path(url_file(entry)).stem
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    return prefix.lower() if len(prefix) >= 6 and all(c in "0123456789abcdefABCDEF" for c in prefix) else None


def weights_enum(model: str) -> Any | None:
    """torchvision's weights enum of a model name (``None``: not a torchvision model, or no weights)."""
    if ":" in model:
        return None
    try:
        import torchvision

        return torchvision.models.get_model_weights(model)
    except (ImportError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _entries(enum: Any) -> list[Any]:
    return list(enum.__members__.values())


def entry_names(enum: Any) -> str:
    """``"IMAGENET1K_V1, IMAGENET1K_V2 (DEFAULT)"``: the names ``--weights-tag`` takes."""
    default = getattr(enum, "DEFAULT", None)
    names = [e.name + (" (DEFAULT)" if e is default else "") for e in dict.fromkeys(_entries(enum))]
    return ", ".join(names)


def _by_tag(enum: Any, model: str, tag: str) -> Any:
    name = tag.strip()
    if "." in name:
        cls, _, name = name.rpartition(".")
        if cls != enum.__name__:
            raise ConfigError(f"--weights-tag {tag!r} names {cls} weights, but --model {model} has {enum.__name__}")
    members = {k.upper(): v for k, v in enum.__members__.items()}
    if name.upper() not in members:
        raise ConfigError(
            f"--weights-tag {tag!r} is not a torchvision weights entry of {model}; give one of {entry_names(enum)}"
        )
    return members[name.upper()]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's keys, dtypes, shapes and tensor bytes: the same for every copy of the tensors.

    Example:
        >>> a = tensor_fingerprint({"w": torch.ones(2)})
        >>> a == tensor_fingerprint({"w": torch.ones(2).clone()}), a == tensor_fingerprint({"w": torch.zeros(2)})
        (True, False)
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _by_tensors(enum: Any, path: Path) -> Any | None:
    known = {url: fp for fp, url in KNOWN_TENSOR_FINGERPRINTS.items()}
    candidates = [e for e in dict.fromkeys(_entries(enum)) if url_file(e) in known]
    if not candidates:
        return None  # no known fingerprint for this architecture: the file is not even read
    from fx2trt_pipeline.deploy.sources import read_state_dict

    try:
        fingerprint = tensor_fingerprint(read_state_dict(path))
    except ConfigError:  # not a state dict: loading the model says so, with its remedy
        return None
    return next((e for e in candidates if known[url_file(e)] == fingerprint), None)


def _recognise(enum: Any, path: Path) -> WeightsChoice | None:
    entries = list(dict.fromkeys(_entries(enum)))
    for entry in entries:
        if path.name == url_file(entry):
            return WeightsChoice(entry, f"the weights file is named {url_file(entry)}, as torchvision publishes it")
    if not path.is_file():
        return None
    digest = file_sha256(path)
    for entry in entries:
        prefix = _hash_prefix(entry)
        if prefix and digest.startswith(prefix):
            return WeightsChoice(entry, f"{path.name} has the sha256 of torchvision's {url_file(entry)} ({prefix}...)")
    entry = _by_tensors(enum, path)
    if entry is not None:
        return WeightsChoice(entry, f"{path.name} holds the tensors of torchvision's {url_file(entry)}")
    return None


def torchvision_weights(model: str, weights: Path | None, tag: str | None) -> WeightsChoice | None:
    """The weights entry whose transforms prepare images for ``model`` (``None``: not a torchvision model).

    Args:
        model: ``--model`` (a torchvision name; ``"package.module:factory"`` gives ``None``).
        weights: the ``--weights`` file, if any.
        tag: ``--weights-tag`` (``IMAGENET1K_V1``, ``MobileNet_V2_Weights.IMAGENET1K_V1`` or ``DEFAULT``).

    Raises:
        ConfigError: ``tag`` is not an entry of the model's weights, or ``model`` has no torchvision weights.
    """
    enum = weights_enum(model)
    if enum is None:
        if tag is not None:
            raise ConfigError(
                f"--weights-tag {tag!r} names torchvision weights, but --model {model} is not a torchvision model "
                "with weights; give its preprocessing with --input-size/--resize/--mean/--std/--channels"
            )
        return None
    if tag is not None:
        return WeightsChoice(_by_tag(enum, model, tag), f"--weights-tag {tag}")
    default = enum.DEFAULT
    if weights is None:
        return WeightsChoice(default, "no --weights: random weights, DEFAULT's transforms", recognised=False)
    found = _recognise(enum, Path(weights))
    if found is not None:
        return found
    if len(set(_entries(enum))) == 1:
        return WeightsChoice(default, f"{model} has one torchvision weights entry, {default.name}")
    return WeightsChoice(
        default,
        f"{Path(weights).name} is not a torchvision checkpoint known by file name, sha256 or tensors, so DEFAULT's "
        f"transforms are used; if it was trained with another entry's, give --weights-tag ({entry_names(enum)})",
        recognised=False,
    )


__all__ = [
    "KNOWN_TENSOR_FINGERPRINTS",
    "WeightsChoice",
    "entry_names",
    "file_sha256",
    "tensor_fingerprint",
    "torchvision_weights",
    "url_file",
    "weights_enum",
]


if __name__ == "__main__":  # python -m fx2trt_pipeline.deploy.torchvision_weights FILE: its tensor fingerprint
    import sys

    from fx2trt_pipeline.deploy.sources import read_state_dict

    for arg in sys.argv[1:]:
        print(tensor_fingerprint(read_state_dict(Path(arg))), arg)
