"""What each weighted layer reads in the float model and in the quantized model, side by side.

Reconstruction methods that compensate earlier rounding (AdaRound with quantized inputs, Nagel et al.
2020, section 4.3 "asymmetric reconstruction") need, for layer ``L``, its float input ``x`` (float model)
and the input ``x_q`` it gets in the quantized model *with every earlier layer already in its final
form*. :func:`lockstep_inputs` walks the float graph and the reference-quantized graph node by node, one
walk per calibration batch, pauses both at each requested layer, and hands out the layer's input second
moments over every output position (all positions: no sampled rows to over-fit):

* ``qq = sum x_q x_q^T`` and ``qe = sum x_q e^T`` with ``e = x_q - x``, and ``ee = sum e e^T``
  (float32 within a chunk of positions, summed in float64),

per group of a grouped convolution, over the ``k = in/groups * kernel`` values each output reads. With
``D = W~ - W`` the layer's output error ``W~ x_q - W x = D x_q + W e`` has the squared norm
``tr(D qq D^T) + 2 tr(D qe W^T) + tr(W ee W^T)`` in sums over positions: no large terms cancel.

The caller may change the quantized layer's int8 weights (buffer ``<layer>_weight_int8``) and bias before
resuming; the walk then re-evaluates the layer's weight dequantize, so every later layer sees the change.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(2, 4, 3, groups=2)
    >>> gram = InputGram.of(conv)
    >>> x = torch.randn(1, 2, 5, 5)
    >>> gram.add(conv, x, x.round())
    >>> tuple(gram.qq.shape), gram.positions
    ((2, 9, 9), 9)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Interpreter, Node

from fx2trt_pipeline.errors import CalibrationError

#: Output positions unfolded at once when accumulating a convolution's input moments (bounds memory).
POSITIONS_PER_CHUNK = 1 << 15


@dataclass
class InputGram:
    """Second moments of one layer's float and quantized inputs over output positions (float64 sums)."""

    qq: torch.Tensor
    qe: torch.Tensor
    ee: torch.Tensor
    positions: int = 0

    @classmethod
    def of(cls, layer: nn.Module) -> InputGram:
        """Zeros shaped ``(groups, k, k)`` for a conv2d / linear layer."""
        groups, k = kernel_shape(layer)
        device = layer.weight.device
        zeros = [torch.zeros(groups, k, k, dtype=torch.float64, device=device) for _ in range(3)]
        return cls(*zeros)

    def add(self, layer: nn.Module, x: torch.Tensor, xq: torch.Tensor) -> None:
        """Accumulate the float input ``x`` and the quantized model's input ``xq`` of ``layer``."""
        for a, q in zip(_columns(layer, x), _columns(layer, xq)):  # (images, groups, k, positions)
            e = q - a
            # float32 products within an image, float64 across images: the moments only weigh the fit
            for qi, ei in zip(q, e):
                self.qq += qi @ qi.transpose(1, 2)
                self.qe += qi @ ei.transpose(1, 2)
                self.ee += ei @ ei.transpose(1, 2)
            self.positions += q.shape[0] * q.shape[-1]


def kernel_shape(layer: nn.Module) -> tuple[int, int]:
    """``(groups, values each output reads per group)`` of a conv2d / linear layer."""
    if isinstance(layer, nn.Linear):
        return 1, layer.in_features
    return layer.groups, layer.in_channels // layer.groups * math.prod(layer.kernel_size)


def output_positions(layer: nn.Module, x: torch.Tensor) -> int:
    """How many outputs (per channel) ``layer`` computes from ``x``: the rows of its reconstruction."""
    if isinstance(layer, nn.Linear):
        return x.numel() // x.shape[-1]
    count = x.shape[0]
    for size, k, s, p, d in zip(x.shape[2:], layer.kernel_size, layer.stride, layer.padding, layer.dilation):
        count *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    return count


