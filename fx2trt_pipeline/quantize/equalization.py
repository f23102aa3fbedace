"""Cross-layer equalization: balance the per-channel weight ranges of consecutive conv/linear layers.

Data-free quantization (Nagel et al., ICCV 2019): for ``y = W2 f(W1 x + b1)`` with ``f`` positively
scale-equivariant (ReLU, identity), scaling output channel ``i`` of layer 1 by ``1/s_i`` and input
channel ``i`` of layer 2 by ``s_i`` leaves the function unchanged. The choice
``s_i = sqrt(r1_i * r2_i) / r2_i`` (``r1_i`` the range of layer 1's output channel ``i``, ``r2_i`` the
range of layer 2's input channel ``i``) gives both channels the range ``sqrt(r1_i * r2_i)``, so one
per-output-channel weight scale of layer 2 no longer has to cover input channels of very different
ranges, and layer 1's outputs (the activation between them) shrink where their weights were large.
Pairs sharing a layer are balanced in turn until the scales settle (a few sweeps).

Bounded activations. ReLU6 is not scale-equivariant: ``relu6(y / s) != relu6(y) / s``. Skipping such
pairs would leave MobileNetV2 untouched (every expand -> depthwise and depthwise -> project pair runs
through a ReLU6), so a ReLU6 link is replaced by ``minimum(relu(y'), 6 / s)``: a clamp whose upper
bound is adjusted per channel, which is exactly ``relu6(y) / s``. TensorRT runs it as a ReLU fused into
the conv plus an elementwise MIN with a constant. Hardswish, sigmoid and every other link are not
equalized (their shape is not a clamp, so no per-channel bound can keep the function).

Activation ranges (``QuantConfig(equalization="activations")``). Into a depthwise convolution, weight
ranges say nothing useful: the producing layer's weights are scaled per output channel and the
depthwise weights per channel, so each keeps its own scale whatever ``s`` is, and only the activation
between them, quantized with one per-tensor scale, pays for channels of very different ranges (MobileNetV2's
expand -> depthwise pairs: a few channels reach 6, many stay below 0.5 and get a handful of int8 steps). In
this mode only those pairs are equalized, with ``s`` chosen from the activation itself, measured on example
inputs: channel ``i`` (range ``a_i``) is multiplied by ``min(max_j a_j / a_i, ACTIVATION_GAIN_CAP)``, so that
every channel spans about the same range. The other pairs are left alone: balancing their weight ranges
unbalances the activations again (MobileNetV2, entropy calibrator: cosine 0.8972 with it, 0.9765 without).

Zero padding. A pad with zeros between the two layers (``nn.ZeroPad2d``, ``F.pad(x, p)``: TF-style "same" padding
in front of a depthwise convolution) commutes with per-channel scaling (``0 * s = 0``), so the chain is seen
through it; a pad with another value is not (``v / s != v``), and such a pair is left alone. Which pairs qualify,
and why one did not, is ``quantize/equalization_pairs.py``.

Deterministic: the scales are accumulated in float64 and applied once to the original weights, so the
same scales (saved in the quantization state) reproduce the same float32 weights.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fx2trt_pipeline.capture import capture
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 4, 1)).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> gm = capture(m)
    >>> pairs = equalize(gm)
    >>> len(pairs), torch.allclose(gm(x), m(x), atol=1e-5)
    (1, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Interpreter, Node

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.equalization_pairs import (
    find_pairs,
    groups_of,
    is_depthwise,
    link_kind,
    unpaired_reasons,
)

#: Largest gain an activation channel gets from activation-range equalization: a channel that is
#: all but dead would otherwise be blown up to the largest one's range, noise included.
ACTIVATION_GAIN_CAP = 16.0
#: Sweeps over all pairs; the scales of MobileNetV2 settle (max change < 1e-4) within about 10.
MAX_SWEEPS = 32
_CONVERGED = 1e-4
#: ``GraphModule.meta`` key of what :func:`equalize` did (mode, pairs, reasons for none), for the build's console.
SUMMARY_KEY = "fx2trt_equalization"


@dataclass
class EqualizedPair:
    """One equalized pair: layer ``first`` -> ``link`` -> layer ``second`` and its channel scales.

    ``link`` is ``"identity"``, ``"relu"`` or ``"relu6"`` (``bound`` is then the clamp's upper bound).
    """

    first: str
    second: str
    link: str
    scales: list[float]
    link_node: str | None = None
    bound: float | None = None

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "first": self.first,
            "second": self.second,
            "link": self.link,
            "scales": list(self.scales),
            "link_node": self.link_node,
            "bound": self.bound,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EqualizedPair:
        """Inverse of :meth:`to_dict`."""
        return cls(
            data["first"],
            data["second"],
            data["link"],
            [float(s) for s in data["scales"]],
            data.get("link_node"),
            data.get("bound"),
        )


def _out_ranges(w: torch.Tensor) -> torch.Tensor:
    return w.abs().reshape(w.shape[0], -1).amax(1)


def _grouped(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Layer-2 weight as (groups, out/groups, in/groups, rest) so that input channels are (g, j)."""
    return w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)


