"""`fx2trt build` flags of the post-training algorithms reach QuantConfig; the report says what ran."""

from __future__ import annotations

import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.deploy.analysis import algorithms_run
from fx2trt_pipeline.deploy.cli import build_overrides, build_parser
from fx2trt_pipeline.deploy.config_loader import run_config_from_sources
from fx2trt_pipeline.deploy.report import _algorithms_label


def test_flags_reach_quant_config() -> None:
    args = build_parser().parse_args(
        [
            "build",
            "--equalization",
            "--bias-correction",
            "--adaround",
            "--adaround-iterations",
            "7",
            "--adaround-batches",
            "3",
            "--calibrator",
            "auto_per_group",
        ]
    )
    quant = run_config_from_sources(None, build_overrides(args)).quant
    assert (quant.equalization, quant.bias_correction, quant.adaround) == (True, True, True)
    assert quant.adaround_iterations == 7 and quant.adaround_batches == 3 and quant.calibrator == "auto_per_group"
    plain = run_config_from_sources(None, build_overrides(build_parser().parse_args(["build"]))).quant
    assert not (plain.equalization or plain.bias_correction or plain.adaround)


def test_report_names_the_algorithms_that_ran() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(4, 3, 10, 10)
    cfg = ftp.QuantConfig(equalization=True, bias_correction=True, calibrator="auto_per_group", show_progress=False)
    summary = algorithms_run(ftp.get_quant_state(ftp.quantize_model(model, [x], example_inputs=(x,), config=cfg)))
    assert summary["equalization"] == {"on": True, "pairs": 1}
    assert summary["bias_correction"] == {"on": True, "layers": 2}
    assert not summary["adaround"]["on"] and sum(summary["auto_per_group"]["chosen"].values()) == 2
    assert _algorithms_label(summary) == "equalization (1 pairs), bias correction (2 layers)"
