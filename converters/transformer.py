"""Transformer converters: LayerNorm (module and ``F.layer_norm``), ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention`` left as a leaf module (float graphs; the quantizer decomposes it at capture, see
:mod:`fx2trt_pipeline.capture.rewrites`)."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fx2trt_pipeline.converters.common import arg, attr_value, is_constant, module_of, node_arg
from fx2trt_pipeline.converters.registry import register
from fx2trt_pipeline.network.context import ConversionContext, ITensor
from fx2trt_pipeline.network.shape_builders import dim_size, dims_of, permute, reshape
from fx2trt_pipeline.network.tensor_builders import attention, layer_norm
from fx2trt_pipeline.network.weight_builders import linear


def check_layer_norm(node: Node) -> str | None:
    """Accept LayerNorm whose weight and bias are constants."""
    if node.op == "call_module":
        return None
    for index, name in ((2, "weight"), (3, "bias")):
        value = node_arg(node, index, name, None)
        if value is not None and not is_constant(value):
            return f"layer_norm {name} must be a constant (get_attr), got {value}"
    return None


@register(nn.LayerNorm, F.layer_norm, can_convert=check_layer_norm)
def convert_layer_norm(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """LayerNorm -> INormalizationLayer over the normalized (last) dims."""
    x = ctx.as_tensor(arg(args, kwargs, 0, "input"), ctx.name(node, "input"))
    if node.op == "call_module":
        m = ctx.module(node)
        shape, weight, bias, eps = m.normalized_shape, m.weight, m.bias, m.eps
    else:
        shape = arg(args, kwargs, 1, "normalized_shape")
        weight, bias = attr_value(arg(args, kwargs, 2, "weight", None)), attr_value(arg(args, kwargs, 3, "bias", None))
        eps = arg(args, kwargs, 4, "eps", 1e-5)
    shape = [shape] if isinstance(shape, int) else list(shape)
    return layer_norm(ctx, ctx.name(node), x, shape, weight, bias, float(eps))


def additive_mask(ctx: ConversionContext, name: str, mask: Any) -> ITensor | None:
    """A constant boolean mask (True = attend) as ``0 / -inf``; float masks pass through."""
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    return ctx.as_tensor(mask, name)


def check_sdpa(node: Node) -> str | None:
    """Accept inference attention: no dropout, no causal flag, no GQA broadcast, constant or float mask."""
    if node_arg(node, 4, "dropout_p", 0.0):
        return "dropout_p must be 0 at inference"
    if node_arg(node, 5, "is_causal", False):
        return "is_causal=True is not supported; pass an explicit attn_mask"
    if node.kwargs.get("enable_gqa", False):
        return "enable_gqa=True is not supported"
    return None


@register(F.scaled_dot_product_attention, can_convert=check_sdpa)
def convert_sdpa(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> ITensor:
    """``F.scaled_dot_product_attention`` -> matmul, scale, (mask), softmax, matmul."""
    name = ctx.name(node)
    q, k, v = (ctx.as_tensor(arg(args, kwargs, i, n), ctx.name(name, n)) for i, n in enumerate("qkv"))
    mask = additive_mask(ctx, ctx.name(name, "mask"), arg(args, kwargs, 3, "attn_mask", None))
    return attention(ctx, name, (q, k, v), mask, kwargs.get("scale"))


def check_multihead_attention(node: Node) -> str | None:
    """Accept batch-first or sequence-first MHA with packed projections and no key padding mask."""
    m = module_of(node)
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        return "separate q/k/v projection weights, bias_k/bias_v and add_zero_attn are not supported"
    if node_arg(node, 3, "key_padding_mask", None) is not None or node_arg(node, 5, "attn_mask", None) is not None:
        return "key_padding_mask / attn_mask are not supported on nn.MultiheadAttention; use SDPA"
    if any(u.target is operator.getitem and u.args[1] == 1 and u.users for u in node.users):
        return "the attention weights output is not supported (call it with need_weights=False)"
    return None


def _heads(ctx: ConversionContext, name: str, x: ITensor, heads: int) -> ITensor:
    """(B, L, E) -> (B, heads, L, E / heads)."""
    batch, seq = dim_size(ctx, name, x, 0), dim_size(ctx, name, x, 1)
    split = reshape(ctx, ctx.name(name, "split"), x, [batch, seq, heads, dims_of(x)[2] // heads])
    return permute(ctx, name, split, [0, 2, 1, 3])


@register(nn.MultiheadAttention, can_convert=check_multihead_attention)
def convert_multihead_attention(ctx: ConversionContext, node: Node, args: tuple, kwargs: dict) -> tuple:
    """nn.MultiheadAttention (leaf) -> in-projections, attention per head, out-projection; weights None."""
    m, name = ctx.module(node), ctx.name(node)
    w, b = (
        m.in_proj_weight.detach().chunk(3),
        (m.in_proj_bias.detach().chunk(3) if m.in_proj_bias is not None else (None,) * 3),
    )
    projected = []
    for i, part in enumerate("qkv"):
        x = ctx.as_tensor(arg(args, kwargs, i, ("query", "key", "value")[i]), ctx.name(name, f"{part}_input"))
        if not m.batch_first:
            x = permute(ctx, ctx.name(name, f"{part}_batch_first"), x, [1, 0, 2])
        x = linear(ctx, ctx.name(name, f"{part}_proj"), x, w[i], b[i])
        projected.append(_heads(ctx, ctx.name(name, f"{part}_heads"), x, m.num_heads))
    out = attention(ctx, ctx.name(name, "attention"), tuple(projected))
    out = permute(ctx, ctx.name(name, "merge"), out, [0, 2, 1, 3])
    batch, seq = dim_size(ctx, name, out, 0), dim_size(ctx, name, out, 1)
    out = reshape(ctx, ctx.name(name, "merged"), out, [batch, seq, m.embed_dim])
    bias = m.out_proj.bias.detach() if m.out_proj.bias is not None else None
    out = linear(ctx, ctx.name(name, "out_proj"), out, m.out_proj.weight.detach(), bias)
    if not m.batch_first:
        out = permute(ctx, ctx.name(name, "seq_first"), out, [1, 0, 2])
    return out, None