def _in_ranges(w: torch.Tensor, groups: int) -> torch.Tensor:
    return _grouped(w, groups).abs().amax(dim=(1, 3)).reshape(-1)


def _scale_in(w: torch.Tensor, groups: int, s: torch.Tensor) -> torch.Tensor:
    g = _grouped(w, groups)
    return (g * s.reshape(groups, 1, -1, 1)).reshape(w.shape)


def compute_scales(
    gm: GraphModule, chains: list[tuple[Node, Node | None, Node]], max_sweeps: int = MAX_SWEEPS
) -> list[torch.Tensor]:
    """Cumulative float64 scales per chain, by sweeping the range balancing until it settles."""
    weights = {
        str(n.target): gm.get_submodule(str(n.target)).weight.detach().double()
        for chain in chains
        for n in (chain[0], chain[2])
    }
    scales = [
        torch.ones(
            gm.get_submodule(str(c[2].target)).weight.shape[1] * groups_of(gm.get_submodule(str(c[2].target))),
            dtype=torch.float64,
        )
        for c in chains
    ]
    for _ in range(max_sweeps):
        change = 0.0
        for k, (a, _link, b) in enumerate(chains):
            groups = groups_of(gm.get_submodule(str(b.target)))
            w1, w2 = weights[str(a.target)], weights[str(b.target)]
            r1, r2 = _out_ranges(w1), _in_ranges(w2, groups)
            ok = (r1 > 0) & (r2 > 0)  # dead channels keep scale 1
            s = torch.where(ok, torch.sqrt(r1 * r2) / r2.clamp_min(1e-300), torch.ones_like(r1))
            weights[str(a.target)] = w1 / s.reshape((-1,) + (1,) * (w1.dim() - 1))
            weights[str(b.target)] = _scale_in(w2, groups, s)
            scales[k] *= s
            change = max(change, float((s - 1).abs().max()))
        if change < _CONVERGED:
            break
    return scales


def channel_ranges(gm: GraphModule, nodes: list[Node], inputs: tuple) -> dict[str, torch.Tensor]:
    """Per-channel max |x| (float64) of the given nodes' outputs when ``gm`` runs on ``inputs``."""
    wanted = {n.name for n in nodes}
    ranges: dict[str, torch.Tensor] = {}

    class _Ranges(Interpreter):
        def run_node(self, n: Node) -> Any:
            out = super().run_node(n)
            if n.name in wanted:
                channels = out.detach().abs().transpose(0, 1).reshape(out.shape[1], -1)
                ranges[n.name] = channels.amax(1).double()
            return out

    with torch.no_grad():
        _Ranges(gm).run(*inputs)
    return ranges


def activation_scales(
    gm: GraphModule, chains: list[tuple[Node, Node | None, Node]], inputs: tuple
) -> list[tuple[tuple[Node, Node | None, Node], torch.Tensor]]:
    """The chains into a depthwise convolution with their activation-range scales (see the module docstring)."""
    into_depthwise = [c for c in chains if is_depthwise(gm.get_submodule(str(c[2].target)))]
    between = [link or a for a, link, _b in into_depthwise]
    ranges = channel_ranges(gm, between, inputs)
    scaled = []
    for chain, node in zip(into_depthwise, between):
        r = ranges[node.name]
        gain = torch.where(r > 0, r.max() / r.clamp_min(1e-300), torch.ones_like(r)).clamp(1.0, ACTIVATION_GAIN_CAP)
        scaled.append((chain, 1.0 / gain))  # the chain scale divides the first layer's output channels
    return scaled


def apply_scales(gm: GraphModule, pairs: list[EqualizedPair]) -> None:
    """Apply saved (or freshly computed) cumulative scales to the graph's layers and links, in place."""
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in gm.graph.nodes}
    first_scale: dict[str, torch.Tensor] = {}
    second_scale: dict[str, torch.Tensor] = {}
    for pair in pairs:
        if pair.first not in modules or pair.second not in modules:
            raise ConfigError(
                f"Equalized pair {pair.first} -> {pair.second} is not in this model; quantize the model again."
            )
        s = torch.tensor(pair.scales, dtype=torch.float64)
        first_scale[pair.first] = first_scale.get(pair.first, torch.ones_like(s)) * s
        second_scale[pair.second] = second_scale.get(pair.second, torch.ones_like(s)) * s
    with torch.no_grad():
        for name in set(first_scale) | set(second_scale):
            layer = modules[name]
            w = layer.weight.detach().double()
            if name in first_scale:
                s = first_scale[name]
                w = w / s.reshape((-1,) + (1,) * (w.dim() - 1))
                if layer.bias is not None:
                    layer.bias.copy_((layer.bias.detach().double() / s).to(layer.bias.dtype))
            if name in second_scale:
                w = _scale_in(w, groups_of(layer), second_scale[name])
            layer.weight.copy_(w.to(layer.weight.dtype))
    for pair in pairs:
        if pair.link == "relu6":
            _replace_clamp(gm, nodes[pair.link_node], pair)
    gm.graph.lint()
    gm.recompile()


