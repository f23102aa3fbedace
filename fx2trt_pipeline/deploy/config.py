"""The run configuration of ``fx2trt build``: one typed object, read from TOML (or YAML) plus CLI flags.

::

    defaults (the bundled demo, or nothing for a user model) <- config file <- command-line flags
        -> RunConfig(model, inputs, preprocess, calibration, evaluation, quant, build, gate, triton, export)

A config file holds everything the Python API takes; relative paths in it are relative to the file.
Unknown sections or keys are errors (a typo must not silently fall back to a default)::

    [model]
    source = "resnet18"                  # torchvision name, or "package.module:factory"
    weights = "resnet18.pth"             # torch.load(weights_only=True): a state dict
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
    calibrator = "entropy"               # or "auto": score every calibrator on [evaluation], keep the best

    [build]                              # BuildOptions fields
    builder_optimization_level = 3

    [gate]
    min_cosine = 0.999                   # outputs of every INT8 backend vs the simulated model
    engine_tolerance = 0.002             # |mAP(engine) - mAP(simulated)|
    int8_budget = 0.01                   # mAP(FP32) - mAP(simulated)

Example:
    >>> cfg = RunConfig.from_sources(None, {"calibrator": "minmax"})
    >>> cfg.model.source, cfg.quant.calibrator, cfg.calibration.source
    ('fx2trt_pipeline.models.centernet:load_demo_detector', 'minmax', 'mnist_det:calib')
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from fx2trt_pipeline.build.options import BuildOptions
from fx2trt_pipeline.calib_data import PreprocessSpec
from fx2trt_pipeline.convert.inputs import InputSpec
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.validate.gate import DEFAULT_ENGINE_TOLERANCE, DEFAULT_INT8_BUDGET

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


def _checked(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    return dict(data)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how to name its engine outputs.

    Attributes:
        source: a torchvision model name (``"resnet18"``) or ``"package.module:factory"``.
        weights: state-dict file loaded with ``torch.load(weights_only=True)`` after construction.
        kwargs: keyword arguments of the factory.
        name: model name in the Triton repository and the report (default: from ``source``).
        output_names: engine output names in graph-output order.
        decode: ``"package.module:function"`` mapping detector outputs to (boxes, scores, classes);
            CenterNet models use the built-in decoder.
    """

    source: str = DEMO_MODEL
    weights: Optional[Path] = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: Optional[str] = None
    output_names: Optional[tuple[str, ...]] = None
    decode: Optional[str] = None

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
    """

    source: str
    annotations: Optional[Path] = None
    num_samples: Optional[int] = None
    batch_size: int = 8
    seed: int = 0
    max_images: Optional[int] = None
    task: str = "auto"
    key: Optional[str] = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if int(self.batch_size) <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")


@dataclass(frozen=True)
class GateSpec:
    """Accuracy thresholds (metric values in [0, 1]: 0.003 is 0.3 mAP points); ``None`` disables a check.

    Attributes:
        min_cosine: smallest output cosine of each INT8 backend vs the simulated model (output parity).
        engine_tolerance: largest ``|metric(engine) - metric(simulated)|`` (``validate.gate``).
        int8_budget: largest ``metric(FP32) - metric(simulated INT8)`` (``validate.gate``).
        min_metric: smallest acceptable task metric of the engine backend.
    """

    min_cosine: Optional[float] = 0.999
    engine_tolerance: float = DEFAULT_ENGINE_TOLERANCE
    int8_budget: Optional[float] = DEFAULT_INT8_BUDGET
    min_metric: Optional[float] = None


@dataclass(frozen=True)
class TritonSpec:
    """Settings of the generated Triton model configuration."""

    max_queue_delay_microseconds: int = 100
    instance_count: int = 1


@dataclass(frozen=True)
class ExportSpec:
    """Optional artifacts."""

    onnx: bool = True
    opset: int = 17


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``fx2trt build`` run needs (see the module docstring for the file format)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    inputs: Optional[tuple[InputSpec, ...]] = None
    preprocess: Optional[PreprocessSpec] = None
    calibration: Optional[DataSpec] = None
    evaluation: Optional[DataSpec] = None
    quant: QuantConfig = field(default_factory=lambda: QuantConfig(show_progress=False))
    build: BuildOptions = field(default_factory=BuildOptions)
    gate: GateSpec = field(default_factory=GateSpec)
    triton: TritonSpec = field(default_factory=TritonSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    #: ``[quant] calibrator = "auto"``: score every calibrator on the evaluation data, keep the best.
    search_calibrator: bool = False

    @property
    def is_demo(self) -> bool:
        """True when the bundled demo detector is the model."""
        return self.model.source == DEMO_MODEL and self.model.weights is None

    @classmethod
    def from_sources(cls, path: Optional[Path], overrides: Optional[Mapping[str, Any]] = None) -> "RunConfig":
        """Defaults, then the config file at ``path`` (if any), then flat CLI ``overrides``.

        ``overrides`` keys: ``model``, ``weights``, ``calib_data``, ``calib_annotations``, ``eval_data``,
        ``eval_annotations``, ``task``, ``calibrator``, ``percentile``, ``num_calib_samples``,
        ``calib_batch_size``, ``max_eval_images``, ``name``, ``onnx`` (``None`` values are ignored).
        """
        data = load_config_file(path) if path is not None else {}
        base = path.resolve().parent if path is not None else Path.cwd()
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        return _build(data, base, overrides, str(path) if path is not None else "defaults")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (recorded in the run manifest; :meth:`from_dict` reads it back)."""

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

        out = {
            name: plain(getattr(self, name)) for name in _SECTIONS if name not in ("inputs", "quant", "build")
        }
        out["inputs"] = [spec.to_dict() for spec in self.inputs] if self.inputs is not None else None
        out["preprocess"] = self.preprocess.to_dict() if self.preprocess is not None else None
        out["quant"] = self.quant.to_dict()
        if self.search_calibrator:
            out["quant"]["calibrator"] = "auto"
        out["build"] = self.build.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict` (paths are taken as written)."""
        return _build({k: v for k, v in data.items() if v is not None}, Path.cwd(), {}, "run manifest")


def load_config_file(path: Path) -> dict[str, Any]:
    """Parse a ``.toml`` (tomllib) or ``.yaml``/``.yml`` (PyYAML, when installed) config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif suffix in (".yaml", ".yml"):
            try:
                yaml = importlib.import_module("yaml")
            except ImportError as exc:
                raise ConfigError(
                    f"{path}: YAML config files need PyYAML (pip install 'fx2trt-pipeline[yaml]'); "
                    "or write the same keys as TOML"
                ) from exc
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("yaml"):
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
        raise
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of sections {list(_SECTIONS)}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; valid sections are {list(_SECTIONS)}")
    return data


def _path(value: Any, base: Path) -> Optional[Path]:
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


def _source(value: str, base: Path) -> str:
    # "mnist_det:calib" and other "name:split" sources are not paths; everything else is.
    if value.startswith("mnist_det:") or Path(value).is_absolute():
        return value
    return str(base / value)


def _data(section: Mapping[str, Any], base: Path, where: str) -> DataSpec:
    d = _checked(DataSpec, section, where)
    if "source" not in d:
        raise ConfigError(
            f"{where}: 'source' is required (an image folder, .npy/.npz file or mnist_det:<split>)"
        )
    d["source"] = _source(str(d["source"]), base)
    d["annotations"] = _path(d.get("annotations"), base)
    return DataSpec(**d)


def _section(data: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table, got {type(value).__name__}")
    return dict(value)


def _build(data: Mapping[str, Any], base: Path, cli: Mapping[str, Any], where: str) -> RunConfig:
    cwd = Path.cwd()
    model = _checked(ModelSpec, _section(data, "model", where), f"{where} [model]")
    model["weights"] = _path(model.get("weights"), base)
    if "model" in cli:
        model["source"] = str(cli["model"])
    if "weights" in cli:
        model["weights"] = _path(cli["weights"], cwd)
    if "name" in cli:
        model["name"] = str(cli["name"])
    if model.get("output_names") is not None:
        model["output_names"] = tuple(model["output_names"])
    model_spec = ModelSpec(**model)
    demo = model_spec.source == DEMO_MODEL and model_spec.weights is None

    calib = _section(data, "calibration", where)
    evaluation = _section(data, "evaluation", where)
    for section, prefix in ((calib, "calib"), (evaluation, "eval")):
        # Paths given on the command line are relative to the working directory, not to the file.
        if f"{prefix}_data" in cli:
            section["source"] = _source(str(cli[f"{prefix}_data"]), cwd)
        if f"{prefix}_annotations" in cli:
            section["annotations"] = str(_path(cli[f"{prefix}_annotations"], cwd))
    if "num_calib_samples" in cli:
        calib["num_samples"] = int(cli["num_calib_samples"])
    if "calib_batch_size" in cli:
        calib["batch_size"] = int(cli["calib_batch_size"])
    if "max_eval_images" in cli:
        evaluation["max_images"] = int(cli["max_eval_images"])
    if "task" in cli:
        evaluation["task"] = str(cli["task"])

    if demo:  # the bundled default: shipped MNIST-detection splits, named I/O, dynamic batch 1..32
        calib.setdefault("source", "mnist_det:calib")
        calib.setdefault("batch_size", 8)
        evaluation.setdefault("source", "mnist_det:val")
        evaluation.setdefault("task", "detection")
        evaluation.setdefault("batch_size", 50)
        if model_spec.output_names is None:
            model_spec = dataclasses.replace(model_spec, output_names=("hm", "wh", "reg"))
    calib_spec = _data(calib, base, f"{where} [calibration]") if calib else None
    eval_spec = _data(evaluation, base, f"{where} [evaluation]") if evaluation else None
    if calib_spec is None:
        raise ConfigError(
            f"{where}: no calibration data; give --calib-data (an image folder, .npy/.npz file or "
            "COCO set) or a [calibration] section with 'source'"
        )

    inputs_data = data.get("inputs")
    if inputs_data is None and demo:
        inputs_data = [InputSpec.dynamic_batch("images", (1, 96, 96), 1, 8, 32).to_dict()]
    inputs = None
    if inputs_data is not None:
        if not isinstance(inputs_data, list):
            raise ConfigError(f"{where}: [[inputs]] must be an array of tables")
        inputs = tuple(InputSpec.from_dict(_checked_input(d, f"{where} [[inputs]]")) for d in inputs_data)

    preprocess = (
        PreprocessSpec.from_dict(_section(data, "preprocess", where)) if data.get("preprocess") else None
    )

    quant = {"show_progress": False, **_section(data, "quant", where)}
    if demo:  # the calibrator the demo's accuracy gate is tuned for (entropy clips its stem activations hard)
        quant.setdefault("calibrator", DEMO_CALIBRATOR)
    for key in ("calibrator", "percentile"):
        if key in cli:
            quant[key] = cli[key]
    search = quant.get("calibrator") == "auto"
    if search:  # the prepared model needs some calibrator; the search replaces it from the same statistics
        quant["calibrator"] = QuantConfig().calibrator
    build = _section(data, "build", where)
    if build.get("timing_cache_path") is not None:
        build["timing_cache_path"] = _path(build["timing_cache_path"], base)
    export = _checked(ExportSpec, _section(data, "export", where), f"{where} [export]")
    if "onnx" in cli:
        export["onnx"] = bool(cli["onnx"])
    return RunConfig(
        model=model_spec,
        inputs=inputs,
        preprocess=preprocess,
        calibration=calib_spec,
        evaluation=eval_spec,
        quant=QuantConfig.from_dict(quant),
        build=BuildOptions.from_dict(build),
        gate=GateSpec(**_checked(GateSpec, _section(data, "gate", where), f"{where} [gate]")),
        triton=TritonSpec(**_checked(TritonSpec, _section(data, "triton", where), f"{where} [triton]")),
        export=ExportSpec(**export),
        search_calibrator=search,
    )


def _checked_input(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: each input must be a table with name and shape")
    allowed = {"name", "shape", "dtype", "min_shape", "opt_shape", "max_shape"}
    unknown = sorted(set(d) - allowed)
    if unknown or "name" not in d or "shape" not in d:
        raise ConfigError(
            f"{where}: each input needs 'name' and 'shape' (and min/opt/max_shape for -1 dims); "
            f"unknown keys {unknown}"
            if unknown
            else f"{where}: each input needs 'name' and 'shape'"
        )
    return dict(d)


__all__ = [
    "DEMO_MODEL",
    "DataSpec",
    "ExportSpec",
    "GateSpec",
    "ModelSpec",
    "RunConfig",
    "TritonSpec",
    "load_config_file",
]
