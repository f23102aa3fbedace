"""Per-layer parity (simulated vs network executor) and the per-layer quantization error table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fx2trt_pipeline.validate.compare import sqnr_db
from fx2trt_pipeline.validate.layer_report import capture_node_values, layer_parity
from fx2trt_pipeline.validate.quant_error import LayerErrorTable, float_reference_graph, quant_error_table

network_module = pytest.importorskip("fx2trt_pipeline.network.network")


def _convert(qgm, batch=-1):
    from fx2trt_pipeline.network.inputs import InputSpec

    spec = InputSpec.dynamic_batch("x", (3, 16, 16), 1, 2, 8) if batch == -1 else InputSpec("x", (batch, 3, 16, 16))
    return network_module.network_from_graph_module(qgm, [spec], output_names=["logits", "features"])


def test_parity_every_output_and_named_layer(trt, tiny_quantized):
    _, qgm = tiny_quantized
    _, network, _ctx = _convert(qgm)
    report = layer_parity(qgm, network, (torch.randn(3, 3, 16, 16),))
    assert report, str(report)
    assert [s.name for s in report.outputs] == ["logits", "features"]
    assert all(s.cosine >= 0.9999 for s in report.outputs)
    assert {"x_q", "conv1", "relu", "conv2", "add", "pool", "up", "head", "conv2_weight_dq"} <= set(report.layer_of)
    assert report.layer_of["conv1"] == "conv1" and report.first_divergence() is None
    assert all(s.max_abs_error < 1e-4 for s in report.layers)
    data = json.loads(report.to_json())
    assert data["passed"] and data["layer_of"]["up"] == "up"
    assert "intermediate layers" in str(report)


def test_parity_points_at_the_first_diverging_layer(trt, tiny_quantized):
    _, qgm = tiny_quantized
    _, network, _ctx = _convert(qgm, batch=2)
    layer = next(
        network.get_layer(i) for i in range(network.num_layers) if network.get_layer(i).name == "conv2_weight_scale"
    )
    layer.__class__ = trt.IConstantLayer
    wrong = np.ascontiguousarray(layer.weights * 1.5)  # a converter bug: wrong weight scale
    layer.weights = wrong
    report = layer_parity(qgm, network, {"x": torch.randn(2, 3, 16, 16)})
    assert not report
    assert report.first_divergence() == "conv2_weight_dq"
    assert not report.layers["conv2"].passed and report.layers["conv1"].passed
    assert "first diverging layer: conv2_weight_dq" in str(report)


def test_capture_node_values_keeps_values_before_in_place_ops():
    class InPlace(torch.nn.Module):
        def forward(self, x):
            y = x * 2
            y += 1  # operator.iadd on y's storage
            return torch.relu_(y)

    gm = torch.fx.symbolic_trace(InPlace())
    values, outputs = capture_node_values(gm, [torch.tensor([-3.0, 1.0])])
    assert values["mul"].tolist() == [-6.0, 2.0] and outputs[0].tolist() == [0.0, 3.0]


def _folded_conv1_weight(model):
    bn = model.bn1
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return model.conv1.weight * factor.reshape(-1, 1, 1, 1)


def test_quant_error_table_rows(tiny_quantized):
    model, qgm = tiny_quantized
    x = torch.randn(4, 3, 16, 16)
    bn_mean = model.bn1.running_mean.clone()
    table = quant_error_table(model, qgm, (x,))
    assert torch.equal(model.bn1.running_mean, bn_mean)  # the caller's model is not folded
    rows = {r.layer: r for r in table}
    assert {"conv1", "conv2", "add", "head"} <= set(rows)
    assert rows["conv1"].op == "conv2d" and rows["head"].op == "linear"
    # Independent weight error: fold BN by hand, per-output-channel symmetric int8 with 127 levels.
    w = _folded_conv1_weight(model).detach()
    scale = w.abs().amax((1, 2, 3), keepdim=True) / 127
    expected = sqnr_db(w, torch.round(w / scale).clamp(-127, 127) * scale)
    assert rows["conv1"].weight_sqnr_db == pytest.approx(expected, abs=1e-3)
    assert rows["add"].weight_sqnr_db is None and rows["add"].weight_cosine is None
    # The first layer sees the float input through its own Q/DQ: alone == accumulated.
    assert rows["conv1"].activation_sqnr_db == pytest.approx(rows["conv1"].accumulated_sqnr_db, abs=1e-6)
    for r in table:
        assert 15 < r.activation_sqnr_db < 80 and r.activation_cosine > 0.95
        assert not math.isnan(r.accumulated_sqnr_db)
    worst = table.worst_first()
    assert [r.activation_sqnr_db for r in worst] == sorted(r.activation_sqnr_db for r in table)
    assert str(table).splitlines()[2].startswith(worst[0].layer)
    assert [row["layer"] for row in json.loads(table.to_json())] == [r.layer for r in table]


def test_quant_error_table_accepts_the_float_graph(tiny_quantized):
    model, qgm = tiny_quantized
    x = torch.randn(2, 3, 16, 16)
    float_gm = float_reference_graph(model, qgm)
    direct = quant_error_table(float_gm, qgm, (x,))
    assert isinstance(direct, LayerErrorTable)
    assert [(r.layer, r.weight_sqnr_db) for r in direct] == [
        (r.layer, r.weight_sqnr_db) for r in quant_error_table(model, qgm, (x,))
    ]


def test_weight_error_compares_with_bn_folded_weights_also_for_graphmodule_models() -> None:
    """A float model given as a GraphModule (onnx2torch-style) is BN-folded before its weights are compared."""
    import fx2trt_pipeline as ftp
    from fx2trt_pipeline.quantize.fold_bn import fold_pair

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    model[1].running_var.uniform_(0.001, 0.01)  # BN scales far from 1: unfolded weights are far off
    model[1].running_mean.uniform_(-1, 1)
    x = torch.randn(4, 3, 8, 8)
    qgm = ftp.quantize_model(model, [x], config=ftp.QuantConfig(show_progress=False))
    folded = fold_pair(model[0], model[1], copy_layer=True).weight.detach()
    w_q = qgm.get_buffer("_0_weight_int8").float() * qgm.get_buffer("_0_weight_scale").reshape(-1, 1, 1, 1)
    want = float(10 * torch.log10(folded.pow(2).sum() / (folded - w_q).pow(2).sum()))
    for float_model in (model, torch.fx.symbolic_trace(model)):
        (row,) = [r for r in quant_error_table(float_model, qgm, (x,)) if r.layer == "_0"]
        assert 35 < row.weight_sqnr_db < 60 and abs(row.weight_sqnr_db - want) < 0.01, row
