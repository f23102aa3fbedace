"""Turn a :class:`~fx2trt_pipeline.deploy.config.RunConfig` into a model, datasets and batches.

* models: ``"package.module:factory"`` (called with ``kwargs``) or a torchvision model name
  (random weights unless ``weights`` is given); weights load with ``torch.load(weights_only=True)``.
* data: ``mnist_det:<split>``, an image folder (class subfolders give labels for top-1), ``.npy``/``.npz``
  arrays, or a COCO set (image folder or ``.npz`` plus an annotations JSON), all through
  ``fx2trt_pipeline.calib_data``.

Example:
    >>> from fx2trt_pipeline.deploy.config_loader import run_config_from_sources
    >>> cfg = run_config_from_sources(None)
    >>> type(load_model(cfg.model)).__name__  # the bundled demo detector
    'CenterNet'
    >>> ds = load_dataset(cfg.calibration, cfg.preprocess, role="calibration")
    >>> len(ds)
    200
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fx2trt_pipeline.calib_data import (
    CocoDetectionDataset,
    ImageFolderDataset,
    NumpyDataset,
    PreprocessSpec,
    calibration_batches,
    load_mnist_detection,
    map_classes,
)
from fx2trt_pipeline.deploy.config import DataSpec, ModelSpec
from fx2trt_pipeline.errors import CalibrationError, ConfigError, Fx2TrtError, one_line, plain_text


def resolve_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` (dots after the colon walk attributes).

    Example:
        >>> resolve_callable("fx2trt_pipeline.models.centernet:decode", "decoder").__name__
        'decode'
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} {spec!r} must be written 'package.module:function'")
    _current_directory_first(module_name)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{what} {spec!r}: cannot import module {module_name!r} ({one_line(str(exc))}); modules are found in "
            f"the current directory ({Path.cwd()}) and on PYTHONPATH"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{what} {spec!r} is not callable")
    return obj


def _current_directory_first(module_name: str) -> None:
    """Put the working directory first on ``sys.path`` when it holds the module, as ``python -m`` does.

    A console script (``fx2trt``) starts with its own bin directory as ``sys.path[0]``, so ``--model
    mymod:factory`` would not find ``./mymod.py``, and an installed module of the same name would win.
    """
    top = module_name.split(".")[0]
    cwd = Path.cwd()
    if not ((cwd / f"{top}.py").is_file() or (cwd / top).is_dir()):
        return
    if sys.path and Path(sys.path[0] or ".").resolve() == cwd.resolve():
        return
    sys.path.insert(0, str(cwd))


def _factory(source: str) -> Callable[..., Any]:
    if ":" in source:
        return resolve_callable(source, "Model factory")
    import torchvision

    try:
        return torchvision.models.get_model_builder(source)
    except ValueError as exc:
        raise ConfigError(
            f"Model {source!r} is neither 'package.module:factory' nor a torchvision model name "
            "(e.g. resnet18, mobilenet_v2; see torchvision.models.list_models())"
        ) from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (``torch.load(weights_only=True)``; ``{"state_dict": ...}`` unwrapped).

    Raises:
        ConfigError: the file is missing, holds a pickled object (e.g. a whole model) or no tensors; the
            message names the file and how to save a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Weights file not found: {path} (--weights)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refuses objects other than tensors and containers
        raise ConfigError(_unloadable(path, exc)) from exc
    for key in ("state_dict", "model_state_dict", "model"):  # common checkpoint layouts
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise ConfigError(f"Weights file {path} does not hold a state dict of tensors")
    return blob


def _unloadable(path: Path, exc: BaseException) -> str:
    """One line for a weights file torch.load(weights_only=True) refuses: a pickled class is named."""
    text = plain_text(str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"Weights file {path} holds a pickled {found.group(1)} object (a whole model?), not a state dict, and "
            "torch.load(weights_only=True) does not run pickled code; save the state dict "
            "(torch.save(model.state_dict(), 'weights.pth')) and pass that file with --weights"
        )
    return (
        f"Cannot load weights {path} with torch.load(weights_only=True): {one_line(text)}; "
        "save a plain state dict (torch.save(model.state_dict(), 'weights.pth'))"
    )


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], spec: ModelSpec) -> None:
    """Refuse weights that do not fit the model, in one line: the missing / unexpected keys and the first shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        key, file_shape, model_shape = shapes[0]
        parts.append(
            f"{len(shapes)} tensor(s) differ in shape, the first {key}: {file_shape} in the file, {model_shape} in "
            "the model"
        )
    if missing:
        parts.append(f"{len(missing)} missing key(s) {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {unexpected[:3]}")
    if unexpected and all(k.startswith("module.") for k in unexpected):
        remedy = "the keys carry DataParallel's 'module.' prefix: save model.module.state_dict() instead"
    elif shapes and not (missing or unexpected):
        remedy = "build the model the weights were trained as (e.g. [model] kwargs = { num_classes = N } in --config)"
    else:
        remedy = "give the --model (and [model] kwargs) the weights were saved from"
    raise ConfigError(f"Weights {spec.weights} do not fit {spec.source}: {'; '.join(parts)}; {remedy}")


