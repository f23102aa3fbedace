"""Cross-layer equalization: the float function is kept, ranges balance, quantization error drops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.capture import capture
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.quantize.equalization import equalize, find_pairs
from fx2trt_pipeline.quantize.fold_bn import fold_batchnorm


def block(act: type[nn.Module]) -> nn.Module:
    """expand 1x1 -> BN -> act -> depthwise 3x3 -> BN -> act -> project 1x1 -> BN (MobileNetV2's shape)."""
    return nn.Sequential(
        nn.Conv2d(4, 12, 1, bias=False),
        nn.BatchNorm2d(12),
        act(),
        nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False),
        nn.BatchNorm2d(12),
        act(),
        nn.Conv2d(12, 6, 1, bias=False),
        nn.BatchNorm2d(6),
    )


def randomized(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # BN statistics of very different ranges per channel
            m.running_mean.uniform_(-1, 1)
            m.running_var.copy_(10 ** torch.empty_like(m.running_var).uniform_(-2, 2))
            m.weight.data.uniform_(0.2, 3)
            m.bias.data.uniform_(-1, 1)
    return model.eval()


def folded(model: nn.Module) -> torch.fx.GraphModule:
    gm = capture(model)
    fold_batchnorm(gm)
    return gm


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, nn.Identity])
def test_float_function_unchanged(act) -> None:
    model = randomized(nn.Sequential(block(act), nn.Flatten(), nn.Linear(6 * 64, 10), nn.ReLU(), nn.Linear(10, 3)))
    x = torch.randn(4, 4, 8, 8) * 3
    gm = folded(model)
    pairs = equalize(gm)
    assert [p.link for p in pairs] == [act.__name__.lower()] * 2 + ["relu"]
    torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-4)
    # the ranges of each pair are balanced: output channel i of the first == input channel i of the second
    mods = dict(gm.named_modules())
    for p in pairs:
        w1, w2 = mods[p.first].weight, mods[p.second].weight
        r1 = w1.abs().reshape(w1.shape[0], -1).amax(1)
        groups = getattr(mods[p.second], "groups", 1)
        r2 = w2.reshape(groups, w2.shape[0] // groups, w2.shape[1], -1).abs().amax(dim=(1, 3)).reshape(-1)
        assert p is pairs[0] or torch.allclose(r1, r2, rtol=1e-3)  # the middle layer settles last


def test_relu6_becomes_per_channel_clamp_and_hardswish_is_skipped() -> None:
    gm = folded(randomized(block(nn.ReLU6)))
    equalize(gm)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.minimum) == 2
    assert find_pairs(folded(randomized(block(nn.Hardswish)))) == []


def imbalanced() -> nn.Module:
    """Channel ranges spread over 3 decades, inverse in the second layer: equalization's textbook case."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1))
    spread = 10 ** torch.linspace(-1.5, 1.5, 16)
    with torch.no_grad():
        m[0].weight.mul_(spread.view(-1, 1, 1, 1))
        m[0].bias.mul_(spread)
        m[2].weight.div_(spread.view(1, -1, 1, 1))
    return m.eval()


def test_equalization_lowers_quantization_error_and_rebuilds_from_state(tmp_path) -> None:
    model = imbalanced()
    x = torch.randn(8, 3, 16, 16)
    errors = {}
    for eq in (False, True):
        cfg = ftp.QuantConfig(calibrator="minmax", equalization=eq, show_progress=False)
        qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=cfg)
        errors[eq] = (qgm(x) - model(x)).pow(2).mean().item()
    assert errors[True] < 0.25 * errors[False], errors
    ftp.save_quant_state(qgm, tmp_path / "q.json")
    rebuilt = ftp.rebuild_quantized(model, ftp.load_quant_state(tmp_path / "q.json"), example_inputs=(x,))
    assert torch.equal(rebuilt(x), qgm(x))


def test_convert_cannot_toggle_equalization() -> None:
    x = torch.randn(2, 3, 8, 8)
    prepared = ftp.prepare(imbalanced(), (x,), ftp.QuantConfig(show_progress=False))
    ftp.calibrate(prepared, [x])
    with pytest.raises(ConfigError, match="equalization"):
        ftp.convert(prepared, ftp.QuantConfig(equalization=True, show_progress=False))


def test_activation_ranges_into_depthwise_are_equalized_without_changing_the_float_function() -> None:
    model = randomized(block(nn.ReLU6))
    x = torch.randn(8, 4, 8, 8) * 3
    gm = folded(model)
    pairs = equalize(gm, inputs=(x,))
    assert [(p.first, p.second, p.link) for p in pairs] == [("0", "3", "relu6")]  # only expand -> depthwise
    torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-4)
    captured = {}
    gm.get_submodule("3").register_forward_pre_hook(lambda m, inp: captured.setdefault("x", inp[0]))
    gm(x)
    after = captured["x"].abs().amax(dim=(0, 2, 3))
    before = model[:3](x).abs().amax(dim=(0, 2, 3))
    spread = lambda r: float(r.max() / r[r > 0].min())  # noqa: E731
    after, before = after.detach(), before.detach()
    assert spread(before) > 20 and spread(after) < spread(before) / 10  # every channel near the largest range
    assert all(1 / 16 - 1e-9 <= s <= 1.0 for s in pairs[0].scales)  # gains within [1, 16]


def expand_depthwise() -> nn.Module:
    """expand 1x1 -> ReLU6 -> depthwise 3x3, the expand channels' ranges spread over two decades."""
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(4, 12, 1), nn.ReLU6(), nn.Conv2d(12, 12, 3, padding=1, groups=12))
    with torch.no_grad():
        spread = 10 ** torch.linspace(-2, 0, 12)
        m[0].weight.mul_(2 * spread.view(-1, 1, 1, 1))
        m[0].bias.mul_(spread)
    return m.eval()


def test_activation_equalization_lowers_quantization_error_and_rebuilds_from_state(tmp_path) -> None:
    model = expand_depthwise()
    x = torch.randn(16, 4, 8, 8) * 3
    errors = {}
    for eq in (False, "activations"):
        cfg = ftp.QuantConfig(calibrator="minmax", equalization=eq, show_progress=False)
        qgm = ftp.quantize_model(model, [x], config=cfg)  # activations mode: the first batch serves as example
        err, ref = (qgm(x) - model(x)).detach(), model(x).detach()
        # per output channel, relative: the depthwise output of a small channel matters as much downstream
        errors[eq] = float((err.pow(2).mean(dim=(0, 2, 3)) / ref.pow(2).mean(dim=(0, 2, 3))).mean())
    assert errors["activations"] < 0.1 * errors[False], errors
    ftp.save_quant_state(qgm, tmp_path / "q.json")
    rebuilt = ftp.rebuild_quantized(model, ftp.load_quant_state(tmp_path / "q.json"), example_inputs=(x,))
    assert torch.equal(rebuilt(x), qgm(x))
    with pytest.raises(ConfigError, match="example_inputs"):
        ftp.prepare(model, None, ftp.QuantConfig(equalization="activations", show_progress=False))
    with pytest.raises(ConfigError, match="equalization must be one of"):
        ftp.QuantConfig(equalization="weights-and-more")
