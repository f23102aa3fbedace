"""Weight-side algorithms run at convert time: bias correction, then adaptive rounding.

Neither changes the Q/DQ graph or the converters. Bias correction replaces float biases before the
reference model is built; adaptive rounding then changes the int8 weights of the built reference
model layer by layer (``quantize/adaround.py``), and :func:`rounding_recorder` refits each changed
layer's corrected bias. What they changed is kept in :class:`WeightEdits` (saved in the quantization
state), so that :func:`reapply_edits` reproduces the same model from the float weights without data:
it sets each rounded weight to ``q * scale`` (round-to-nearest of that is ``q`` again).

Example:
    >>> edits = WeightEdits(biases={"fc": [0.5, -0.25]})
    >>> WeightEdits.from_dict(edits.to_dict()) == edits
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.bias_correction import ChannelMeanObserver, corrected_bias, set_bias
from fx2trt_pipeline.quantize.placement import Placement, WeightPoint
from fx2trt_pipeline.quantize.reference import quantize_weight


@dataclass
class WeightEdits:
    """Float-weight changes made by the weight algorithms, per layer (node name).

    Attributes:
        biases: corrected biases (bias correction).
        rounding: int8 weights chosen by adaptive rounding, as lists of the rounding offsets
            ``q - floor(w / scale)`` (0 or 1) packed into bytes and hex-encoded.
    """

    biases: dict[str, list[float]] = field(default_factory=dict)
    rounding: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON form."""
        return {"biases": dict(self.biases), "rounding": dict(self.rounding)}

    @classmethod
    def from_dict(cls, data: dict) -> WeightEdits:
        """Inverse of :meth:`to_dict`."""
        return cls(
            {k: [float(v) for v in b] for k, b in data.get("biases", {}).items()}, dict(data.get("rounding", {}))
        )

    def __bool__(self) -> bool:
        return bool(self.biases or self.rounding)


def _broadcast(scale: torch.Tensor, w: torch.Tensor, axis: int | None) -> torch.Tensor:
    shape = [1] * w.dim()
    if axis is not None:
        shape[axis] = -1
    return scale.reshape(shape)


def pack_offsets(q: torch.Tensor, w: torch.Tensor, scale: torch.Tensor, axis: int | None) -> str:
    """Hex of the packed bits ``q - floor(w / scale)`` (each 0 or 1)."""
    offsets = (q.to(torch.int16) - torch.floor(w / _broadcast(scale, w, axis)).to(torch.int16)).reshape(-1)
    if bool(((offsets < 0) | (offsets > 1)).any()):
        raise ConfigError("Adaptive rounding chose an integer farther than one step from the weight")
    bits = torch.cat((offsets.to(torch.uint8), torch.zeros((-offsets.numel()) % 8, dtype=torch.uint8)))
    packed = (bits.reshape(-1, 8) << torch.arange(8, dtype=torch.uint8)).sum(1, dtype=torch.uint8)
    return bytes(packed.tolist()).hex()


def unpack_offsets(text: str, w: torch.Tensor, scale: torch.Tensor, axis: int | None) -> torch.Tensor:
    """int8 weights ``floor(w / scale) + offsets`` from :func:`pack_offsets`' output."""
    packed = torch.tensor(list(bytes.fromhex(text)), dtype=torch.uint8)
    bits = ((packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(-1)[: w.numel()]
    q = torch.floor(w / _broadcast(scale, w, axis)) + bits.reshape(w.shape).to(w.dtype)
    return q.clamp(-127, 127).to(torch.int8)


def _set_weight(layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, axis: int | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(q.to(layer.weight.dtype) * _broadcast(scale, layer.weight, axis))


def edit_weights(gm: GraphModule, placement: Placement, means: dict[str, ChannelMeanObserver] | None) -> WeightEdits:
    """Bias correction (``means``) of every quantized conv / linear layer of the float graph, in place."""
    edits = WeightEdits()
    if means is None:
        return edits
    for wp in placement.weights.values():
        if wp.kind not in ("conv", "linear") or wp.layer not in means:
            continue
        layer = gm.get_submodule(wp.module)
        q, scale = quantize_weight(layer.weight, wp.axis)
        set_bias(layer, _corrected_bias(edits, layer, wp, q, scale, means[wp.layer]))
    return edits


def _corrected_bias(
    edits: WeightEdits,
    layer: nn.Module,
    wp: WeightPoint,
    q: torch.Tensor,
    scale: torch.Tensor,
    mean: ChannelMeanObserver,
) -> torch.Tensor:
    """The float layer's bias corrected for int8 weights ``q`` with the layer's ``scale``, recorded in ``edits``."""
    bias = corrected_bias(layer, q.float() * _broadcast(scale, layer.weight, wp.axis), mean.mean())
    edits.biases[wp.layer] = [float(v) for v in bias.tolist()]
    return bias


def rounding_recorder(
    edits: WeightEdits,
    quantized: GraphModule,
    float_gm: GraphModule,
    placement: Placement,
    means: dict[str, ChannelMeanObserver] | None,
) -> Callable[[str, torch.Tensor], None]:
    """The callback adaptive rounding calls after changing a layer's int8 weights ``q``: records them in
    ``edits`` and, with bias correction on, refits that layer's bias in ``quantized`` for the new integers
    (from the float layer of ``float_gm``, whose bias is the uncorrected one)."""

    def record(name: str, q: torch.Tensor) -> None:
        wp = placement.weights[name]
        layer = float_gm.get_submodule(wp.module)
        w = layer.weight.detach().float()
        _, scale = quantize_weight(w, wp.axis)
        edits.rounding[name] = pack_offsets(q, w, scale, wp.axis)
        if means is not None and name in means:
            getattr(quantized, f"{name}_bias").copy_(_corrected_bias(edits, layer, wp, q, scale, means[name]))

    return record


def reapply_edits(gm: GraphModule, placement: Placement, edits: WeightEdits) -> None:
    """Redo saved :class:`WeightEdits` on a freshly captured float graph (no data needed)."""
    for wp in placement.weights.values():
        if wp.layer not in edits.rounding and wp.layer not in edits.biases:
            continue
        layer = gm.get_submodule(wp.module)
        if wp.layer in edits.rounding:
            w = layer.weight.detach().float()
            _, scale = quantize_weight(w, wp.axis)
            _set_weight(layer, unpack_offsets(edits.rounding[wp.layer], w, scale, wp.axis), scale, wp.axis)
        if wp.layer in edits.biases:
            bias = torch.tensor(edits.biases[wp.layer], dtype=layer.weight.dtype)
            if bias.numel() != layer.weight.shape[0]:
                raise ConfigError(
                    f"Saved corrected bias of layer '{wp.layer}' has {bias.numel()} values for "
                    f"{layer.weight.shape[0]} channels; quantize this model again."
                )
            set_bias(layer, bias)


__all__ = ["WeightEdits", "edit_weights", "pack_offsets", "reapply_edits", "rounding_recorder", "unpack_offsets"]
