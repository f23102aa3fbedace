"""Bias correction: the measured output shift of weight rounding is removed; state rebuilds it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.bias_correction import output_shift


def model(layers: int = 3) -> nn.Module:
    """Conv / depthwise / pointwise with one channel 30x larger: per-tensor weight scales round the others coarsely."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.ReLU(),
        nn.Conv2d(16, 8, 1),
    )[: 2 * layers - 1].eval()
    with torch.no_grad():
        for conv in m[::2]:
            conv.weight[0] *= 30
    return m


def data(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(8, 3, 8, 8, generator=gen) + 0.5 for _ in range(2)]


def test_output_shift_matches_the_measured_mean_difference() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, groups=2)
    x = torch.rand(16, 4, 9, 9, dtype=torch.float64) + 1
    w_q = conv.weight.detach() + 0.01 * torch.randn_like(conv.weight)
    conv2d = nn.functional.conv2d
    measured = (conv2d(x, w_q.double(), groups=2) - conv2d(x, conv.weight.double(), groups=2)).mean((0, 2, 3))
    predicted = output_shift(conv, w_q, x.mean((0, 2, 3)))
    torch.testing.assert_close(predicted, measured, rtol=0.05, atol=1e-4)  # no padding: exact up to E[x] per tap


@pytest.mark.parametrize("layers,factor", [(1, 0.3), (3, 0.75)])
def test_bias_correction_reduces_mean_output_error(tmp_path, layers: int, factor: float) -> None:
    """One layer: the shift is gone; three: later layers still see the nonlinear effect of earlier rounding."""
    m = model(layers)
    calib, evaluation = data(0), torch.cat(data(1))
    reference = m(evaluation)
    mean_error = {}
    for bc in (False, True):
        cfg = ftp.QuantConfig(calibrator="minmax", per_channel_weights=False, bias_correction=bc, show_progress=False)
        qgm = ftp.quantize_model(m, calib, example_inputs=(calib[0],), config=cfg)
        mean_error[bc] = (qgm(evaluation) - reference).mean((0, 2, 3)).abs().mean().item()
    assert mean_error[True] < factor * mean_error[False], mean_error
    assert ftp.get_quant_state(qgm).edits.biases  # the corrected biases are in the state
    ftp.save_quant_state(qgm, tmp_path / "q.json")
    rebuilt = ftp.rebuild_quantized(m, ftp.load_quant_state(tmp_path / "q.json"), example_inputs=(calib[0],))
    assert torch.equal(rebuilt(evaluation), qgm(evaluation))


def test_convert_asks_for_bias_correction_without_means() -> None:
    calib = data(0)
    prepared = ftp.prepare(model(), (calib[0],), ftp.QuantConfig(show_progress=False))
    ftp.calibrate(prepared, calib)
    with pytest.raises(ConfigError, match="bias_correction"):
        ftp.convert(prepared, ftp.QuantConfig(bias_correction=True, show_progress=False))
