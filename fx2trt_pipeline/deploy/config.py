"""The run configuration of ``fx2trt build``: one typed object, read from TOML (or YAML) plus CLI flags.

::

    defaults (the bundled demo, or nothing for a user model) <- config file <- command-line flags
        -> RunConfig(model, inputs, preprocess, calibration, evaluation, quant, build, gate, triton, export)

A config file holds everything the Python API takes; relative paths in it are relative to the file.
Unknown sections or keys are errors (a typo must not silently fall back to a default)::

    [model]
    source = "resnet18"                  # torchvision name, or "package.module:factory"
    weights = "resnet18.pth"             # torch.load(weights_only=True): a state dict
    weights_tag = "IMAGENET1K_V1"        # its torchvision weights entry (found from the file when left out)
    output_names = ["logits"]

    [[inputs]]
    name = "images"
    shape = [-1, 3, 224, 224]
    min_shape = [1, 3, 224, 224]
    opt_shape = [8, 3, 224, 224]
    max_shape = [32, 3, 224, 224]

    [preprocess]                         # PreprocessSpec fields
    size = [224, 224]
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    channels = 3

    [calibration]
    source = "data/calib"                # image folder | .npy/.npz | COCO (+ annotations) | mnist_det:<split>
    num_samples = 256

    [evaluation]
    source = "data/val"                  # class subfolders -> top-1; COCO -> mAP
    max_images = 500

    [quant]                              # QuantConfig fields
    calibrator = "mse"                   # or "auto": score every calibrator on [evaluation], keep the best

    [build]                              # BuildOptions fields
    builder_optimization_level = 3

    [gate]
    min_cosine = 0.999                   # outputs of every INT8 backend vs the simulated model
    min_agreement = 0.95                 # share of FP32's top-1 predictions the engine side keeps
    min_fp32_cosine = 0.99               # engine-side outputs vs the FP32 model's
    engine_tolerance = 0.002             # |mAP(engine) - mAP(simulated)|
    int8_budget = 0.01                   # mAP(FP32) - mAP(simulated)

Reading a file and flags is :func:`fx2trt_pipeline.deploy.config_loader.run_config_from_sources`.

Example:
    >>> from fx2trt_pipeline.deploy.config_loader import run_config_from_sources
    >>> cfg = run_config_from_sources(None, {"calibrator": "minmax"})
    >>> cfg.model.source, cfg.quant.calibrator, cfg.calibration.source
    ('fx2trt_pipeline.models.centernet:load_demo_detector', 'minmax', 'mnist_det:calib')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fx2trt_pipeline.calib_data import PreprocessSpec
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.validate.gate import GateSpec

DEMO_MODEL = "fx2trt_pipeline.models.centernet:load_demo_detector"
DEMO_CALIBRATOR = "mse"
TASKS = ("auto", "detection", "classification", "none")
_SECTIONS = (
    "model",
    "inputs",
    "preprocess",
    "calibration",
    "evaluation",
    "quant",
    "build",
    "gate",
    "triton",
    "export",
)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how to name its engine outputs.

    Attributes:
        source: a torchvision model name (``"resnet18"``) or ``"package.module:factory"``.
        weights: state-dict file loaded with ``torch.load(weights_only=True)`` after construction.
        weights_tag: the torchvision weights entry of ``weights`` (``"IMAGENET1K_V1"``), whose transforms prepare
            the images; found from the file (name, sha256, tensors) when ``None``.
        kwargs: keyword arguments of the factory.
        name: model name in the Triton repository and the report (default: from ``source``).
        output_names: engine output names in graph-output order.
        decode: ``"package.module:function"`` mapping detector outputs to (boxes, scores, classes);
            CenterNet models use the built-in decoder.
    """

    source: str = DEMO_MODEL
    weights: Path | None = None
    weights_tag: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    output_names: tuple[str, ...] | None = None
    decode: str | None = None

    @property
    def display_name(self) -> str:
        """``name`` or one derived from the source (``load_demo_detector`` -> ``demo_detector``)."""
        if self.name:
            return self.name
        tail = self.source.split(":")[-1].split(".")[-1]
        return tail[len("load_") :] if tail.startswith("load_") else tail


