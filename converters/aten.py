"""The aten ops of ``torch.export`` graphs (PT2E: ``convert_pt2e`` output, or plain exported models).

An exported graph calls aten overloads (``aten.conv2d.default``, ``aten.relu_.default``, ...) whose
arguments come in the same order as their torch / functional counterparts, so each is registered here on
the converter that already handles that op (``convert_functional_conv`` for ``aten.conv2d.default``);
the supported-op table lists them under that converter's family. In-place overloads (``relu_``,
``add_``, ``hardtanh_``) return their result as a new value in exported graphs, which is all the
network needs.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.converters import REGISTRY
    >>> REGISTRY.lookup_key(torch.ops.aten.conv2d.default).fn.__name__
    'convert_functional_conv'
"""

from __future__ import annotations

from typing import Any

import torch
from torch.export._unlift import GuardsFn  # the class of the guard submodule ExportedProgram.module() adds
from torch.fx import Node

from fx2trt_pipeline.converters.activation import (
    convert_hardsigmoid,
    convert_hardswish,
    convert_hardtanh,
    convert_relu,
    convert_relu6,
    convert_sigmoid,
    convert_silu,
)
from fx2trt_pipeline.converters.conv import check_functional_conv, convert_functional_conv
from fx2trt_pipeline.converters.elementwise import convert_add, convert_mul, convert_sub
from fx2trt_pipeline.converters.linear import check_functional_linear, convert_functional_linear, convert_matmul
from fx2trt_pipeline.converters.misc import check_dropout, convert_cat, convert_dropout, convert_identity
from fx2trt_pipeline.converters.pooling import check_pool, convert_adaptive_avg_pool, convert_pool
from fx2trt_pipeline.converters.reduce import check_reduce, convert_mean
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.converters.shape import convert_flatten, convert_reshape
from fx2trt_pipeline.network.context import ConversionContext

aten = torch.ops.aten

#: (converter, acceptance check, aten overloads it takes): one row per torch op family.
ATEN_CONVERTERS: tuple[tuple[Any, Any, tuple[Any, ...]], ...] = (
    (
        convert_functional_conv,
        check_functional_conv,
        (aten.conv1d.default, aten.conv2d.default, aten.conv_transpose1d.default, aten.conv_transpose2d.input),
    ),
    (convert_functional_linear, check_functional_linear, (aten.linear.default,)),
    (convert_matmul, None, (aten.matmul.default, aten.mm.default, aten.bmm.default)),
    (convert_relu, None, (aten.relu.default, aten.relu_.default)),
    (convert_relu6, None, (aten.relu6.default,)),
    (convert_hardtanh, None, (aten.hardtanh.default, aten.hardtanh_.default)),
    (convert_sigmoid, None, (aten.sigmoid.default, aten.sigmoid_.default)),
    (convert_silu, None, (aten.silu.default, aten.silu_.default)),
    (convert_hardswish, None, (aten.hardswish.default, aten.hardswish_.default)),
    (convert_hardsigmoid, None, (aten.hardsigmoid.default, aten.hardsigmoid_.default)),
    (convert_add, None, (aten.add.Tensor, aten.add_.Tensor)),
    (convert_sub, None, (aten.sub.Tensor, aten.sub_.Tensor)),
    (convert_mul, None, (aten.mul.Tensor, aten.mul_.Tensor)),
    (convert_pool, check_pool, (aten.max_pool2d.default, aten.avg_pool2d.default)),
    (convert_adaptive_avg_pool, None, (aten.adaptive_avg_pool2d.default,)),
    (convert_mean, check_reduce, (aten.mean.dim,)),
    (convert_flatten, None, (aten.flatten.using_ints,)),
    (convert_reshape, None, (aten.view.default, aten.reshape.default)),
    (convert_cat, None, (aten.cat.default,)),
    (convert_dropout, check_dropout, (aten.dropout.default,)),
    (convert_identity, None, (aten.clone.default,)),
)

for _fn, _check, _targets in ATEN_CONVERTERS:
    register(*_targets, can_convert=_check)(_fn)


@register(GuardsFn)
def convert_export_guards(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> None:
    """ExportedProgram.module()'s input-shape guard: no layer (the engine's profile checks shapes)."""
    return None
