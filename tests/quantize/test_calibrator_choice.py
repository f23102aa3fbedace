"""Per-group calibrator choice: thresholds are judged by what the consumer layer does with the error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.errors import CalibrationError


def spiky(n: int, seed: int) -> torch.Tensor:
    """Channel 0 normal; channel 1 zero except rare spikes of 40 (0.1 % of its values: about 4 per sample)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 2, 64, 64)
    x[:, 0] = torch.randn(n, 64, 64, generator=gen)
    x[:, 1] = 40.0 * (torch.rand(n, 64, 64, generator=gen) < 0.001)
    return x


class TwoBranches(nn.Module):
    """Branch a ignores the spike channel (clipping it is free, which input-side MSE cannot know); branch b
    weighs it heavily (clipping it is costly, which the entropy calibrator cannot know)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(2, 4, 1)
        with torch.no_grad():
            self.a.weight[:, 1] = 0.0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.a(x), self.b(y)), 1)


def test_auto_per_group_judges_thresholds_by_the_consumer(tmp_path) -> None:
    m = TwoBranches().eval()
    calib = [(spiky(8, s), spiky(8, s + 10)) for s in range(2)]
    evaluation = (spiky(16, 30), spiky(16, 31))
    reference = m(*evaluation)
    errors, states = {}, {}
    for calibrator in ("minmax", "mse", "entropy", "auto_per_group"):
        cfg = ftp.QuantConfig(calibrator=calibrator, show_progress=False)
        qgm = ftp.quantize_model(m, calib, example_inputs=calib[0], config=cfg)
        errors[calibrator] = (qgm(*evaluation) - reference).pow(2).mean().item()
        states[calibrator] = ftp.get_quant_state(qgm)
    chosen, amax = states["auto_per_group"].chosen, states["auto_per_group"].amax
    assert set(chosen) == {"x", "y"} and chosen["x"] != "minmax", chosen
    assert amax["x"] < 0.25 * amax["y"], amax  # clips where the consumer ignores the spikes only
    # y keeps the rounding error of its wide range in every setting; x loses it only with auto_per_group
    assert errors["auto_per_group"] < 0.75 * min(errors["minmax"], errors["mse"], errors["entropy"]), errors
    ftp.save_quant_state(qgm, tmp_path / "q.json")
    loaded = ftp.load_quant_state(tmp_path / "q.json")
    assert loaded.chosen == chosen
    rebuilt = ftp.rebuild_quantized(m, loaded, example_inputs=calib[0])
    assert torch.equal(rebuilt(*evaluation), qgm(*evaluation))


def test_auto_per_group_needs_samples_from_prepare() -> None:
    calib = [(spiky(4, 0), spiky(4, 1))]
    prepared = ftp.prepare(TwoBranches().eval(), calib[0], ftp.QuantConfig(show_progress=False))
    ftp.calibrate(prepared, calib)
    with pytest.raises(CalibrationError, match="auto_per_group"):
        ftp.convert(prepared, ftp.QuantConfig(calibrator="auto_per_group", show_progress=False))