@dataclass(frozen=True)
class DataSpec:
    """Calibration or evaluation data.

    Attributes:
        source: image folder, ``.npy``/``.npz`` file, COCO image folder or ``.npz`` (with
            ``annotations``), or ``mnist_det:<split>`` for the shipped MNIST detection set.
        annotations: COCO instances JSON.
        num_samples: calibration items drawn (seeded); ``None`` takes all.
        batch_size: items per batch.
        seed: seed of the calibration subset.
        max_images: evaluate only the first N items.
        task: ``auto`` | ``detection`` (COCO mAP) | ``classification`` (top-1) | ``none`` (outputs only).
        key: array name inside an ``.npz`` of preprocessed inputs.
        labels: class list file (one class per line, in model-output order) mapping class folders to
            outputs; without it folders named by class index (``285``) or WordNet id (``n02123045``) map
            directly.
        output_index: the model output holding the class scores, by index in output order or by name
            (``--output-index``; MTCNN's RNet: 1, its face probabilities after the box regression).
    """

    source: str
    annotations: Path | None = None
    num_samples: int | None = None
    batch_size: int = 8
    seed: int = 0
    max_images: int | None = None
    task: str = "auto"
    key: str | None = None
    labels: Path | None = None
    output_index: int | str = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if int(self.batch_size) <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")


@dataclass(frozen=True)
class TritonSpec:
    """Settings of the generated Triton model configuration."""

    max_queue_delay_microseconds: int = 100
    instance_count: int = 1


@dataclass(frozen=True)
class ExportSpec:
    """Optional artifacts."""

    onnx: bool = True
    opset: int = 18


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``fx2trt build`` run needs (see the module docstring for the file format)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    inputs: tuple[InputSpec, ...] | None = None
    preprocess: PreprocessSpec | None = None
    calibration: DataSpec | None = None
    evaluation: DataSpec | None = None
    quant: QuantConfig = field(default_factory=lambda: QuantConfig(show_progress=False))
    build: BuildOptions = field(default_factory=BuildOptions)
    gate: GateSpec = field(default_factory=GateSpec)
    triton: TritonSpec = field(default_factory=TritonSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    #: ``[quant] calibrator = "auto"``: score every calibrator on the evaluation data, keep the best.
    search_calibrator: bool = False
    #: ``[quant] mixed_precision = 0.01`` / ``--mixed-precision``: keep the fewest layers in float so that the
    #: agreement with FP32 (output cosine for non-classifiers) drops at most this much.
    mixed_precision: float | None = None
    #: Where ``preprocess`` came from (the weights entry and how it was found, values replaced by flags): printed
    #: by the build, not part of the configuration.
    preprocess_origin: str | None = field(default=None, compare=False)

    @property
    def is_demo(self) -> bool:
        """True when the bundled demo detector is the model."""
        return self.model.source == DEMO_MODEL and self.model.weights is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for the run manifest (``config_loader.run_config_from_dict`` reads it back)."""

        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return value

        out = {name: plain(getattr(self, name)) for name in _SECTIONS if name not in ("inputs", "quant", "build")}
        out["inputs"] = [spec.to_dict() for spec in self.inputs] if self.inputs is not None else None
        out["preprocess"] = self.preprocess.to_dict() if self.preprocess is not None else None
        out["quant"] = self.quant.to_dict()
        if self.search_calibrator:
            out["quant"]["calibrator"] = "auto"
        if self.mixed_precision is not None:
            out["quant"]["mixed_precision"] = self.mixed_precision
        out["build"] = self.build.to_dict()
        return out


__all__ = [
    "DEMO_MODEL",
    "DataSpec",
    "ExportSpec",
    "GateSpec",
    "ModelSpec",
    "RunConfig",
    "TritonSpec",
]
