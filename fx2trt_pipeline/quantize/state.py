"""The quantization state: config, placement, calibrated thresholds, weight scales (and statistics).

It is everything needed to rebuild the reference-quantized model from the float model without
calibrating again, and it is what the engine metadata hashes. Saved as JSON, written atomically.

Example:
    >>> import fx2trt_pipeline as ftp
    >>> # qgm = ftp.quantize_model(model, batches, example_inputs=(x,))
    >>> # ftp.save_quant_state(qgm, "model.quant.json")
    >>> # qgm2 = ftp.rebuild_quantized(model, ftp.load_quant_state("model.quant.json"), example_inputs=(x,))
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.equalization import EqualizedPair
from fx2trt_pipeline.quantize.placement import Placement
from fx2trt_pipeline.quantize.statistics import TensorStats
from fx2trt_pipeline.quantize.weight_edits import WeightEdits

FORMAT_VERSION = 2
#: Format 1 had ``adaround_rows`` (rows sampled per layer by the float-input AdaRound) in its config. A
#: saved state keeps its rounding bits, so dropping that key rebuilds exactly the same model.
_FORMAT_1_CONFIG_KEYS = ("adaround_rows",)
STATE_ATTR = "fx2trt_quant_state"


@dataclass
class QuantState:
    """Everything that defines a quantized model besides the float weights.

    Attributes:
        config: the QuantConfig used.
        placement: where the Q/DQ pairs and quantized weights are.
        amax: calibrated |x| threshold per scale group (scale = amax / 127).
        weight_scales: per-layer weight scales (per channel, or one value).
        stats: the calibration statistics per group (lets users switch calibrators without re-running).
        equalized: the cross-layer-equalized pairs with their channel scales (reapplied on rebuild).
        edits: corrected biases and adaptively rounded weights (reapplied on rebuild).
        chosen: the calibrator picked for each ``auto_per_group`` scale group.
    """

    config: QuantConfig
    placement: Placement
    amax: dict[str, float]
    weight_scales: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, TensorStats] | None = None
    equalized: list[EqualizedPair] = field(default_factory=list)
    edits: WeightEdits = field(default_factory=WeightEdits)
    chosen: dict[str, str] = field(default_factory=dict)

    def to_dict(self, include_stats: bool = True) -> dict[str, Any]:
        """JSON-serialisable form."""
        data: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "placement": self.placement.to_dict(),
            "amax": dict(self.amax),
            "weight_scales": dict(self.weight_scales),
        }
        if self.equalized:
            data["equalized"] = [p.to_dict() for p in self.equalized]
        if self.edits:
            data["edits"] = self.edits.to_dict()
        if self.chosen:
            data["chosen"] = dict(self.chosen)
        if include_stats and self.stats is not None:
            data["stats"] = {k: s.to_dict() for k, s in self.stats.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantState:
        """Inverse of :meth:`to_dict`; rejects unknown format versions."""
        version = data.get("format_version")
        config = dict(data.get("config", {}))
        if version == 1:
            for key in _FORMAT_1_CONFIG_KEYS:
                config.pop(key, None)
        elif version != FORMAT_VERSION:
            raise ConfigError(
                f"Quantization state format {version!r} is not supported (expected "
                f"{FORMAT_VERSION}); re-run quantization with this version of fx2trt-pipeline."
            )
        stats = {k: TensorStats.from_dict(v) for k, v in data["stats"].items()} if "stats" in data else None
        return cls(
            QuantConfig.from_dict(config),
            Placement.from_dict(data["placement"]),
            {k: float(v) for k, v in data["amax"].items()},
            {k: [float(x) for x in v] for k, v in data["weight_scales"].items()},
            stats,
            [EqualizedPair.from_dict(p) for p in data.get("equalized", [])],
            WeightEdits.from_dict(data.get("edits", {})),
            dict(data.get("chosen", {})),
        )

    def digest(self) -> str:
        """sha256 of the canonical JSON (without statistics): identifies the quantized model."""
        blob = json.dumps(self.to_dict(include_stats=False), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def get_quant_state(qgm: Any) -> QuantState:
    """The :class:`QuantState` attached to a quantized (or prepared) GraphModule."""
    state = getattr(qgm, STATE_ATTR, None)
    if state is None:
        raise ConfigError(
            f"{type(qgm).__name__} carries no quantization state; pass the GraphModule returned "
            "by fx2trt_pipeline.quantize/convert."
        )
    return state


def save_quant_state(qgm_or_state: Any | QuantState, path: str | os.PathLike, include_stats: bool = True) -> str:
    """Write the quantization state as JSON (atomically); returns its digest."""
    from fx2trt_pipeline.atomic_io import atomic_write_bytes

    state = qgm_or_state if isinstance(qgm_or_state, QuantState) else get_quant_state(qgm_or_state)
    blob = json.dumps(state.to_dict(include_stats), indent=1, sort_keys=True).encode()
    atomic_write_bytes(path, blob)
    return state.digest()


def load_quant_state(path: str | os.PathLike) -> QuantState:
    """Read a state written by :func:`save_quant_state`."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError as exc:
        raise ConfigError(f"Quantization state file {os.fspath(path)!r} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Quantization state file {os.fspath(path)!r} is not valid JSON ({exc}); it may be truncated: save it again"
        ) from exc
    return QuantState.from_dict(data)
