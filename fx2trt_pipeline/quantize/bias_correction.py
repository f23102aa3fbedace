"""Bias correction: fold the expected output shift caused by weight quantization into the float bias.

Rounding a layer's weights to int8 changes its output by ``(W_q - W) x``. Its expectation over the
data, ``(W_q - W) E[x]``, is a per-output-channel constant that the next layers see as a bias shift
(Nagel et al., "Data-Free Quantization", ICCV 2019, section 4.2, its empirical variant). ``E[x]`` per
input channel of every quantized conv / linear layer is measured on the calibration data in the same
single pass that collects the activation statistics (:class:`ChannelMeanObserver`), and the corrected
bias is ``b - (W_q - W) E[x]``. For a convolution the shift of output channel ``o`` is
``sum over its input channels i and kernel taps of (W_q - W)[o, i, taps] * E[x_i]`` (exact away from
the zero-padded border).

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(2, 3, 3)
    >>> mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    >>> w_q = conv.weight.detach() + 0.01
    >>> shift = output_shift(conv, w_q, mean)
    >>> [round(v, 4) for v in shift.tolist()]
    [-0.045, -0.045, -0.045]
"""

from __future__ import annotations

import torch
from torch import nn

from fx2trt_pipeline.errors import CalibrationError


class ChannelMeanObserver(nn.Module):
    """Identity module accumulating the per-channel sum of its input (channel axis 1, or last for 2-D).

    Example:
        >>> obs = ChannelMeanObserver("conv1")
        >>> _ = obs(torch.ones(2, 3, 4, 4))
        >>> obs.mean().tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, layer: str, channel_last: bool = False) -> None:
        super().__init__()
        self.layer = layer
        self.channel_last = channel_last
        self.total: torch.Tensor | None = None
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = x.detach()
        if self.channel_last or xd.dim() < 3:
            flat = xd.reshape(-1, xd.shape[-1])
        else:
            flat = xd.transpose(0, 1).reshape(xd.shape[1], -1).t()
        part = flat.sum(0, dtype=torch.float64)
        self.total = part if self.total is None else self.total + part
        self.count += flat.shape[0]
        return x

    def mean(self) -> torch.Tensor:
        """E[x] per channel (float64)."""
        if self.total is None or self.count == 0:
            raise CalibrationError(
                f"Bias correction of layer '{self.layer}' saw no calibration data: no batch "
                "reached it; calibrate with data that runs this layer."
            )
        return self.total / self.count


def output_shift(layer: nn.Module, w_q: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``(W_q - W) E[x]`` per output channel of a conv (any groups) or linear layer (float64)."""
    dw = w_q.double() - layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        return dw @ mean.to(dw.device)
    groups = layer.groups
    per_tap = dw.reshape(dw.shape[0], dw.shape[1], -1).sum(2)  # (out, in / groups)
    mean_g = mean.to(dw.device).reshape(groups, 1, -1)  # (groups, 1, in / groups)
    return (per_tap.reshape(groups, -1, dw.shape[1]) * mean_g).sum(2).reshape(-1)


def corrected_bias(layer: nn.Module, w_q: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The layer's bias (zero when it has none) minus the expected shift, in the weight's dtype."""
    shift = output_shift(layer, w_q, mean)
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(shift)
    return (bias - shift).to(layer.weight.dtype)


def set_bias(layer: nn.Module, bias: torch.Tensor) -> None:
    """Replace (or add) the layer's bias in place."""
    layer.bias = nn.Parameter(bias.to(layer.weight.device), requires_grad=False)


__all__ = ["ChannelMeanObserver", "corrected_bias", "output_shift", "set_bias"]
