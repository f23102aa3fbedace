"""Capture-time module rewrites: modules whose forward torch.fx cannot trace into quantizable ops become
equivalent modules made of plain ops, so that Q/DQ placement sees their matmuls and Linear layers.

* ``nn.MultiheadAttention`` -> :class:`DecomposedMultiheadAttention`: q / k / v / out projections as
  ``nn.Linear`` (int8 weights), ``Q @ K^T`` and ``attn @ V`` as ``torch.matmul`` (both inputs quantized),
  softmax in float. TensorRT fuses this pattern into its MHA kernels with INT8 matmul inputs.
* torchvision Swin's ``ShiftedWindowAttention`` / ``PatchMerging`` call ``torch.fx.wrap``-ed functions whose
  Python control flow depends on the feature-map size; with the sizes recorded from one forward pass on the
  example inputs they become :class:`StaticWindowAttention` / :class:`StaticPatchMerging` (padding, shift and
  window mask fixed at capture; the batch stays dynamic). They need example inputs, the rest does not.

Rewrites work on the model given (``quantize`` passes its private deep copy) and share its parameters.

Example:
    >>> import torch
    >>> from torch import nn
    >>> mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    >>> x = torch.randn(2, 5, 8)
    >>> out = DecomposedMultiheadAttention(mha)(x, x, x, need_weights=False)[0]
    >>> bool(torch.allclose(out, mha(x, x, x, need_weights=False)[0], atol=1e-5))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models import swin_transformer as swin

from fx2trt_pipeline.capture.input_size_padding import fix_input_size_padding, inputs_seen
from fx2trt_pipeline.errors import CaptureError


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone())
    return layer


class DecomposedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (packed projections, eval) as Linear + matmul + softmax + matmul + Linear."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise CaptureError(
                "nn.MultiheadAttention with separate q/k/v weights, bias_k/bias_v or add_zero_attn "
                "cannot be decomposed; keep it a leaf: "
                "QuantConfig(leaf_modules=('MultiheadAttention',))"
            )
        bias = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        self.q_proj, self.k_proj, self.v_proj = (_linear(w, b) for w, b in zip(mha.in_proj_weight.chunk(3), bias))
        self.out_proj = _linear(mha.out_proj.weight, mha.out_proj.bias)
        self.num_heads, self.embed_dim, self.batch_first = mha.num_heads, mha.embed_dim, mha.batch_first
        self.head_dim = mha.embed_dim // mha.num_heads
        self.scale = self.head_dim**-0.5

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: Any = None,
        need_weights: bool = True,
        attn_mask: Any = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise CaptureError("masked nn.MultiheadAttention is not decomposed; use F.scaled_dot_product_attention")
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(q.shape[0], -1, self.embed_dim)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = torch.mean(attn, dim=1) if average_attn_weights else attn
        return out, weights


def _window_mask(pad_hw: tuple[int, int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """Swin's shifted-window attention mask (0 / -100), shape (1, windows, 1, L, L)."""
    mask = torch.zeros(pad_hw)
    count = 0
    for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            mask[h[0] : h[1], w[0] : w[1]] = count
            count += 1
    mask = mask.view(pad_hw[0] // window[0], window[0], pad_hw[1] // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    return mask[None, :, None]


class StaticWindowAttention(nn.Module):
    """torchvision's ``ShiftedWindowAttention`` (V1) for a fixed feature-map size ``hw`` (batch free)."""

    def __init__(self, block: swin.ShiftedWindowAttention, hw: tuple[int, int]) -> None:
        super().__init__()
        self.qkv, self.proj = block.qkv, block.proj
        self.hw, self.window, self.heads = hw, list(block.window_size), block.num_heads
        self.scale = (block.qkv.in_features // block.num_heads) ** -0.5
        self.pad_hw = tuple(-(-s // w) * w for s, w in zip(hw, self.window))
        self.shift = [0 if w >= p else s for w, p, s in zip(self.window, self.pad_hw, block.shift_size)]
        self.register_buffer("position_bias", block.get_relative_position_bias().detach().clone())
        self.register_buffer("mask", _window_mask(self.pad_hw, self.window, self.shift) if sum(self.shift) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (ph, pw), (wh, ww) = self.hw, self.pad_hw, self.window
        c = x.shape[-1]
        if (ph, pw) != (h, w):
            x = torch.nn.functional.pad(x, (0, 0, 0, pw - w, 0, ph - h))
        if sum(self.shift):
            x = torch.roll(x, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
        windows = (ph // wh) * (pw // ww)
        x = x.reshape(-1, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)
        qkv = self.qkv(x).reshape(-1, wh * ww, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)) + self.position_bias
        if self.mask is not None:
            attn = (attn.reshape(-1, windows, self.heads, wh * ww, wh * ww) + self.mask).reshape(
                -1, self.heads, wh * ww, wh * ww
            )
        x = torch.matmul(torch.softmax(attn, dim=-1), v).transpose(1, 2).reshape(-1, wh * ww, c)
        x = self.proj(x)
        x = x.reshape(-1, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ph, pw, c)
        if sum(self.shift):
            x = torch.roll(x, shifts=(self.shift[0], self.shift[1]), dims=(1, 2))
        return x[:, :h, :w, :] if (ph, pw) != (h, w) else x


class StaticPatchMerging(nn.Module):
    """torchvision's ``PatchMerging`` (V1) for a fixed feature-map size ``hw``."""

    def __init__(self, block: swin.PatchMerging, hw: tuple[int, int]) -> None:
        super().__init__()
        self.norm, self.reduction, self.hw = block.norm, block.reduction, hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.hw
        if h % 2 or w % 2:
            x = torch.nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


_SIZED = (swin.ShiftedWindowAttention, swin.PatchMerging)


def _recorded_sizes(model: nn.Module, example_inputs: Sequence[Any] | None) -> dict[str, tuple[int, int]]:
    """(H, W) of the input of every Swin block, from one eval forward pass on the example inputs."""
    names = {m: n for n, m in model.named_modules() if type(m) in _SIZED}
    if not names:
        return {}
    if example_inputs is None:
        raise CaptureError(
            f"{type(model).__name__} has Swin window attention ({next(iter(names.values()))}...), "
            "whose padding and masks depend on the feature-map size: pass example_inputs"
        )
    seen = inputs_seen(model, names, example_inputs)
    return {names[m]: tuple(calls[0][0][-3:-1]) for m, calls in seen.items()}


def rewrite_for_capture(
    model: nn.Module, example_inputs: Sequence[Any] | None = None, leaf_modules: Sequence[str | type] = ()
) -> nn.Module:
    """Replace the modules listed in the module docstring inside ``model`` (in place); returns ``model``.

    Classes (or class names) in ``leaf_modules`` are left alone.

    Raises:
        CaptureError: a Swin model or a conv whose padding depends on the input size without example inputs,
            or an MHA variant that cannot be decomposed.
    """
    kept = {m if isinstance(m, str) else m.__name__ for m in leaf_modules}
    sizes = _recorded_sizes(model, example_inputs) if not {"ShiftedWindowAttention", "PatchMerging"} & kept else {}
    for name, module in list(model.named_modules()):
        if type(module).__name__ in kept or name in kept:
            continue
        if type(module) is nn.MultiheadAttention:
            new: nn.Module = DecomposedMultiheadAttention(module)
        elif type(module) is swin.ShiftedWindowAttention and name in sizes:
            new = StaticWindowAttention(module, sizes[name])
        elif type(module) is swin.PatchMerging and name in sizes:
            new = StaticPatchMerging(module, sizes[name])
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    fix_input_size_padding(model, example_inputs, kept)  # timm's Conv2dSame & co. (capture/input_size_padding.py)
    return model
