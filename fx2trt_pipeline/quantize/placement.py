"""Decide where Q/DQ pairs go, following TensorRT's placement rules (NVIDIA's TensorRT developer guide,
"Explicit Quantization: Q/DQ Layer-Placement Recommendations"), as this project applies them:

1. Inputs of conv / deconv / linear / matmul / avgpool are quantized (activations per tensor).
2. Outputs of weighted ops are not quantized (TensorRT fuses the next layer's Q into them).
3. BatchNorm is folded before placement (see ``fold_bn``).
4. Residual add: the input produced by a single-use conv/deconv/linear is left in float so that
   conv + add fuse; the other (residual) input is quantized. An add with no such input, or with a
   constant operand (a detection head's anchor arithmetic), stays float.
5. MaxPool, Concat and nearest-neighbour resize are *transparent*: a request to quantize their output
   quantizes their inputs instead, all with one shared scale (a scale group), so the op runs on int8 data.
6. A tensor gets at most one Q/DQ pair, shared by every quantized consumer.

Placement is a pure function of the folded graph and the config, so it can be recomputed from the
float model when a saved quantization state is loaded, and checked against the saved one.

Example:
    >>> import torchvision
    >>> from fx2trt_pipeline.capture import capture
    >>> from fx2trt_pipeline.quantize.config import QuantConfig
    >>> from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm
    >>> gm = capture(torchvision.models.resnet18().eval()); _ = fold_batchnorm(gm)
    >>> p = place_qdq(gm, QuantConfig())
    >>> len(p.weights), len(p.points)
    (21, 22)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from torch.fx import GraphModule, Node

from fx2trt_pipeline.capture.functional_layers import is_functional_layer, layer_refusal
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.quantize.op_rules import DECONV_AXIS, FUSABLE_KINDS, OpRule, rule_for_node
from fx2trt_pipeline.quantize.qdq_ops import is_any_dequantize

#: A use of a tensor: (consumer node name, argument path). The path indexes ``node.args`` and, for
#: list arguments such as ``torch.cat``'s, the position inside the list.
Use = tuple[str, tuple[int, ...]]


@dataclass
class QuantPoint:
    """One Q/DQ pair placed right after the node ``tensor`` and feeding ``uses``."""

    tensor: str
    group: str
    uses: list[Use] = field(default_factory=list)


@dataclass
class ScaleGroup:
    """Tensors sharing one activation scale, with the calibrator chosen for them."""

    key: str
    members: list[str]
    calibrator: str
    percentile: float
    owner: str  # the first quantized layer that asked for this group (drives overrides)


@dataclass
class WeightPoint:
    """A weighted module whose weight is quantized (per channel on ``axis``, or per tensor)."""

    layer: str
    module: str
    kind: str
    axis: int | None


@dataclass
class Placement:
    """Where every Q/DQ goes; JSON-serialisable via :meth:`to_dict`."""

    points: dict[str, QuantPoint]
    groups: dict[str, ScaleGroup]
    weights: dict[str, WeightPoint]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "points": [asdict(p) for p in self.points.values()],
            "groups": [asdict(g) for g in self.groups.values()],
            "weights": [asdict(w) for w in self.weights.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Placement:
        """Inverse of :meth:`to_dict`."""
        points = {}
        for p in data["points"]:
            points[p["tensor"]] = QuantPoint(p["tensor"], p["group"], [(u[0], tuple(u[1])) for u in p["uses"]])
        return cls(
            points,
            {g["key"]: ScaleGroup(**g) for g in data["groups"]},
            {w["layer"]: WeightPoint(**w) for w in data["weights"]},
        )


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def layer_name(node: Node) -> str:
    """The name patterns match against: the module path for modules, else the node name."""
    return str(node.target) if node.op == "call_module" else node.name


def float_reason(node: Node, modules: Mapping[str, Any], config: QuantConfig) -> str | None:
    """Why a quantizable op is in float: its kind is not quantized, a skip / override matches, or it is a
    functional conv / linear whose weight is not a parameter (see :mod:`fx2trt_pipeline.capture.functional_layers`).

    ``None`` for an op the configuration quantizes, and for nodes no placement rule covers.
    """
    if node.op not in ("call_module", "call_function", "call_method"):
        return None
    rule = rule_for_node(node, modules)
    if rule is None:
        return None
    if rule.kind not in config.quantize_ops:
        return f"op kind '{rule.kind}' is not in QuantConfig.quantize_ops"
    mtype = type(modules[str(node.target)]).__name__ if node.op == "call_module" else None
    if config.resolve(layer_name(node), mtype).skip or config.resolve(node.name, mtype).skip:
        return "matched QuantConfig.skip or an override with skip=True"
    if is_functional_layer(node) and not _weight_is_dequantized(node):
        why = layer_refusal(node, node.graph.owning_module) or "the quantizer did not take it as a layer"
        return f"its weight stays float: {why}"
    return None


def _weight_is_dequantized(node: Node) -> bool:
    """The weight argument of a functional conv / linear is a dequantize node (an int8 weight)."""
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    return isinstance(weight, Node) and is_any_dequantize(weight)


#: ``naming(node) -> (layer name, module class name or None)``: what skip / override patterns match.
Naming = Callable[[Node], tuple[str, Union[str, None]]]


class _Placer:
    def __init__(self, gm: GraphModule, config: QuantConfig, naming: Naming | None = None) -> None:
        self.gm, self.config, self.naming = gm, config, naming
        self.modules = dict(gm.named_modules())
        self.order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
        self.uses: dict[str, list[Use]] = {}
        self.owner: dict[str, Node] = {}
        self.uf = _UnionFind()

    def settings(self, node: Node):
        if self.naming is not None:
            return self.config.resolve(*self.naming(node))
        mtype = type(self.modules[node.target]).__name__ if node.op == "call_module" else None
        by_path = self.config.resolve(layer_name(node), mtype)
        by_node = self.config.resolve(node.name, mtype)
        return by_path if by_path.skip or not by_node.skip else by_node

    def rule(self, node: Node) -> OpRule | None:
        return rule_for_node(node, self.modules)

    def quantized(self, node: Node, rule: OpRule | None) -> bool:
        return rule is not None and rule.kind in self.config.quantize_ops and not self.settings(node).skip

    def request(self, arg: Any, consumer: Node, path: tuple[int, ...], owner: Node) -> list[str]:
        """Ask for ``arg`` (an input of ``consumer`` at ``path``) to be quantized; returns leaf tensors."""
        if not isinstance(arg, Node):
            return []
        rule = self.rule(arg)
        if rule is not None and rule.transparent and not self.settings(arg).skip:
            leaves = []
            if isinstance(arg.args[0], (list, tuple)):  # torch.cat([...])
                for i, inp in enumerate(arg.args[0]):
                    leaves += self.request(inp, arg, (0, i), owner)
            else:
                leaves += self.request(arg.args[0], arg, (0,), owner)
            for leaf in leaves[1:]:
                self.uf.union(leaves[0], leaf)
            return leaves
        use = (consumer.name, path)
        uses = self.uses.setdefault(arg.name, [])
        if use not in uses:
            uses.append(use)
        self.owner.setdefault(arg.name, owner)
        self.uf.find(arg.name)
        return [arg.name]

    def fusable(self, producer: Any) -> bool:
        if not isinstance(producer, Node) or len(producer.users) != 1:
            return False
        rule = self.rule(producer)
        return rule is not None and rule.kind in FUSABLE_KINDS and self.quantized(producer, rule)

    def run(self) -> Placement:
        weights: dict[str, WeightPoint] = {}
        for node in self.gm.graph.nodes:
            rule = self.rule(node)
            if rule is None or rule.transparent or not self.quantized(node, rule):
                continue
            if rule.kind == "add":
                a, b = node.args[0], node.args[1] if len(node.args) > 1 else None
                if not (isinstance(a, Node) and isinstance(b, Node)) or "get_attr" in (a.op, b.op):
                    continue  # a constant operand (anchor grids, offsets) is never quantized
                if self.fusable(a):
                    self.request(b, node, (1,), node)
                elif self.fusable(b):
                    self.request(a, node, (0,), node)
                continue
            for idx in rule.act_args:
                if idx < len(node.args):
                    self.request(node.args[idx], node, (idx,), node)
            weight = node if node.op == "call_module" else None
            if rule.weight_arg is not None and rule.weight_arg < len(node.args):
                weight = node.args[rule.weight_arg]  # an exported graph's weight input (get_attr)
            if rule.weight_axis is not None and isinstance(weight, Node):
                axis: int | None = (
                    self.config.deconv_weight_axis if rule.weight_axis == DECONV_AXIS else rule.weight_axis
                )
                weights[node.name] = WeightPoint(
                    node.name, str(weight.target), rule.kind, axis if self.config.per_channel_weights else None
                )
        return self.finish(weights)

    def finish(self, weights: dict[str, WeightPoint]) -> Placement:
        tensors = sorted(self.uses, key=self.order.__getitem__)
        members: dict[str, list[str]] = {}
        for t in tensors:
            members.setdefault(self.uf.find(t), []).append(t)
        groups, key_of = {}, {}
        for root, names in members.items():
            key = names[0]
            owner = min((self.owner[n] for n in names), key=lambda o: self.order[o.name])
            s = self.settings(owner)
            groups[key] = ScaleGroup(
                key,
                names,
                s.calibrator or self.config.calibrator,
                float(s.percentile or self.config.percentile),
                owner.name,
            )
            for n in names:
                key_of[n] = key
        points = {t: QuantPoint(t, key_of[t], self.uses[t]) for t in tensors}
        return Placement(points, groups, weights)


def place_qdq(gm: GraphModule, config: QuantConfig, naming: Naming | None = None) -> Placement:
    """Compute the Q/DQ placement of a captured, BN-folded graph (see module docstring).

    ``naming`` gives the names skip / override patterns match for graphs whose nodes are not modules
    (exported aten graphs); by default a ``call_module`` node is its module path and class, any other
    node its node name.
    """
    return _Placer(gm, config, naming).run()


def set_use(node: Node, path: tuple[int, ...], value: Node | Any) -> None:
    """Replace the argument of ``node`` at ``path`` (see :data:`Use`) with ``value``."""
    args = list(node.args)
    if len(path) == 1:
        args[path[0]] = value
    else:
        inner = list(args[path[0]])
        inner[path[1]] = value
        args[path[0]] = type(node.args[path[0]])(inner)
    node.args = tuple(args)


__all__ = [
    "Placement",
    "QuantPoint",
    "ScaleGroup",
    "WeightPoint",
    "float_reason",
    "layer_name",
    "place_qdq",
    "set_use",
]
