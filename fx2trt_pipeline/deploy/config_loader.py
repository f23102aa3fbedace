"""Read a :class:`~fx2trt_pipeline.deploy.config.RunConfig` from a config file and command-line flags.

::

    run_config_from_sources(path, flags)  load_config_file + build_run_config (what ``fx2trt build`` reads)
    run_config_from_dict(manifest)        the inverse of RunConfig.to_dict (a run manifest's "config")
    load_config_file(path)  .toml (tomllib) | .yaml/.yml (PyYAML) -> {section: table}; unknown sections fail
    build_run_config(data, base, flags)  defaults (the demo, when no model is named) <- file <- flags
                                         -> RunConfig; relative paths: the file's for file values, the
                                         working directory's for flags

Example:
    >>> from pathlib import Path
    >>> cfg = build_run_config({"quant": {"calibrator": "minmax"}}, Path("."), {}, "example")
    >>> cfg.quant.calibrator, cfg.calibration.source
    ('minmax', 'mnist_det:calib')
    >>> run_config_from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from fx2trt_pipeline.deploy.config import (
    _SECTIONS,
    DEMO_CALIBRATOR,
    DEMO_MODEL,
    DataSpec,
    ExportSpec,
    GateSpec,
    ModelSpec,
    RunConfig,
    TritonSpec,
)
from fx2trt_pipeline.deploy.preprocess_defaults import preprocess_choice
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.quantize.config import QuantConfig

#: Flags that set one ``[quant]`` (QuantConfig) field each; a new quantization flag adds its name here
#: and its argument in ``cli._add_quant_arguments``.
QUANT_OVERRIDES = (
    "calibrator",
    "percentile",
    "equalization",
    "bias_correction",
    "adaround",
    "adaround_iterations",
    "adaround_batches",
    "float_dtype",
    "placement",
    "placement_gpus",
    "mixed_precision",
)


def _checked(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    return dict(data)


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


def _path(value: Any, base: Path) -> Path | None:
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
        raise ConfigError(f"{where}: 'source' is required (an image folder, .npy/.npz file or mnist_det:<split>)")
    d["source"] = _source(str(d["source"]), base)
    d["annotations"] = _path(d.get("annotations"), base)
    d["labels"] = _path(d.get("labels"), base)
    return DataSpec(**d)


def _section(data: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{name}] must be a table, got {type(value).__name__}")
    return dict(value)


def run_config_from_sources(path: Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the config file at ``path`` (if any), then flat CLI ``overrides``.

    ``overrides`` keys: ``model``, ``weights``, ``calib_data``, ``calib_annotations``, ``eval_data``,
    ``eval_annotations``, ``labels``, ``task``, ``num_calib_samples``, ``calib_batch_size``,
    ``max_eval_images``, ``name``, ``onnx``, ``weights_tag``, the :data:`QUANT_OVERRIDES` and the preprocessing flags
    ``input_size``, ``resize``, ``mean``, ``std``, ``channels`` (``None`` values are ignored).

    Example:
        >>> run_config_from_sources(None, {"calibrator": "minmax", "name": None}).quant.calibrator
        'minmax'
    """
    data = load_config_file(path) if path is not None else {}
    base = path.resolve().parent if path is not None else Path.cwd()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    return build_run_config(data, base, overrides, str(path) if path is not None else "defaults")


