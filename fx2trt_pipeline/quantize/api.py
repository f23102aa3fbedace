"""The quantizer's public entry points: prepare -> calibrate -> convert, or quantize_model() in one call.

Example:
    >>> import torch
    >>> import fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    ...                             torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(calibrator="minmax",
    ...                    show_progress=False))
    >>> qgm(x).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.capture import capture, check_example_inputs
from fx2trt_pipeline.capture.rewrites import rewrite_for_capture
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.adaround import AdaRoundSettings, adaround_sequentially
from fx2trt_pipeline.quantize.bias_correction import ChannelMeanObserver
from fx2trt_pipeline.quantize.calibrator_choice import SampleObserver, choose_group
from fx2trt_pipeline.quantize.calibrators import compute_amax
from fx2trt_pipeline.quantize.config import AUTO_PER_GROUP, QuantConfig
from fx2trt_pipeline.quantize.equalization import EqualizedPair, apply_scales, equalize
from fx2trt_pipeline.quantize.float16 import use_float16
from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm
from fx2trt_pipeline.quantize.observe import (
    first_batch_as_example,
    flat_inputs,
    insert_channel_mean_observers,
    insert_observers,
    insert_sample_observers,
    iterate_batches,
    keeping_first,
    remove_observers,
    run_calibration,
)
from fx2trt_pipeline.quantize.placement import Placement, place_qdq
from fx2trt_pipeline.quantize.reference import build_reference
from fx2trt_pipeline.quantize.state import STATE_ATTR, QuantState
from fx2trt_pipeline.quantize.statistics import TensorStats
from fx2trt_pipeline.quantize.weight_edits import WeightEdits, edit_weights, reapply_edits, rounding_recorder

PREPARED_ATTR = "fx2trt_prepared"


@dataclass
class PreparedInfo:
    """What :func:`prepare` attaches to the observed GraphModule."""

    config: QuantConfig
    placement: Placement
    stats: dict[str, TensorStats]
    batches_seen: int = 0
    equalized: list[EqualizedPair] = field(default_factory=list)
    means: dict[str, ChannelMeanObserver] | None = None
    samples: dict[str, SampleObserver] = field(default_factory=dict)
    kept_batches: list[Any] = field(default_factory=list)


def _float_graph(
    model: nn.Module, config: QuantConfig, example_inputs: Sequence[Any] | None, concrete_args: dict[str, Any] | None
) -> GraphModule:
    """Copy ``model`` (the caller's stays untouched), check eval mode, capture it and fold BN."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Quantizing needs a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        if config.train_mode == "error":
            raise ConfigError(
                f"{type(model).__name__} is in train mode; call model.eval() before quantizing "
                "(BatchNorm folding and calibration need eval-mode statistics)."
            )
        warnings.warn(
            f"{type(model).__name__} is in train mode; quantizing an eval-mode copy (BatchNorm uses "
            "running statistics, dropout is off). Call model.eval() to silence this.",
            stacklevel=3,
        )
    model = copy.deepcopy(model).eval()
    # Attention / Swin blocks become plain ops so that placement sees their matmuls and Linear layers.
    flat = flat_inputs(example_inputs) if example_inputs is not None else None
    model = rewrite_for_capture(model, flat, config.leaf_modules)
    gm = capture(model, leaf_modules=config.leaf_modules, concrete_args=concrete_args, example_inputs=flat)
    fold_batchnorm(gm, copy_layers=False)  # the modules belong to our copy
    if example_inputs is not None:
        with torch.no_grad():
            check_example_inputs(gm, flat_inputs(example_inputs))
    return gm


def _equalized_graph(
    gm: GraphModule,
    config: QuantConfig,
    saved: list[EqualizedPair] | None = None,
    example_inputs: Sequence[Any] | None = None,
) -> list[EqualizedPair]:
    """Cross-layer equalization when the config asks for it: fresh scales, or ``saved`` ones reapplied."""
    if not config.equalization:
        return []
    if saved is not None:
        apply_scales(gm, saved)
        return saved
    if config.equalization != "activations":
        return equalize(gm)
    if example_inputs is None:
        raise ConfigError(
            'QuantConfig(equalization="activations") measures activation ranges on the example inputs: pass '
            "example_inputs (a batch of real data) to prepare(), or use equalization=True."
        )
    return equalize(gm, inputs=flat_inputs(example_inputs))


def prepare(
    model: nn.Module,
    example_inputs: Sequence[Any] | None = None,
    config: QuantConfig | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> GraphModule:
    """Capture, fold BatchNorm, place Q/DQ and insert statistics observers.

    Args:
        model: float model; a deep copy is quantized, ``model`` itself is not modified.
        example_inputs: inputs shaped like real data; checked against the model when given.
        config: quantization settings (defaults to ``QuantConfig()``).
        concrete_args: forwarded to torch.fx tracing.

    Returns:
        The observed GraphModule; run data through it with :func:`calibrate`.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
        >>> prepared = ftp.prepare(model, (torch.randn(1, 3, 16, 16),))
        >>> prepared = ftp.calibrate(prepared, [torch.randn(2, 3, 16, 16)], show_progress=False)
        >>> qgm = ftp.convert(prepared)
        >>> sorted({str(n.target) for n in qgm.graph.nodes if "fx2trt" in str(n.target)})
        ['fx2trt.dequantize.default', 'fx2trt.int8_conv2d.default', 'fx2trt.quantize.default']
    """
    config = config or QuantConfig()
    gm = _float_graph(model, config, example_inputs, concrete_args)
    equalized = _equalized_graph(gm, config, example_inputs=example_inputs)
    placement = place_qdq(gm, config)
    stats = insert_observers(gm, placement)
    means = insert_channel_mean_observers(gm, placement) if config.bias_correction else None
    samples = insert_sample_observers(gm, placement)
    setattr(
        gm, PREPARED_ATTR, PreparedInfo(config, placement, stats, equalized=equalized, means=means, samples=samples)
    )
    return gm


def prepared_info(prepared: GraphModule, calibrated: bool = False) -> PreparedInfo:
    """What :func:`prepare` attached to ``prepared`` (config, placement, statistics).

    Raises:
        ConfigError: ``prepared`` does not come from :func:`prepare`, or ``calibrated`` is asked for and
            no batch went through :func:`calibrate` yet.
    """
    info = getattr(prepared, PREPARED_ATTR, None)
    if not isinstance(info, PreparedInfo):
        raise ConfigError(
            "Expected the GraphModule returned by fx2trt_pipeline.prepare(); got a module without observers."
        )
    if calibrated and info.batches_seen == 0:
        raise ConfigError("This needs calibration first: call fx2trt_pipeline.calibrate(prepared, batches).")
    return info


def calibrate(prepared: GraphModule, batches: Iterable[Any], show_progress: bool | None = None) -> GraphModule:
    """Run calibration batches through the observers (one pass); returns ``prepared``.

    Calling it again adds more data: statistics accumulate exactly.
    """
    info = prepared_info(prepared)
    progress = info.config.show_progress if show_progress is None else show_progress
    if info.config.adaround:
        batches = keeping_first(batches, info.kept_batches, info.config.adaround_batches)
    info.batches_seen += run_calibration(prepared, batches, info.stats, progress)
    return prepared


def convert(prepared: GraphModule, config: QuantConfig | None = None) -> GraphModule:
    """Derive scales from the collected statistics and build the reference-quantized GraphModule.

    Args:
        prepared: a calibrated module from :func:`prepare` + :func:`calibrate`.
        config: optionally another config to derive the model with, from the same statistics (the
            model is not run again): other calibrators, percentiles and overrides, and more layers
            kept in float (``skip``), as long as every remaining scale group was observed as it is.

    Raises:
        ConfigError: no calibration yet, or ``config`` needs statistics of tensors that were never
            observed (e.g. skipping the conv of a residual add moves the Q/DQ); prepare with it instead.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        ...                             torch.nn.Linear(8 * 6 * 6, 4)).eval()
        >>> prepared = ftp.prepare(model, (torch.randn(1, 3, 8, 8),), ftp.QuantConfig(show_progress=False))
        >>> prepared = ftp.calibrate(prepared, [torch.randn(4, 3, 8, 8)])
        >>> qgm = ftp.convert(prepared, ftp.QuantConfig(calibrator="percentile", skip=("_3",)))
        >>> [n.name for n in qgm.graph.nodes if n.op == "call_module"]  # the Linear stays a float module
        ['_1', '_2', '_3']
    """
    return _convert(prepared, config, in_place=False)


def _convert(prepared: GraphModule, config: QuantConfig | None, in_place: bool) -> GraphModule:
    """:func:`convert`; ``in_place`` turns ``prepared`` itself into the result (no copy of the model)."""
    info = prepared_info(prepared, calibrated=True)
    qgm = _without_observers(prepared, in_place)
    placement = info.placement
    if config is not None and config != info.config:
        _check_same_graph(config, info.config)
        placement = place_qdq(qgm, config)
        _check_observed(placement, info.placement)
    amax, chosen = _group_amax(qgm, placement, info)
    final = config or info.config
    float_gm = copy.deepcopy(qgm) if final.adaround else None  # the float reference adaptive rounding fits
    means = info.means if final.bias_correction else None
    edits = edit_weights(qgm, placement, means)
    device = next((p.device for p in qgm.parameters()), torch.device("cpu"))
    weight_scales = build_reference(qgm, placement, amax)
    qgm.to(device)
    if float_gm is not None:
        _adaround(qgm, float_gm, placement, info, final, edits, device)
    if final.float_dtype == "float16":
        use_float16(qgm)  # last: every step above works on the float32 reference model
    setattr(
        qgm,
        STATE_ATTR,
        QuantState(
            final,
            placement,
            amax,
            weight_scales,
            {k: copy.deepcopy(info.stats[k]) for k in placement.groups},
            equalized=list(info.equalized),
            edits=edits,
            chosen=chosen,
        ),
    )
    return qgm


def _adaround(
    qgm: GraphModule,
    float_gm: GraphModule,
    placement: Placement,
    info: PreparedInfo,
    config: QuantConfig,
    edits: WeightEdits,
    device: torch.device,
) -> None:
    """Adaptive rounding of the built reference model ``qgm`` (on ``device``), fitted on the kept calibration
    batches."""
    if not info.kept_batches:
        raise ConfigError(
            "adaround needs calibration batches kept during calibrate(): call prepare() and "
            "calibrate() with QuantConfig(adaround=True)."
        )
    batches = list(iterate_batches(info.kept_batches, device, False))
    record = rounding_recorder(edits, qgm, float_gm, placement, info.means if config.bias_correction else None)
    adaround_sequentially(qgm, float_gm, placement, batches, AdaRoundSettings(config.adaround_iterations), record)


def _group_amax(gm: GraphModule, placement: Placement, info: PreparedInfo) -> tuple[dict[str, float], dict[str, str]]:
    """amax per scale group, and the calibrator picked for each ``auto_per_group`` group."""
    amax, chosen = {}, {}
    for key, g in placement.groups.items():
        if g.calibrator == AUTO_PER_GROUP:
            choice = choose_group(gm, placement, g, info.stats[key], info.samples)
            amax[key], chosen[key] = choice.amax, choice.label
        else:
            amax[key] = compute_amax(info.stats[key], g.calibrator, g.percentile)
    return amax, chosen


def _without_observers(prepared: GraphModule, in_place: bool = False) -> GraphModule:
    """The prepared graph (a copy, unless ``in_place``) with the observers removed."""
    plain = prepared if in_place else copy.deepcopy(prepared)  # GraphModule copies drop custom attributes
    if hasattr(plain, PREPARED_ATTR):
        delattr(plain, PREPARED_ATTR)
    remove_observers(plain)
    return plain


def _check_same_graph(config: QuantConfig, prepared_with: QuantConfig) -> None:
    """Settings that change the float graph before observation cannot change after calibration."""
    if config.equalization != prepared_with.equalization:
        raise ConfigError(
            f"convert(config=...) asks for equalization={config.equalization}, but the model was "
            f"prepared with equalization={prepared_with.equalization}; equalization rewrites the "
            "float weights before calibration: call prepare() and calibrate() with this config."
        )
    if config.bias_correction and not prepared_with.bias_correction:
        raise ConfigError(
            "convert(config=...) asks for bias_correction, which needs the per-channel input means "
            "collected during calibration: call prepare() and calibrate() with "
            "QuantConfig(bias_correction=True)."
        )


def _check_observed(placement: Placement, observed: Placement) -> None:
    """Every scale group of ``placement`` must have been observed with exactly the same members."""
    missing = [
        key
        for key, group in placement.groups.items()
        if key not in observed.groups or observed.groups[key].members != group.members
    ]
    if missing:
        raise ConfigError(
            f"convert(config=...) needs statistics of tensor(s) {missing[:5]} that were not observed "
            "as such during calibration (quantize_ops / skip / transparent ops changed the Q/DQ "
            "points); call prepare() and calibrate() with this config instead."
        )


def quantize_model(
    model: nn.Module,
    calib_batches: Iterable[Any],
    example_inputs: Sequence[Any] | None = None,
    config: QuantConfig | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> GraphModule:
    """Post-training INT8 quantization in one call: prepare, calibrate, convert.

    Args:
        model: float ``nn.Module`` (eval mode; see ``QuantConfig.train_mode``).
        calib_batches: iterable of input batches (tensors, tuples of tensors, or dicts of tensors).
        example_inputs: inputs shaped like real data (checked against the model); default: the first batch.
        config: :class:`QuantConfig`; defaults to MSE calibration with TensorRT placement rules.
        concrete_args: forwarded to torch.fx tracing.

    Returns:
        The reference-quantized GraphModule: runs the simulated INT8 model on CPU or CUDA and carries
        its :class:`QuantState` (see :func:`save_quant_state`).

    Raises:
        CaptureError: the model does not trace or the example inputs do not fit it.
        CalibrationError: empty calibration data, or NaN/Inf seen by an observer.
        ConfigError: invalid configuration.
    """
    if example_inputs is None:  # what shape-dependent captures (Swin, onnx2torch graphs) need
        calib_batches, example_inputs = first_batch_as_example(calib_batches)
    prepared = prepare(model, example_inputs, config, concrete_args)
    calibrate(prepared, calib_batches)
    return _convert(prepared, None, in_place=True)  # nobody else holds this prepared module


def rebuild_quantized(
    model: nn.Module,
    state: QuantState,
    example_inputs: Sequence[Any] | None = None,
    concrete_args: dict[str, Any] | None = None,
) -> GraphModule:
    """Rebuild the reference-quantized GraphModule from the float model and a saved state.

    No calibration runs. The placement is recomputed from the model and must equal the saved one, and
    the recomputed weight scales must equal the saved ones: otherwise the model is not the one the
    state was made for, and a :class:`ConfigError` names the first difference.
    """
    gm = _float_graph(model, state.config, example_inputs, concrete_args)
    _equalized_graph(gm, state.config, state.equalized)
    placement = place_qdq(gm, state.config)
    if placement.to_dict() != state.placement.to_dict():
        saved, now = set(state.placement.points), set(placement.points)
        raise ConfigError(
            "The model's Q/DQ placement differs from the saved state (its graph changed): "
            f"only in state {sorted(saved - now)[:5]}, only in model {sorted(now - saved)[:5]}. "
            "Quantize this model again."
        )
    reapply_edits(gm, placement, state.edits)
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    weight_scales = build_reference(gm, placement, state.amax)
    gm.to(device)
    for layer, scales in weight_scales.items():
        saved = torch.tensor(state.weight_scales.get(layer, []))
        if saved.shape != torch.Size([len(scales)]) or not torch.allclose(
            saved, torch.tensor(scales), rtol=1e-6, atol=0.0
        ):
            raise ConfigError(
                f"Weights of layer '{layer}' differ from the ones the quantization state was made "
                "for; load the same float weights or quantize again."
            )
    if state.config.float_dtype == "float16":
        use_float16(gm)
    setattr(gm, STATE_ATTR, state)
    return gm