def _replace_clamp(gm: GraphModule, node: Node, pair: EqualizedPair) -> None:
    """``relu6(y)`` -> ``minimum(relu(y), bound / s)`` per channel (y already carries 1/s)."""
    s = torch.tensor(pair.scales, dtype=torch.float64)
    second = gm.get_submodule(pair.second)
    shape = (1, -1) + (1,) * (second.weight.dim() - 2) if not isinstance(second, nn.Linear) else (-1,)
    attr = f"{node.name}_channel_bound"
    gm.register_buffer(attr, (pair.bound / s).to(torch.float32).reshape(shape))
    graph = gm.graph
    with graph.inserting_before(node):
        relu = graph.call_function(F.relu, (node.args[0],))
        bound = graph.get_attr(attr)
        clamp = graph.call_function(torch.minimum, (relu, bound))
    node.replace_all_uses_with(clamp)
    graph.erase_node(node)


def equalize(gm: GraphModule, max_sweeps: int = MAX_SWEEPS, inputs: tuple | None = None) -> list[EqualizedPair]:
    """Equalize every eligible conv/linear pair of a (BN-folded) graph in place; returns the pairs.

    Args:
        gm: captured graph whose modules the caller owns (BatchNorm folded first, so that BN-linked
            pairs become direct pairs).
        max_sweeps: bound on the balancing sweeps.
        inputs: example inputs (real data): then only the pairs into a depthwise convolution are
            equalized, by their activation ranges (``QuantConfig(equalization="activations")``).

    Returns:
        The pairs with their cumulative channel scales (what :func:`apply_scales` needs to redo it).
    """
    chains = find_pairs(gm)
    if inputs is None:
        scales = compute_scales(gm, chains, max_sweeps)
    else:  # activation-range mode: only the pairs into a depthwise convolution, no weight balancing
        scaled = activation_scales(gm, chains, inputs)
        chains, scales = [c for c, _ in scaled], [s for _, s in scaled]
    pairs = []
    for (a, link, b), s in zip(chains, scales):
        kind, bound = link_kind(gm, link) if link is not None else ("identity", None)  # type: ignore[misc]
        pairs.append(
            EqualizedPair(
                str(a.target),
                str(b.target),
                kind,
                [float(v) for v in s.tolist()],
                link.name if link is not None else None,
                bound,
            )
        )
    apply_scales(gm, pairs)
    mode = "weights" if inputs is None else "activations"
    reasons = [] if pairs else unpaired_reasons(gm, depthwise_only=inputs is not None)
    gm.meta[SUMMARY_KEY] = {"mode": mode, "pairs": len(pairs), "unpaired": reasons}
    return pairs


def summary_line(gm: GraphModule) -> str | None:
    """One line saying how many pairs :func:`equalize` equalized in ``gm`` and, for none, why and what to do.

    ``None`` when ``gm`` was not equalized. Example:
        >>> from fx2trt_pipeline.capture import capture
        >>> gm = capture(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Hardswish(), nn.Conv2d(8, 4, 1)).eval())
        >>> _ = equalize(gm)
        >>> print(summary_line(gm))  # doctest: +ELLIPSIS
        equalization (weights) equalized 0 pairs: 0 -> 2: Hardswish '_1' between them is ...; the model is quantized
        as if without --equalization
    """
    summary = gm.meta.get(SUMMARY_KEY)
    if summary is None:
        return None
    mode, count = summary["mode"], summary["pairs"]
    if count:
        what = "conv -> depthwise conv pairs by activation range" if mode == "activations" else "layer pairs"
        return f"equalization ({mode}) equalized {count} {what}"
    if summary["unpaired"]:
        why = summary["unpaired"][0] + (
            f" (and {len(summary['unpaired']) - 1} more)" if len(summary["unpaired"]) > 1 else ""
        )
    elif mode == "activations":
        why = "no conv/linear -> ReLU, ReLU6 or identity -> depthwise conv chain with single-use tensors"
    else:
        why = "no conv/linear -> ReLU, ReLU6 or identity -> conv/linear chain with single-use tensors"
    return f"equalization ({mode}) equalized 0 pairs: {why}; the model is quantized as if without --equalization"


__all__ = [
    "EqualizedPair",
    "activation_scales",
    "apply_scales",
    "channel_ranges",
    "compute_scales",
    "equalize",
    "find_pairs",
    "summary_line",
    "unpaired_reasons",
]