def _columns(layer: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The layer's input as ``(images, groups, k, positions)`` column blocks, a few images at a time (views
    where possible: a 1x1 convolution reads its input as it is, a linear layer its transposed rows)."""
    groups, k = kernel_shape(layer)
    if isinstance(layer, nn.Linear):
        flat = x.reshape(-1, x.shape[-1])
        for start in range(0, flat.shape[0], POSITIONS_PER_CHUNK):
            yield flat[start : start + POSITIONS_PER_CHUNK].t()[None, None]
        return
    pointwise = all(v == 1 for v in (*layer.kernel_size, *layer.stride)) and not any(layer.padding)
    step = max(1, POSITIONS_PER_CHUNK // max(1, output_positions(layer, x[:1])))
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step]
        if pointwise:
            cols = chunk.reshape(chunk.shape[0], chunk.shape[1], -1)
        else:
            cols = F.unfold(chunk, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        yield cols.reshape(cols.shape[0], groups, k, cols.shape[-1])


def _placeholder_values(gm: GraphModule, args: tuple[Any, ...]) -> list[Any]:
    """Positional values for the graph's placeholders from a batch (tuple, or a 1-tuple holding a dict).

    Trailing defaults of a positional batch are the Interpreter's own business; a dict batch is put in
    placeholder order here, defaults filled in where a key is missing.
    """
    if not (len(args) == 1 and isinstance(args[0], dict)):
        return list(args)
    values = []
    for node in (n for n in gm.graph.nodes if n.op == "placeholder"):
        if node.target in args[0]:
            values.append(args[0][node.target])
        elif node.args:
            values.append(node.args[0])
        else:
            raise CalibrationError(f"Calibration batch has no input '{node.target}' (keys {sorted(args[0])})")
    return values


def walk_to_layers(gm: GraphModule, args: tuple[Any, ...], layers: Sequence[str]) -> Iterator[tuple[str, Any]]:
    """Run ``gm`` on ``args`` node by node, yielding ``(layer, its first input)`` before each layer in
    ``layers`` runs. After resuming, the layer's weight dequantize (if any) is evaluated again."""
    interpreter = Interpreter(gm)
    interpreter.env = {}
    interpreter.args_iter = iter(_placeholder_values(gm, args))
    wanted = set(layers)
    nodes = {n.name: n for n in gm.graph.nodes}
    for node in gm.graph.nodes:
        if node.name in wanted:
            first = node.args[0]
            yield node.name, interpreter.env[first] if isinstance(first, Node) else first
            weight_dq = nodes.get(f"{node.name}_weight_dq")
            if weight_dq is not None and weight_dq in interpreter.env:
                _rerun(interpreter, weight_dq)
        if node.op == "output":
            return
        interpreter.env[node] = _run(interpreter, node)
        for used_up in interpreter.user_to_last_uses.get(node, []):
            del interpreter.env[used_up]


def _rerun(interpreter: Interpreter, node: Node) -> None:
    """Evaluate ``node`` again from its (get_attr) inputs, which the walk has already let go."""
    missing = [n for n in node.all_input_nodes if n not in interpreter.env]
    for n in missing:
        interpreter.env[n] = _run(interpreter, n)
    interpreter.env[node] = _run(interpreter, node)
    for n in missing:
        del interpreter.env[n]


def _run(interpreter: Interpreter, node: Node) -> Any:
    # Not one no_grad block around the walk: a generator suspended inside it would leave the caller's
    # code (the rounding optimisation) without autograd.
    with torch.no_grad():
        return interpreter.run_node(node)


def lockstep_inputs(
    float_gm: GraphModule, quantized: GraphModule, layers: Sequence[str], batches: Iterable[tuple[Any, ...]]
) -> Iterator[tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """For each layer of ``layers`` (in graph order): ``(layer, [(x, x_q) per batch])``.

    ``float_gm`` and ``quantized`` must hold the layer nodes under the same names and in the same order
    (the reference graph is built from the float graph in place). Changes the caller makes to the quantized
    layer between two steps reach every later layer.
    """
    order = [n.name for n in quantized.graph.nodes if n.name in set(layers)]
    walks = [(walk_to_layers(float_gm, args, order), walk_to_layers(quantized, args, order)) for args in batches]
    for name in order:
        pairs = []
        for float_walk, quantized_walk in walks:
            (a, x), (b, xq) = next(float_walk), next(quantized_walk)
            if not a == b == name:
                raise CalibrationError(f"Float and quantized graphs reach layers in another order ({a}, {b})")
            pairs.append((x, xq))
        yield name, pairs


__all__ = ["InputGram", "kernel_shape", "lockstep_inputs", "output_positions", "walk_to_layers"]
