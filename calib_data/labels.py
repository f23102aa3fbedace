"""Which model output each class folder stands for.

A folder of class subfolders says nothing about the model's output order; position among the folders is
right only when the folders are exactly the model's classes. So, in this order:

* ``--labels FILE``: one class per line in output order; a folder matches a line by the whole line, its
  first word (``n02123045 tabby, tabby cat``) or one of its comma-separated names;
* folders named by output index (``eval/285/``) map to that output;
* folders named by WordNet id (``eval/n02123045/``) map to ImageNet-1k's order (the sorted synset ids,
  shipped in ``imagenet_wnids.txt``) when the model has 1000 outputs;
* otherwise the sorted folder names are the outputs, which needs one folder per output.

Anything else is a :class:`~fx2trt_pipeline.errors.ConfigError` naming the folders and the remedy.

Example:
    >>> map_classes(["285", "967"], 1000).index, map_classes(["285", "967"], 1000).how
    ({'285': 285, '967': 967}, 'folder names are output indices')
    >>> map_classes(["n02123045", "n07920052"], 1000).index
    {'n02123045': 281, 'n07920052': 967}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fx2trt_pipeline.errors import ConfigError

WNID = re.compile(r"^n\d{8}$")
IMAGENET_WNIDS_FILE = Path(__file__).with_name("imagenet_wnids.txt")
REMEDY = (
    "name the class folders by output index (eval/285/...) or by WordNet id (eval/n02123045/...), "
    "or give --labels FILE (one class per line, in the model's output order)"
)


@dataclass(frozen=True)
class LabelMap:
    """Class folder name -> model output index, and how the mapping was found (for the report)."""

    index: dict[str, int]
    how: str


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """ImageNet-1k's WordNet ids in output order (index 281 is ``n02123045``, tabby cat).

    Example:
        >>> imagenet_wnids()[281], len(imagenet_wnids())
        ('n02123045', 1000)
    """
    return tuple(IMAGENET_WNIDS_FILE.read_text(encoding="utf-8").split())


def read_labels_file(path: str | Path) -> list[str]:
    """The lines of a labels file (one class per line, in output order; blank lines end nothing).

    Raises:
        ConfigError: the file is missing or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Labels file not found: {path}; give one class name per line, in output order")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"Labels file {path} is empty; give one class name per line, in output order")
    return lines


def _names_of(line: str) -> set[str]:
    first = line.split()[0] if line.split() else ""
    return {
        line,
        first,
        *(part.strip() for part in line.split(",")),
        *(part.strip() for part in line[len(first) :].split(",")),
    } - {""}


def _from_labels_file(classes: Sequence[str], num_outputs: int, path: Path) -> LabelMap:
    lines = read_labels_file(path)
    if len(lines) != num_outputs:
        raise ConfigError(
            f"Labels file {path} has {len(lines)} lines but the model has {num_outputs} outputs; "
            "give one line per output, in output order"
        )
    lookup: dict[str, int] = {}
    for i, line in enumerate(lines):
        for name in _names_of(line):
            lookup.setdefault(name, i)
    missing = [c for c in classes if c not in lookup]
    if missing:
        raise ConfigError(
            f"Class folder(s) {missing[:5]} match no line of {path}; a folder matches a whole "
            "line, its first word or one of its comma-separated names"
        )
    return LabelMap({c: lookup[c] for c in classes}, f"labels file {path.name}")


def map_classes(classes: Sequence[str], num_outputs: int, labels_file: str | Path | None = None) -> LabelMap:
    """Map class folder names to the model's output indices (see the module docstring for the rules).

    Args:
        classes: the class folder names.
        num_outputs: how many classes the model predicts (its logits' width).
        labels_file: optional class list, one per line in output order.

    Raises:
        ConfigError: the folders cannot be matched to the outputs; the message names them and the remedy.

    Example:
        >>> map_classes(["cat", "dog"], 2).how
        'sorted folder names are the outputs (one folder per output)'
        >>> map_classes(["cat", "dog"], 1000)
        Traceback (most recent call last):
        ...
        fx2trt_pipeline.errors.ConfigError: 2 class folders (cat, dog) cannot be matched to the model's ...
    """
    classes = list(classes)
    if labels_file is not None:
        return _from_labels_file(classes, num_outputs, Path(labels_file))
    if classes and all(c.isdigit() for c in classes):
        too_big = [c for c in classes if int(c) >= num_outputs]
        if too_big:
            raise ConfigError(
                f"Class folder(s) {too_big[:5]} name output indices, but the model has only "
                f"{num_outputs} outputs (0..{num_outputs - 1})"
            )
        return LabelMap({c: int(c) for c in classes}, "folder names are output indices")
    if classes and all(WNID.match(c) for c in classes):
        if num_outputs != len(imagenet_wnids()):
            raise ConfigError(
                f"Class folders are WordNet ids (e.g. {classes[0]}), which map to ImageNet-1k's 1000 "
                f"outputs, but the model has {num_outputs}; give --labels FILE"
            )
        order = {w: i for i, w in enumerate(imagenet_wnids())}
        unknown = [c for c in classes if c not in order]
        if unknown:
            raise ConfigError(f"WordNet id folder(s) {unknown[:5]} are not ImageNet-1k classes; give --labels FILE")
        return LabelMap({c: order[c] for c in classes}, "WordNet ids in ImageNet-1k order")
    if len(classes) == num_outputs:
        return LabelMap(
            {c: i for i, c in enumerate(sorted(classes))}, "sorted folder names are the outputs (one folder per output)"
        )
    shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
    raise ConfigError(
        f"{len(classes)} class folders ({shown}) cannot be matched to the model's {num_outputs} outputs: {REMEDY}"
    )


__all__ = ["IMAGENET_WNIDS_FILE", "LabelMap", "imagenet_wnids", "map_classes", "read_labels_file"]
