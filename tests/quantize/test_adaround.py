"""AdaRound with quantized inputs: lower layer and model error on held-out data; the state reproduces it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.quantize import api
from fx2trt_pipeline.quantize.adaround import reconstruction_error
from fx2trt_pipeline.quantize.layer_inputs import InputGram, lockstep_inputs
from fx2trt_pipeline.quantize.reference import quantize_weight


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),
        nn.ReLU(),
        nn.Conv2d(16, 8, 1),
        nn.Flatten(),
        nn.Linear(8 * 36, 10),
    ).eval()


def batches(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 3, 6, 6, generator=gen) for _ in range(2)]


def quantized_pair(config: ftp.QuantConfig) -> tuple[nn.Module, torch.fx.GraphModule, torch.fx.GraphModule, object]:
    """(float model, round-to-nearest model, AdaRound model, prepared) from the same calibration."""
    m, calib = model(), batches(0)
    prepared = ftp.prepare(m, (calib[0],), config)
    ftp.calibrate(prepared, calib)
    nearest = ftp.convert(prepared, ftp.QuantConfig(calibrator=config.calibrator, show_progress=False))
    return m, nearest, ftp.convert(prepared), prepared


def mobilenet_blocks() -> tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """The first four blocks of MobileNetV2 with its real ImageNet weights; disjoint photo crops."""
    pytest.importorskip("skimage")
    from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_samples

    blocks = mobilenet_v2_imagenet().features[:4].eval()
    calib = list(photo_samples(16, size=64, seed=0).split(8))
    held_out = list(photo_samples(16, size=64, seed=1).split(8))
    return blocks, calib, held_out


@pytest.fixture(scope="module")
def real_blocks():
    blocks, calib, held_out = mobilenet_blocks()
    cfg = ftp.QuantConfig(calibrator="entropy", adaround=True, adaround_iterations=100, show_progress=False)
    prepared = ftp.prepare(blocks, (calib[0],), cfg)
    ftp.calibrate(prepared, calib)
    nearest = ftp.convert(prepared, ftp.QuantConfig(calibrator="entropy", show_progress=False))
    return blocks, calib, held_out, prepared, nearest, ftp.convert(prepared)


def test_adaround_lowers_layer_reconstruction_error_on_held_out_data(real_blocks, tmp_path) -> None:
    blocks, calib, held_out, prepared, nearest, ada = real_blocks
    state = ftp.get_quant_state(ada)
    assert len(state.edits.rounding) == 9  # every conv of the four blocks
    float_gm = api._without_observers(prepared)
    ratios = {}
    for name, pairs in lockstep_inputs(float_gm, ada, list(state.edits.rounding), [(b,) for b in held_out]):
        layer = float_gm.get_submodule(state.placement.weights[name].module)
        rtn, scale = quantize_weight(layer.weight, 0)
        assert torch.equal(getattr(nearest, f"{name}_weight_int8"), rtn)
        chosen = getattr(ada, f"{name}_weight_int8")
        assert (chosen.int() - rtn.int()).abs().max() <= 1  # floor or ceil of the same weight
        ratios[name] = _output_error(layer, chosen, scale, pairs) / _output_error(layer, rtn, scale, pairs)
    # measured: stem 0.36, first depthwise 0.90, the others 0.95-0.99 (both with the AdaRound model's inputs)
    assert max(ratios.values()) < 1.0 and ratios["_0_0"] < 0.5, ratios
    ftp.save_quant_state(ada, tmp_path / "q.json")
    rebuilt = ftp.rebuild_quantized(blocks, ftp.load_quant_state(tmp_path / "q.json"), example_inputs=(calib[0],))
    assert torch.equal(rebuilt(held_out[0]), ada(held_out[0]))


def _output_error(layer: nn.Module, q: torch.Tensor, scale: torch.Tensor, pairs: list) -> float:
    """Mean squared error of the layer run by torch with int8 weights on its quantized-model input against
    the float layer on its float input (independent of the moment matrices AdaRound fits with)."""
    w_q = q.float() * scale.reshape(-1, 1, 1, 1)
    total, count = 0.0, 0
    for x, xq in pairs:
        diff = layer._conv_forward(xq, w_q, None) - layer._conv_forward(x, layer.weight, None)
        total, count = total + diff.double().pow(2).sum().item(), count + diff.numel()
    return total / count


def test_adaround_lowers_model_output_error_on_held_out_data(real_blocks) -> None:
    blocks, _, held_out, _, nearest, ada = real_blocks
    x = torch.cat(held_out)
    with torch.no_grad():
        ref = blocks(x)
        err_nearest = (nearest(x) - ref).pow(2).mean().item()
        err_ada = (ada(x) - ref).pow(2).mean().item()
    # measured: 0.90x of round-to-nearest's mean squared output error
    assert err_ada < 0.95 * err_nearest, (err_ada, err_nearest)


def test_underdetermined_layers_keep_round_to_nearest() -> None:
    m, calib = model(), batches(0)
    cfg = ftp.QuantConfig(calibrator="minmax", adaround=True, adaround_iterations=20, show_progress=False)
    qgm = ftp.quantize_model(m, calib, example_inputs=(calib[0],), config=cfg)
    # the classifier sees 32 positions for 288 weights per output: it keeps round-to-nearest
    assert set(ftp.get_quant_state(qgm).edits.rounding) == {"_0", "_2", "_4"}


def test_adaround_refits_corrected_biases_for_its_integers() -> None:
    cfg = ftp.QuantConfig(
        calibrator="minmax", adaround=True, bias_correction=True, adaround_iterations=50, show_progress=False
    )
    _, _, ada, prepared = quantized_pair(cfg)
    state = ftp.get_quant_state(ada)
    info = api.prepared_info(prepared)
    float_gm = api._without_observers(prepared)
    assert state.edits.rounding
    for name in state.edits.rounding:
        layer = float_gm.get_submodule(state.placement.weights[name].module)
        q = getattr(ada, f"{name}_weight_int8").float()
        _, scale = quantize_weight(layer.weight, 0)
        w_q = q * scale.reshape(-1, *[1] * (q.dim() - 1))
        expected = layer.bias.double() - _shift(layer, w_q, info.means[name].mean())
        assert torch.allclose(getattr(ada, f"{name}_bias").double(), expected.float().double(), atol=1e-6), name
    m, x = model(), batches(1)[0]
    rebuilt = ftp.rebuild_quantized(m, ftp.QuantState.from_dict(state.to_dict()), example_inputs=(x,))
    assert torch.equal(rebuilt(x), ada(x))  # the refitted biases and the integers come back without data


def _shift(layer: nn.Module, w_q: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``(W_q - W) E[x]`` written out per output channel with explicit loops over groups (independent)."""
    dw = (w_q.double() - layer.weight.double()).sum(dim=tuple(range(2, w_q.dim())))  # (out, in/groups)
    per_group = dw.shape[0] // layer.groups
    out = torch.zeros(dw.shape[0], dtype=torch.float64)
    for o in range(dw.shape[0]):
        g = o // per_group
        out[o] = (dw[o] * mean[g * dw.shape[1] : (g + 1) * dw.shape[1]]).sum()
    return out


