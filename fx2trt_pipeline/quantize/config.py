"""Typed quantization configuration: what to quantize, how to calibrate, what to skip.

Example:
    >>> import fx2trt_pipeline as ftp
    >>> cfg = ftp.QuantConfig(calibrator="percentile", percentile=99.99, skip=("head.*",))
    >>> cfg2 = ftp.QuantConfig.from_dict(cfg.to_dict())
    >>> cfg2 == cfg
    True
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fx2trt_pipeline.errors import ConfigError

CALIBRATORS = ("minmax", "percentile", "entropy", "mse")
#: Besides CALIBRATORS: choose per scale group by the consumer layers' output error (calibrator_choice.py).
AUTO_PER_GROUP = "auto_per_group"
PERCENTILES = (99.9, 99.99, 99.999)
#: Op kinds whose *inputs* are quantized (TensorRT placement rule 1 and 5).
QUANTIZABLE_OPS = ("conv", "conv_transpose", "linear", "matmul", "avgpool", "add")
#: Per-channel axis of ConvTranspose weights: 0, TensorRT's rule for IDeconvolutionLayer kernels.
#: TensorRT lays deconvolution kernels out as CKRS, C = input channels, K = output maps (NvInfer.h,
#: IDeconvolutionLayer::setKernelWeights), which is torch's ConvTranspose weight layout
#: (C_in, C_out/groups, *k). TensorRT maintainers: "the kernels assume per-input-channel quant for
#: ConvTranspose" and "We don't support per-output-channel quant for ConvTranspose"
#: (https://github.com/NVIDIA/TensorRT/issues/2380, 2022-12-02), after the toolkit/TensorRT mismatch of
#: https://github.com/NVIDIA/TensorRT/issues/1694 ("try quant axis 0 for deconv"); NVIDIA's
#: pytorch-quantization (tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL) defaults to axis 0
#: since. No deconvolution-specific sentence was found in the Developer Guide's "Explicit Quantization"
#: chapter. ORT, PPQ and ExecuTorch use axis 1 for their own kernels; TensorRT-RTX's CPU builder accepts
#: both, hence configurable.
DEFAULT_DECONV_WEIGHT_AXIS = 0


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings that replace the global ones for matching layers."""

    calibrator: str | None = None
    percentile: float | None = None
    skip: bool = False


#: ``QuantConfig.placement`` values: TensorRT's placement rules alone, or kept in float where the plan says so.
PLACEMENTS = ("rules", "plan-cost")
#: ``QuantConfig.float_dtype`` values: the dtype of every tensor of the network that is not int8.
FLOAT_DTYPES = ("float32", "float16")

#: ``QuantConfig.equalization`` values: off, weight-range balancing, and that plus activation ranges.
EQUALIZATION_MODES = (False, True, "activations")


