"""Public API behaviour: simulation semantics, state round trip, exact merging, bad input."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.errors import CalibrationError, CaptureError, ConfigError
from fx2trt_pipeline.quantize.api import PREPARED_ATTR
from fx2trt_pipeline.quantize.calibrators import compute_amax
from fx2trt_pipeline.quantize.qdq_ops import fake_quantize
from fx2trt_pipeline.quantize.statistics import TensorStats
from tests.conftest import batches

QUIET = dict(show_progress=False)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3)))


def test_simulation_matches_manual_int8_math() -> None:
    model = Tiny().eval()
    data = batches((4, 3, 8, 8), 3)
    qgm = ftp.quantize_model(
        model, data, example_inputs=(data[0],), config=ftp.QuantConfig(calibrator="minmax", **QUIET)
    )
    state = ftp.get_quant_state(qgm)
    x = data[0]
    # independent reference: fold BN by hand, fake-quantize input and weights, run eager ops
    conv, bn = model.conv, model.bn
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * factor.view(-1, 1, 1, 1)
    b = (conv.bias - bn.running_mean) * factor + bn.bias
    s_in = torch.tensor(state.amax["x"] / 127)
    w_scale = w.abs().amax((1, 2, 3)) / 127
    wq = fake_quantize(w, w_scale, 0)
    y = torch.relu(torch.nn.functional.conv2d(fake_quantize(x, s_in), wq, b, padding=1)).mean((2, 3))
    s_y = torch.tensor(state.amax[state.placement.points["mean"].group] / 127)
    fc_w = model.fc.weight
    out = torch.nn.functional.linear(
        fake_quantize(y, s_y), fake_quantize(fc_w, fc_w.abs().amax(1) / 127, 0), model.fc.bias
    )
    assert torch.allclose(qgm(x), out, atol=1e-5)
    assert state.amax["x"] == pytest.approx(max(d.abs().max().item() for d in data))


def test_prepare_calibrate_convert_equals_quantize_and_runs_on_any_device() -> None:
    model = torchvision.models.resnet18().eval()
    data = batches((2, 3, 32, 32), 2)
    cfg = ftp.QuantConfig(calibrator="mse", **QUIET)
    q1 = ftp.quantize_model(model, data, example_inputs=(data[0],), config=cfg)
    prepared = ftp.prepare(model, (data[0],), cfg)
    ftp.calibrate(prepared, data[:1])
    ftp.calibrate(prepared, data[1:])  # statistics accumulate across calls
    q2 = ftp.convert(prepared)
    assert torch.equal(q1(data[0]), q2(data[0]))
    assert ftp.get_quant_state(q1).amax == ftp.get_quant_state(q2).amax


def test_convert_with_other_calibrator_reuses_statistics() -> None:
    model = torchvision.models.resnet18().eval()
    data = batches((2, 3, 32, 32), 2)
    prepared = ftp.calibrate(ftp.prepare(model, (data[0],), ftp.QuantConfig(**QUIET)), data)
    info = getattr(prepared, PREPARED_ATTR)
    for method in ("minmax", "percentile", "entropy", "mse"):
        q = ftp.convert(prepared, ftp.QuantConfig(calibrator=method, **QUIET))
        state = ftp.get_quant_state(q)
        assert state.amax == {k: compute_amax(info.stats[k], method, 99.99) for k in info.stats}
    # keeping layers in float reuses the statistics when the remaining Q/DQ points were observed
    skipped = ftp.convert(prepared, ftp.QuantConfig(skip=("fc",), **QUIET))
    fresh = ftp.quantize_model(model, data, config=ftp.QuantConfig(skip=("fc",), **QUIET))
    assert torch.equal(skipped(data[0]), fresh(data[0]))
    assert "flatten" not in ftp.get_quant_state(skipped).placement.points
    narrow = ftp.calibrate(ftp.prepare(model, (data[0],), ftp.QuantConfig(quantize_ops=("conv",), **QUIET)), data)
    with pytest.raises(ConfigError, match="prepare"):  # linear/avgpool inputs were never observed
        ftp.convert(narrow, ftp.QuantConfig(**QUIET))


def test_merging_halves_equals_calibrating_on_the_whole() -> None:
    model = torchvision.models.resnet18().eval()
    data = batches((2, 3, 32, 32), 4)
    cfg = ftp.QuantConfig(**QUIET)
    whole = getattr(ftp.calibrate(ftp.prepare(model, (data[0],), cfg), data), PREPARED_ATTR).stats
    first = getattr(ftp.calibrate(ftp.prepare(model, (data[0],), cfg), data[:2]), PREPARED_ATTR).stats
    second = getattr(ftp.calibrate(ftp.prepare(model, (data[0],), cfg), data[2:][::-1]), PREPARED_ATTR).stats
    for key in whole:
        merged = TensorStats.from_dict(first[key].to_dict()).merge(second[key])
        assert merged == whole[key], key
        for method in ("minmax", "percentile", "entropy", "mse"):
            assert compute_amax(merged, method) == compute_amax(whole[key], method)


def test_state_round_trip_and_rebuild(tmp_path) -> None:
    model = torchvision.models.mobilenet_v2().eval()
    data = batches((2, 3, 32, 32), 2)
    qgm = ftp.quantize_model(model, data, example_inputs=(data[0],), config=ftp.QuantConfig(**QUIET))
    path = tmp_path / "state.json"
    digest = ftp.save_quant_state(qgm, path)
    state = ftp.load_quant_state(path)
    assert state.digest() == digest == ftp.get_quant_state(qgm).digest()
    rebuilt = ftp.rebuild_quantized(model, state, example_inputs=(data[0],))
    assert torch.equal(rebuilt(data[1]), qgm(data[1]))
    other = torchvision.models.mobilenet_v2().eval()  # other random weights
    with pytest.raises(ConfigError, match="Weights of layer"):
        ftp.rebuild_quantized(other, state)
    path.write_text(path.read_text()[:100])
    with pytest.raises(ConfigError, match="truncated"):
        ftp.load_quant_state(path)


def test_format_1_state_rebuilds_the_same_model(tmp_path) -> None:
    """Format 1 configs carried ``adaround_rows``; such a state still loads and rebuilds bit for bit."""
    import json

    model = Tiny().eval()
    data = batches((2, 3, 8, 8), 2)
    qgm = ftp.quantize_model(model, data, example_inputs=(data[0],), config=ftp.QuantConfig(**QUIET))
    path = tmp_path / "state.json"
    ftp.save_quant_state(qgm, path)
    saved = json.loads(path.read_text())
    assert saved["format_version"] == 2
    saved["format_version"], saved["config"]["adaround_rows"] = 1, 1024
    path.write_text(json.dumps(saved))
    rebuilt = ftp.rebuild_quantized(model, ftp.load_quant_state(path), example_inputs=(data[0],))
    assert torch.equal(rebuilt(data[1]), qgm(data[1]))
    saved["format_version"] = 3
    path.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="format 3 is not supported"):
        ftp.load_quant_state(path)


def test_user_model_is_not_modified() -> None:
    model = Tiny().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ftp.quantize_model(model, batches((2, 3, 8, 8), 1), config=ftp.QuantConfig(**QUIET))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- bad input: one clear error each ----


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    def forward(self, x):
        return self.gate(x)


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return x
        return -x


def test_untraceable_model_names_module_and_suggests_leaf() -> None:
    with pytest.raises(CaptureError, match=r"(?s)'gate' \(Gate\).*test_api.py.*leaf"):
        ftp.quantize_model(Untraceable().eval(), batches((1, 3), 1), config=ftp.QuantConfig(**QUIET))
    # marking it as a leaf makes it work
    ftp.quantize_model(
        Untraceable().eval(), batches((1, 3), 1), config=ftp.QuantConfig(leaf_modules=("Gate",), **QUIET)
    )


def test_empty_calibration_data() -> None:
    with pytest.raises(CalibrationError, match="empty"):
        ftp.quantize_model(Tiny().eval(), [], config=ftp.QuantConfig(**QUIET))


def test_nan_names_first_observer() -> None:
    data = batches((2, 3, 8, 8), 2)
    data[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match="'x'"):
        ftp.quantize_model(Tiny().eval(), data, config=ftp.QuantConfig(**QUIET))

    class Overflow(Tiny):
        def forward(self, x):
            return super().forward(x * 1e38 * 1e38)

    with pytest.raises(CalibrationError, match="'mul_1'"):
        ftp.quantize_model(Overflow().eval(), batches((2, 3, 8, 8), 1), config=ftp.QuantConfig(**QUIET))


def test_train_mode_warns_or_refuses() -> None:
    model = Tiny().train()
    with pytest.warns(UserWarning, match="train mode"):
        ftp.quantize_model(model, batches((2, 3, 8, 8), 1), config=ftp.QuantConfig(**QUIET))
    assert model.training  # the caller's module is left as it was
    with pytest.raises(ConfigError, match="eval"):
        ftp.quantize_model(model, batches((2, 3, 8, 8), 1), config=ftp.QuantConfig(train_mode="error", **QUIET))


def test_unknown_config_keys_and_calibrators() -> None:
    with pytest.raises(ConfigError, match="calibrater"):
        ftp.QuantConfig.from_dict({"calibrater": "entropy"})
    with pytest.raises(ConfigError, match="'kl'"):
        ftp.QuantConfig(calibrator="kl")
    with pytest.raises(ConfigError, match="unknown op kinds"):
        ftp.QuantConfig(quantize_ops=("conv", "lstm"))
    with pytest.raises(ConfigError, match="speed"):
        ftp.QuantConfig.from_dict({"name_overrides": {"fc": {"speed": 1}}})
    cfg = ftp.QuantConfig(name_overrides={"fc": ftp.LayerOverride(calibrator="mse")}, skip=("a.*",))
    assert ftp.QuantConfig.from_dict(cfg.to_dict()) == cfg


def test_example_inputs_of_wrong_shape() -> None:
    with pytest.raises(CaptureError, match="conv1"):
        ftp.prepare(torchvision.models.resnet18().eval(), (torch.randn(1, 4, 32, 32),))


def test_quantize_has_no_warnings_on_eval_model() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ftp.quantize_model(Tiny().eval(), batches((2, 3, 8, 8), 1), config=ftp.QuantConfig(**QUIET))


def test_the_quantize_stage_is_a_package_and_its_one_call_function_has_its_own_name() -> None:
    """``fx2trt_pipeline.quantize`` is the stage's package whatever was imported before; the function is
    ``quantize_model``."""
    import fx2trt_pipeline.network.inputs
    import fx2trt_pipeline.network.network
    import fx2trt_pipeline.quantize.api
    import fx2trt_pipeline.quantize.observe

    assert ftp.quantize is sys.modules["fx2trt_pipeline.quantize"]
    assert ftp.quantize.api is sys.modules["fx2trt_pipeline.quantize.api"] is fx2trt_pipeline.quantize.api
    assert ftp.quantize.observe.__name__ == "fx2trt_pipeline.quantize.observe"
    assert fx2trt_pipeline.network.network.__name__ == "fx2trt_pipeline.network.network"
    assert ftp.convert is ftp.quantize.api.convert and ftp.quantize_model is ftp.quantize.api.quantize_model
    assert ftp.quantize.quantize_model is ftp.quantize_model  # the stage's own short list of names
    assert not hasattr(ftp.quantize.api, "quantize")