def run_config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (paths are taken as written)."""
    return build_run_config({k: v for k, v in data.items() if v is not None}, Path.cwd(), {}, "run manifest")


@dataclass(frozen=True)
class _Sources:
    """Where values come from: the parsed file (paths relative to ``base``) and the flags (to the cwd)."""

    data: Mapping[str, Any]
    base: Path
    cli: Mapping[str, Any]
    where: str


def _model_spec(src: _Sources) -> ModelSpec:
    model = _checked(ModelSpec, _section(src.data, "model", src.where), f"{src.where} [model]")
    model["weights"] = _path(model.get("weights"), src.base)
    if "model" in src.cli:
        model["source"] = str(src.cli["model"])
    if "weights" in src.cli:
        model["weights"] = _path(src.cli["weights"], Path.cwd())
    if "weights_tag" in src.cli:
        model["weights_tag"] = str(src.cli["weights_tag"])
    if "name" in src.cli:
        model["name"] = str(src.cli["name"])
    if model.get("output_names") is not None:
        model["output_names"] = tuple(model["output_names"])
    return ModelSpec(**model)


#: Flags that set one key of a data section: flag -> (section prefix, key, type).
_DATA_FLAGS = {
    "num_calib_samples": ("calib", "num_samples", int),
    "calib_batch_size": ("calib", "batch_size", int),
    "max_eval_images": ("eval", "max_images", int),
    "task": ("eval", "task", str),
    "output_index": ("eval", "output_index", str),
}


def _data_sections(src: _Sources, demo: bool) -> tuple[DataSpec | None, DataSpec | None]:
    cwd, cli = Path.cwd(), src.cli
    sections = {
        "calib": _section(src.data, "calibration", src.where),
        "eval": _section(src.data, "evaluation", src.where),
    }
    for prefix, section in sections.items():
        # Paths given on the command line are relative to the working directory, not to the file.
        if f"{prefix}_data" in cli:
            section["source"] = _source(str(cli[f"{prefix}_data"]), cwd)
        if f"{prefix}_annotations" in cli:
            section["annotations"] = str(_path(cli[f"{prefix}_annotations"], cwd))
    for flag, (prefix, key, kind) in _DATA_FLAGS.items():
        if flag in cli:
            sections[prefix][key] = kind(cli[flag])
    if "labels" in cli:
        sections["eval"]["labels"] = str(_path(cli["labels"], cwd))
    calib, evaluation = sections["calib"], sections["eval"]
    if demo:  # the bundled default: shipped MNIST-detection splits
        calib.setdefault("source", "mnist_det:calib")
        calib.setdefault("batch_size", 8)
        evaluation.setdefault("source", "mnist_det:val")
        evaluation.setdefault("task", "detection")
        evaluation.setdefault("batch_size", 50)
    if not calib:
        raise ConfigError(
            f"{src.where}: no calibration data; give --calib-data (an image folder, .npy/.npz file or "
            "COCO set) or a [calibration] section with 'source'"
        )
    if evaluation and "source" not in evaluation:
        flags = [f"--{f.replace('_', '-')}" for f, spec in _DATA_FLAGS.items() if spec[0] == "eval" and f in cli]
        raise ConfigError(
            f"{src.where}: {', '.join(flags) or 'the [evaluation] section'} applies to evaluation data, and none "
            "was given: add --eval-data (an image folder, .npy/.npz file or COCO set) or [evaluation] source"
        )
    eval_spec = _data(evaluation, src.base, f"{src.where} [evaluation]") if evaluation else None
    return _data(calib, src.base, f"{src.where} [calibration]"), eval_spec


def _inputs(src: _Sources, demo: bool) -> tuple[InputSpec, ...] | None:
    inputs_data = src.data.get("inputs")
    if inputs_data is None and demo:  # the demo: named I/O, dynamic batch 1..32
        inputs_data = [InputSpec.dynamic_batch("images", (1, 96, 96), 1, 8, 32).to_dict()]
    if inputs_data is None:
        return None
    if not isinstance(inputs_data, list):
        raise ConfigError(f"{src.where}: [[inputs]] must be an array of tables")
    return tuple(InputSpec.from_dict(_checked_input(d, f"{src.where} [[inputs]]")) for d in inputs_data)


def _quant(src: _Sources, demo: bool) -> tuple[QuantConfig, bool, float | None]:
    quant = {"show_progress": False, **_section(src.data, "quant", src.where)}
    if demo:  # the calibrator the demo's accuracy gate is tuned for (entropy clips its stem activations hard)
        quant.setdefault("calibrator", DEMO_CALIBRATOR)
    for key in QUANT_OVERRIDES:
        if key in src.cli:
            quant[key] = src.cli[key]
    search = quant.get("calibrator") == "auto"
    if search:  # the prepared model needs some calibrator; the search replaces it from the same statistics
        quant["calibrator"] = QuantConfig().calibrator
    budget = quant.pop("mixed_precision", None)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0):
        raise ConfigError(f"{src.where}: mixed_precision must be a budget >= 0 (0.01 = 1 point), got {budget!r}")
    return QuantConfig.from_dict(quant), search, None if budget is None else float(budget)


def _checked_search(search: bool, evaluation: DataSpec | None, where: str) -> None:
    if search and evaluation is None:  # the calibrator search and mixed precision both score on it
        raise ConfigError(
            f"{where}: calibrator 'auto' scores every calibrator on evaluation data: give --eval-data (class "
            "folders or a COCO set score top-1 / mAP; any image folder scores agreement with the FP32 model)"
        )


def build_run_config(data: Mapping[str, Any], base: Path, cli: Mapping[str, Any], where: str) -> RunConfig:
    """Defaults, then the parsed file ``data`` (paths relative to ``base``), then flat CLI flags ``cli``.

    Raises:
        ConfigError: unknown keys, missing calibration data, invalid values (names the file and key).
    """
    src = _Sources(data, base, cli, where)
    model_spec = _model_spec(src)
    demo = model_spec.source == DEMO_MODEL and model_spec.weights is None
    if demo and model_spec.output_names is None:
        model_spec = dataclasses.replace(model_spec, output_names=("hm", "wh", "reg"))
    calib_spec, eval_spec = _data_sections(src, demo)
    quant, search, mixed = _quant(src, demo)
    _checked_search(search or mixed is not None, eval_spec, where)
    build = _section(data, "build", where)
    if build.get("timing_cache_path") is not None:
        build["timing_cache_path"] = _path(build["timing_cache_path"], base)
    export = _checked(ExportSpec, _section(data, "export", where), f"{where} [export]")
    if "onnx" in cli:
        export["onnx"] = bool(cli["onnx"])
    preprocess = preprocess_choice(model_spec, _section(data, "preprocess", where), cli)
    return RunConfig(
        model=model_spec,
        inputs=_inputs(src, demo),
        preprocess=preprocess.spec,
        calibration=calib_spec,
        evaluation=eval_spec,
        quant=quant,
        build=BuildOptions.from_dict(build),
        gate=GateSpec(**_checked(GateSpec, _section(data, "gate", where), f"{where} [gate]")),
        triton=TritonSpec(**_checked(TritonSpec, _section(data, "triton", where), f"{where} [triton]")),
        export=ExportSpec(**export),
        search_calibrator=search,
        mixed_precision=mixed,
        preprocess_origin=preprocess.origin,
    )


def _checked_input(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: each input must be a table with name and shape")
    allowed = {"name", "shape", "dtype", "min_shape", "opt_shape", "max_shape"}
    unknown = sorted(set(d) - allowed)
    if unknown or "name" not in d or "shape" not in d:
        raise ConfigError(
            f"{where}: each input needs 'name' and 'shape' (and min/opt/max_shape for -1 dims); unknown keys {unknown}"
            if unknown
            else f"{where}: each input needs 'name' and 'shape'"
        )
    return dict(d)


__all__ = ["build_run_config", "load_config_file", "run_config_from_dict", "run_config_from_sources"]