@dataclass(frozen=True)
class QuantConfig:
    """Everything :func:`fx2trt_pipeline.quantize` needs besides the model and data.

    Attributes:
        calibrator: ``"minmax" | "percentile" | "entropy" | "mse"`` for activation scales. The default,
            ``"mse"``, is the most robust of the four on the models measured in docs/benchmarks.md.
            ``"auto_per_group"`` picks one of them per scale group by the output error of the layers that
            read the group, measured on calibration samples kept in the same pass.
        percentile: percentile of |x| used by the ``"percentile"`` calibrator.
        quantize_ops: op kinds whose inputs get Q/DQ (subset of :data:`QUANTIZABLE_OPS`).
        skip: glob patterns of node / module names kept in float (no Q/DQ on their inputs
            or weights).
        module_type_overrides: ``{"ConvTranspose2d": LayerOverride(...)}`` by module class name.
        name_overrides: ``{"layer4.*": LayerOverride(...)}`` by glob over node / module names;
            these win over type overrides.
        deconv_weight_axis: per-channel axis of ConvTranspose weights (0 or 1).
        per_channel_weights: per-output-channel weight scales (else one scale per weight).
        leaf_modules: module class names (or qualified names) the tracer must not enter.
        train_mode: ``"warn"`` switches a model left in train mode to eval and warns;
            ``"error"`` refuses it.
        show_progress: tqdm progress bar during calibration.
        equalization: cross-layer equalization of conv/linear pairs before calibration (see
            ``quantize/equalization.py``; ReLU6 links become per-channel clamps). ``True`` balances
            weight ranges of every pair; ``"activations"`` instead equalizes the activation ranges
            into depthwise convolutions, measured on the example inputs (real data needed).
        bias_correction: fold the expected output shift of weight rounding, measured on the calibration
            data, into each quantized conv / linear bias (``quantize/bias_correction.py``).
        adaround: adaptive rounding (floor or ceil per weight) of every per-channel conv2d / linear layer,
            fitted layer by layer to the quantized model's own inputs (``quantize/adaround.py``).
        adaround_iterations: optimisation steps per layer.
        adaround_batches: calibration batches kept for adaptive rounding (the first ones).
        float_dtype: ``"float32"`` (default) or ``"float16"``: the dtype of everything that is not int8
            (dequantize outputs, layers never quantized, layers kept in float, float weights and biases).
            The network inputs and outputs stay float32; see docs/float16.md for where float16 rounds.
        placement: ``"rules"`` (default): Q/DQ on every quantizable layer by TensorRT's rules. ``"plan-cost"``:
            ``fx2trt build`` keeps in float each layer whose INT8 form costs more in TensorRT's own plan than its
            float form, for ``placement_gpus``, and verifies the choice on the rebuilt plan (docs/plan.md).
        placement_gpus: GPU names the plan cost is estimated for (``fx2trt_pipeline.plan.gpus``); empty: the
            default set (RTX 4090, L40S, L4, A10).
    """

    calibrator: str = "mse"
    percentile: float = 99.99
    quantize_ops: tuple[str, ...] = ("conv", "conv_transpose", "linear", "matmul", "avgpool", "add")
    skip: tuple[str, ...] = ()
    module_type_overrides: Mapping[str, LayerOverride] = field(default_factory=dict)
    name_overrides: Mapping[str, LayerOverride] = field(default_factory=dict)
    deconv_weight_axis: int = DEFAULT_DECONV_WEIGHT_AXIS
    per_channel_weights: bool = True
    leaf_modules: tuple[str, ...] = ()
    train_mode: str = "warn"
    show_progress: bool = True
    equalization: bool | str = False
    bias_correction: bool = False
    adaround: bool = False
    adaround_iterations: int = 200
    adaround_batches: int = 2
    float_dtype: str = "float32"
    placement: str = "rules"
    placement_gpus: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_calibrator(self.calibrator, self.percentile, "QuantConfig")
        bad = [op for op in self.quantize_ops if op not in QUANTIZABLE_OPS]
        if bad:
            raise ConfigError(f"QuantConfig.quantize_ops has unknown op kinds {bad}; choose from {QUANTIZABLE_OPS}")
        if self.deconv_weight_axis not in (0, 1):
            raise ConfigError(f"QuantConfig.deconv_weight_axis must be 0 or 1, got {self.deconv_weight_axis!r}")
        for key in ("adaround_iterations", "adaround_batches"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"QuantConfig.{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.equalization not in EQUALIZATION_MODES:
            raise ConfigError(
                f"QuantConfig.equalization must be one of {EQUALIZATION_MODES}, got {self.equalization!r}"
            )
        if self.float_dtype not in FLOAT_DTYPES:
            raise ConfigError(f"QuantConfig.float_dtype must be one of {FLOAT_DTYPES}, got {self.float_dtype!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"QuantConfig.placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.train_mode not in ("warn", "error"):
            raise ConfigError(f"QuantConfig.train_mode must be 'warn' or 'error', got {self.train_mode!r}")
        for where, table in (
            ("module_type_overrides", self.module_type_overrides),
            ("name_overrides", self.name_overrides),
        ):
            for key, ov in table.items():
                if not isinstance(ov, LayerOverride):
                    raise ConfigError(f"QuantConfig.{where}[{key!r}] must be a LayerOverride, got {type(ov).__name__}")
                if ov.calibrator is not None:
                    _check_calibrator(ov.calibrator, ov.percentile or self.percentile, f"{where}[{key!r}]")
        object.__setattr__(self, "quantize_ops", tuple(self.quantize_ops))
        object.__setattr__(self, "skip", tuple(self.skip))
        object.__setattr__(self, "leaf_modules", tuple(self.leaf_modules))
        gpus = (self.placement_gpus,) if isinstance(self.placement_gpus, str) else self.placement_gpus
        object.__setattr__(self, "placement_gpus", tuple(gpus))

    def resolve(self, name: str, module_type: str | None = None) -> LayerOverride:
        """The effective calibrator, percentile and skip flag for one layer.

        Name overrides win over module-type overrides, which win over the global settings.
        """
        calibrator, percentile, skip = self.calibrator, self.percentile, False
        if any(fnmatch.fnmatchcase(name, pat) for pat in self.skip):
            skip = True
        layers = []
        if module_type is not None and module_type in self.module_type_overrides:
            layers.append(self.module_type_overrides[module_type])
        layers += [ov for pat, ov in self.name_overrides.items() if fnmatch.fnmatchcase(name, pat)]
        for ov in layers:
            calibrator = ov.calibrator or calibrator
            percentile = ov.percentile or percentile
            skip = skip or ov.skip
        return LayerOverride(calibrator=calibrator, percentile=percentile, skip=skip)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        for key in ("quantize_ops", "skip", "leaf_modules", "placement_gpus"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """Build a config from a dict (e.g. parsed TOML/JSON); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown QuantConfig key(s) {unknown}; valid keys are {sorted(known)}")
        kwargs = dict(data)
        for key in ("module_type_overrides", "name_overrides"):
            if key in kwargs:
                kwargs[key] = {k: _override_from(v, f"{key}[{k!r}]") for k, v in kwargs[key].items()}
        return cls(**kwargs)


def _override_from(value: Any, where: str) -> LayerOverride:
    if isinstance(value, LayerOverride):
        return value
    known = {f.name for f in dataclasses.fields(LayerOverride)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; valid keys are {sorted(known)}")
    return LayerOverride(**value)


def _check_calibrator(name: str, percentile: float, where: str) -> None:
    if name not in CALIBRATORS + (AUTO_PER_GROUP,):
        raise ConfigError(f"{where}: unknown calibrator {name!r}; choose one of {CALIBRATORS + (AUTO_PER_GROUP,)}")
    if not 0.0 < float(percentile) < 100.0:
        raise ConfigError(f"{where}: percentile must be in (0, 100), got {percentile!r}")