def load_model(spec: ModelSpec) -> nn.Module:
    """Build the model of ``spec`` (eval mode, CPU) and load its weights.

    Raises:
        ConfigError: the factory cannot be found, does not return an ``nn.Module``, or the weights
            do not fit the model (the first mismatching keys are named).
    """
    factory = _factory(spec.source)
    try:
        model = factory(**dict(spec.kwargs))
    except Fx2TrtError:
        raise
    except TypeError as exc:
        raise ConfigError(f"Model factory {spec.source!r} refused kwargs {dict(spec.kwargs)}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Model factory {spec.source!r} returned {type(model).__name__}, not a torch.nn.Module")
    if spec.weights is not None:
        state = read_state_dict(Path(spec.weights))
        _check_fits(model, state, spec)
        model.load_state_dict(state)
    return model.eval()


def _spec_or_error(preprocess: PreprocessSpec | None, source: str) -> PreprocessSpec:
    if preprocess is None:
        raise ConfigError(
            f"Data {source!r} holds raw images and nothing says how to prepare them: give --input-size, --mean "
            "and --std (and --resize, --channels) as the model was trained, or the same keys in a [preprocess] "
            "section of --config"
        )
    return preprocess


def load_dataset(spec: DataSpec, preprocess: PreprocessSpec | None, role: str) -> Any:
    """The dataset a :class:`DataSpec` names (``role`` is ``"calibration"`` or ``"evaluation"``).

    Raises:
        CalibrationError / ConfigError: missing files, unreadable data, or images without a
            preprocessing spec.
    """
    source = spec.source
    if source.startswith("mnist_det:"):
        return load_mnist_detection(source.split(":", 1)[1], preprocess)
    path = Path(source)
    if spec.annotations is not None:
        return CocoDetectionDataset(path, spec.annotations, _spec_or_error(preprocess, source))
    if path.is_dir():
        labelled = role == "evaluation" and spec.task in ("auto", "classification") and _has_class_folders(path)
        if spec.task == "classification" and not labelled:
            raise ConfigError(f"Top-1 evaluation needs {path} laid out as <class>/<image> subfolders")
        return ImageFolderDataset(path, _spec_or_error(preprocess, source), with_labels=labelled)
    if path.suffix.lower() in (".npy", ".npz"):
        # uint8 arrays are raw images (preprocessed here); float arrays are network inputs already.
        dataset = NumpyDataset(path, None, key=spec.key)
        if dataset.array.dtype == "uint8":
            dataset = NumpyDataset(path, _spec_or_error(preprocess, source), key=spec.key)
        return dataset
    raise CalibrationError(
        f"{role.capitalize()} data {source!r} not found or not understood: give an image "
        "folder, a .npy/.npz file, a COCO set (with annotations) or mnist_det:<split>"
    )


def _has_class_folders(path: Path) -> bool:
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    loose = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    return bool(subdirs) and not loose


def task_of(spec: DataSpec, dataset: Any) -> str:
    """The task: ``detection`` for COCO sets, ``classification`` for labelled folders, else ``none``."""
    if spec.task != "auto":
        return spec.task
    if isinstance(dataset, CocoDetectionDataset):
        return "detection"
    if isinstance(dataset, ImageFolderDataset) and dataset.with_labels:
        return "classification"
    return "none"


def calib_batches(spec: DataSpec, dataset: Any) -> list[torch.Tensor]:
    """The calibration batches (seeded subset), materialised once: prepare, calibrate, export reuse them."""
    return list(calibration_batches(dataset, spec.num_samples, int(spec.batch_size), spec.seed, show_progress=False))


def _class_output(model: nn.Module, dataset: Any, output: int | str = 0) -> torch.Tensor:
    """The model's class output (index or name, :func:`~fx2trt_pipeline.validate.scoring.class_output`) on item 0."""
    from fx2trt_pipeline.capture.tracer import flatten_outputs
    from fx2trt_pipeline.validate.scoring import class_output

    item = dataset[0]
    x = torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)[None].float()
    with torch.no_grad():
        result = model(x)
    tensors = flatten_outputs(result)
    names = list(result) if isinstance(result, dict) and len(result) == len(tensors) else None
    return class_output(dict(zip(names or [f"output_{i}" for i in range(len(tensors))], tensors)), output)


def attach_labels(dataset: Any, model: nn.Module, spec: DataSpec) -> str | None:
    """Map a labelled image folder's class folders to the model's outputs; says how (``None``: no folders).

    Raises:
        ConfigError: the folders cannot match the outputs, or ``labels`` was given for data without class
            folders, or the model does not output ``(N, classes)`` logits.
    """
    if not (isinstance(dataset, ImageFolderDataset) and dataset.with_labels):
        if spec.labels is not None:
            raise ConfigError(
                f"--labels {spec.labels} maps class folders to outputs, but {spec.source} has no "
                "class subfolders (root/<class>/image)"
            )
        return None
    logits = _class_output(model, dataset, spec.output_index)
    if logits.ndim != 2:
        raise ConfigError(
            f"Top-1 on the class folders of {spec.source} needs (N, classes) scores, but the model's output "
            f"{spec.output_index} has shape {tuple(logits.shape)}; choose the class output with --output-index, "
            "or use --task none"
        )
    label_map = map_classes(dataset.classes, int(logits.shape[1]), spec.labels)
    dataset.use_label_map(label_map)
    return f"{len(dataset.classes)} class folders -> {int(logits.shape[1])} outputs: {label_map.how}"


__all__ = [
    "attach_labels",
    "calib_batches",
    "load_dataset",
    "load_model",
    "read_state_dict",
    "resolve_callable",
    "task_of",
]