def test_lockstep_inputs_reach_later_layers_after_a_change() -> None:
    """The walk hands out the quantized model's own inputs, and sees an int8 weight changed mid-walk."""
    _, nearest, _, prepared = quantized_pair(ftp.QuantConfig(calibrator="minmax", show_progress=False))
    float_gm = api._without_observers(prepared)
    batch = batches(1)[0]
    walk = lockstep_inputs(float_gm, nearest, ["_0", "_2"], [(batch,)])
    name, [(x, xq)] = next(walk)
    assert name == "_0" and torch.equal(x, batch)
    dq = next(n for n in nearest.graph.nodes if n.name == "_0").args[0]
    scale = nearest.get_buffer(dq.args[1].target)
    assert not torch.equal(xq, x) and torch.equal((xq / scale).round() * scale, xq)  # on the int8 grid
    getattr(nearest, "_0_weight_int8").zero_()  # the first conv now outputs its bias only
    name, [(x, xq)] = next(walk)
    assert name == "_2"
    assert xq.std(dim=(2, 3)).max() == 0  # constant per channel: the change reached the second layer
    assert x.std(dim=(2, 3)).max() > 0  # the float walk is unaffected


def test_moment_matrices_give_the_directly_computed_output_error(real_blocks) -> None:
    """The fit's loss, from the (groups, k, k) input moments, equals the error of the layer run by torch."""
    _, _, held_out, prepared, _, ada = real_blocks
    state = ftp.get_quant_state(ada)
    float_gm = api._without_observers(prepared)
    checked = 0
    for name, pairs in lockstep_inputs(float_gm, ada, list(state.edits.rounding), [(b,) for b in held_out]):
        layer = float_gm.get_submodule(state.placement.weights[name].module)
        gram = InputGram.of(layer)
        for x, xq in pairs:
            gram.add(layer, x, xq)
        q, (_, scale) = getattr(ada, f"{name}_weight_int8"), quantize_weight(layer.weight, 0)
        direct = _output_error(layer, q, scale, pairs)
        assert abs(reconstruction_error(layer, q, scale, gram) - direct) <= 1e-4 * direct, name
        checked += 1
    assert checked == 9  # stem (3x3, stride 2), depthwise 3x3 (stride 1 and 2), pointwise 1x1
