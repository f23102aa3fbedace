"""Calls of modules that return their input unchanged (``nn.Identity``, eval-mode dropout) leave the graph.

Model packages use them as placeholders: efficientnet_pytorch's ``Conv2dStaticSamePadding`` pads with
``nn.Identity()`` where no padding is needed, and classifiers end in ``nn.Dropout``. Left in the graph, such a call
is a tensor of its own: a residual block's input reaches its conv through an Identity and its add directly, so
placement puts two Q/DQ pairs with two scales on what is one tensor to TensorRT and ONNX (which drop the no-op), and
the ONNX exporter merges the pair it finds twice. Without the call, the tensor has one Q/DQ pair and one scale.

Example:
    >>> import torch
    >>> from torch import nn
    >>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Identity(), nn.Linear(4, 2), nn.Dropout(0.1)).eval())
    >>> drop_no_op_modules(gm)
    ['0', '2']
    >>> [n.op for n in gm.graph.nodes]
    ['placeholder', 'call_module', 'output']
"""

from __future__ import annotations

from torch import nn
from torch.fx import GraphModule

#: Modules that return their input unchanged; the dropout ones only in eval mode.
_IDENTITY = (nn.Identity,)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _is_no_op(module: nn.Module) -> bool:
    if type(module) in _IDENTITY:
        return True
    return type(module) in _DROPOUT and not module.training


def drop_no_op_modules(gm: GraphModule) -> list[str]:
    """Remove (in place) every one-argument call of a module that returns its input unchanged; returns their paths.

    Only exact ``nn.Identity`` / eval-mode ``nn.Dropout*`` classes count: a subclass may do more.
    """
    modules = dict(gm.named_modules())
    dropped = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        if not _is_no_op(modules[str(node.target)]) or not isinstance(node.args[0], type(node)):
            continue
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        dropped.append(str(node.target))
    if dropped:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return dropped


__all__ = ["drop_no_op_modules"]
