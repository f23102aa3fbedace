"""Fold eval-mode BatchNorm into the preceding Conv / ConvTranspose / Linear.

TensorRT fuses BN into the weighted layer, so observing and quantizing the *folded* weights is what
matches the engine (placement rule 3).

Example:
    >>> import torch, torchvision
    >>> from fx2trt_pipeline.capture import capture
    >>> from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm
    >>> gm = capture(torchvision.models.resnet18().eval())
    >>> folded = fold_batchnorm(gm)
    >>> folded
    20
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.quantize.op_rules import overrides_forward

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm(gm: GraphModule, copy_layers: bool = True) -> int:
    """Fold every ``weighted -> BatchNorm`` pair in place; returns how many were folded.

    A pair folds when the weighted layer's output feeds only the BatchNorm, both are ``call_module``
    nodes, and the BatchNorm tracks running statistics. The BatchNorm node disappears from the graph.

    Args:
        gm: the captured graph; it shares its modules with the traced model.
        copy_layers: replace each weighted module by a folded copy, so that the traced model is never
            modified. ``False`` folds into the modules themselves: for graphs of a model copy you own.
    """
    modules = dict(gm.named_modules())
    folded = 0
    for bn_node in list(gm.graph.nodes):
        if bn_node.op != "call_module" or not isinstance(modules.get(bn_node.target), BATCHNORMS):
            continue
        src = bn_node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer, bn = modules[src.target], modules[bn_node.target]
        if not isinstance(layer, WEIGHTED) or bn.running_mean is None or bn.running_var is None:
            continue
        if any(isinstance(layer, cls) and overrides_forward(layer, cls) for cls in WEIGHTED):
            continue  # a leaf subclass with a forward of its own may not be affine in its weight and bias
        _set_submodule(gm, src.target, fold_pair(layer, bn, copy_layer=copy_layers))
        bn_node.replace_all_uses_with(src)
        gm.graph.erase_node(bn_node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return folded


def fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm, copy_layer: bool = True) -> nn.Module:
    """``layer`` with ``bn`` folded into its weight and bias: a copy, or ``layer`` itself updated."""
    import copy

    fused = copy.deepcopy(layer) if copy_layer else layer
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
        factor = gamma * inv_std
        w = fused.weight.double()
        if isinstance(fused, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            # weight is (in, out/groups, *k): output channel c = g * (out/groups) + j lives on axis 1.
            g = fused.groups
            shape = (g, 1, w.shape[1]) + (1,) * (w.dim() - 2)
            w = (w.reshape(g, w.shape[0] // g, *w.shape[1:]) * factor.reshape(shape)).reshape(w.shape)
        else:
            w = w * factor.reshape((-1,) + (1,) * (w.dim() - 1))
        bias = fused.bias.double() if fused.bias is not None else torch.zeros_like(inv_std)
        new_bias = (bias - bn.running_mean.double()) * factor + beta
        fused.weight = nn.Parameter(w.to(layer.weight.dtype), requires_grad=False)
        fused.bias = nn.Parameter(new_bias.to(layer.weight.dtype), requires_grad=False)
    return fused


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)
