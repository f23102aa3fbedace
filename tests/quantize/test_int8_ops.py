"""Integer arithmetic in the simulated model: exact int8 x int8 sums, one float32 epilogue, so the
outputs are bitwise identical across thread counts and batch composition."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.quantize import float_form, int8_ops, qdq_ops


def _bitwise_across_threads(qgm: torch.nn.Module, x: torch.Tensor) -> None:
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                outs.append((qgm(x), qgm(x[:1])))
    finally:
        torch.set_num_threads(before)
    (full_1, one_1), (full_2, one_2) = outs
    assert torch.equal(full_1, full_2), (full_1 - full_2).abs().max()
    assert torch.equal(full_1[:1], one_1) and torch.equal(one_1, one_2)  # batch composition


def test_mobilenet_v2_real_weights_is_bitwise_identical_with_1_and_2_threads() -> None:
    pytest.importorskip("skimage")
    from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_samples

    qgm = ftp.quantize_model(
        mobilenet_v2_imagenet(), [photo_samples(4, size=96, seed=0)], config=ftp.QuantConfig(show_progress=False)
    )
    assert sum(int8_ops.is_integer_op(n) for n in qgm.graph.nodes) == 53  # 52 convs + the classifier
    _bitwise_across_threads(qgm, photo_samples(3, size=96, seed=1))


def test_resnet18_small_input_is_bitwise_identical_with_1_and_2_threads() -> None:
    torch.manual_seed(0)
    qgm = ftp.quantize_model(
        torchvision.models.resnet18().eval(), [torch.randn(4, 3, 64, 64)], config=ftp.QuantConfig(show_progress=False)
    )
    _bitwise_across_threads(qgm, torch.randn(3, 3, 64, 64))


def test_resnet18_every_conv_is_integer_including_the_one_behind_the_max_pool() -> None:
    """DQ -> MaxPool -> Conv is an INT8 convolution in TensorRT (the DQ moves past the max-pool)."""
    torch.manual_seed(0)
    qgm = ftp.quantize_model(
        torchvision.models.resnet18().eval(), [torch.randn(2, 3, 64, 64)], config=ftp.QuantConfig(show_progress=False)
    )
    nodes = {n.name: n for n in qgm.graph.nodes}
    assert nodes["layer1_0_conv1"].target is int8_ops.conv2d  # its input is the max-pool, not a DQ
    assert sum(int8_ops.is_integer_op(n) for n in qgm.graph.nodes) == 21  # 20 convs + fc


def test_matmul_of_two_quantized_activations_is_an_exact_integer_sum() -> None:
    gen = torch.Generator().manual_seed(5)
    sa, sb = torch.tensor(0.031), torch.tensor(0.0077)
    for k in (49, 2048):  # float32 exact below 1024 terms; float64 above
        a_q = torch.randint(-128, 128, (2, 3, 7, k), generator=gen, dtype=torch.int8)
        b_q = torch.randint(-128, 128, (2, 3, k, 5), generator=gen, dtype=torch.int8)
        a, b = qdq_ops.dequantize(a_q, sa), qdq_ops.dequantize(b_q, sb)
        want = (a_q.double() @ b_q.double()).float() * (sa * sb)
        assert torch.equal(int8_ops.matmul(a, b, input_scale=sa, weight_scale=sb), want)


def test_attention_matmuls_of_a_quantized_swin_are_integer_and_match_the_executor() -> None:
    from fx2trt_pipeline.validate.compare import cosine_similarity

    torch.manual_seed(0)
    swin = torchvision.models.SwinTransformer([4, 4], 16, [2, 2], [2, 4], [4, 4]).eval()
    x = torch.randn(2, 3, 32, 32)
    qgm = ftp.quantize_model(swin, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    assert sum(n.target is int8_ops.matmul for n in qgm.graph.nodes) == 8  # Q @ K^T and P @ V in 4 blocks
    _, network, _ctx = ftp.network_from_graph_module(qgm, [ftp.InputSpec.from_tensor("x", x)])
    got = ftp.NetworkExecutor(network).run({"x": x})[0]["output0"]
    with torch.no_grad():
        assert cosine_similarity(qgm(x), got) >= 0.99999
    assert torch.allclose(float_form.float_path(qgm)(x), qgm(x), atol=1e-3)  # ONNX export's float form


def _exact_reference(
    x_q: torch.Tensor, w_q: torch.Tensor, sx: torch.Tensor, sw: torch.Tensor, bias: torch.Tensor, **conv: object
) -> torch.Tensor:
    """The documented epilogue on an independent exact sum (int64 via float64 on small integers)."""
    acc = F.conv2d(x_q.double(), w_q.double(), None, **conv)
    return acc.float() * (sx * sw).reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("cin,groups", [(8, 1), (320, 1), (96, 96)])  # 128 * sum|w| > 2**24 at 320: chunks
def test_conv_equals_exact_integer_sum_then_float32_epilogue(cin: int, groups: int) -> None:
    gen = torch.Generator().manual_seed(cin)
    x_q = torch.randint(-128, 128, (2, cin, 7, 7), generator=gen, dtype=torch.int8)
    w_q = torch.randint(-127, 128, (12 if groups == 1 else cin, cin // groups, 3, 3), generator=gen, dtype=torch.int8)
    sx, sw = torch.tensor(0.0123), torch.rand(w_q.shape[0], generator=gen) * 0.01 + 1e-3
    bias = torch.randn(w_q.shape[0], generator=gen)
    x, w = qdq_ops.dequantize(x_q, sx), qdq_ops.dequantize(w_q, sw, 0)
    got = int8_ops.conv2d(x, w, bias, [1, 1], [1, 1], [1, 1], groups, input_scale=sx, weight_scale=sw)
    want = _exact_reference(x_q, w_q, sx, sw, bias, padding=1, groups=groups)
    assert torch.equal(got, want)


def test_deconv_and_linear_match_their_float_op_closely() -> None:
    gen = torch.Generator().manual_seed(3)
    sx = torch.tensor(0.05)
    x = qdq_ops.fake_quantize(torch.randn(2, 4, 5, 5, generator=gen), sx)
    w_q = torch.randint(-127, 128, (4, 3, 3, 3), generator=gen, dtype=torch.int8)
    sw = torch.rand(3, generator=gen) * 0.01 + 1e-3
    w = qdq_ops.dequantize(w_q, sw, 1)
    got = int8_ops.conv_transpose2d(x, w, None, [2, 2], [1, 1], [1, 1], 1, [1, 1], input_scale=sx, weight_scale=sw)
    assert torch.allclose(got, F.conv_transpose2d(x, w, None, 2, 1, 1, 1, 1), atol=1e-5)
    xl = qdq_ops.fake_quantize(torch.randn(5, 4000, generator=gen), sx)  # 128 * sum|w| > 2**24: chunked
    wl_q = torch.randint(-127, 128, (6, 4000), generator=gen, dtype=torch.int8)
    sl = torch.rand(6, generator=gen) * 0.01 + 1e-3
    wl = qdq_ops.dequantize(wl_q, sl, 0)
    exact = (torch.round(xl / sx).double() @ wl_q.double().T).float() * (sx * sl)
    assert torch.equal(int8_ops.linear(xl, wl, None, input_scale=sx, weight_scale=sl), exact)


def test_reference_graph_keeps_its_contract_and_survives_copy_pickle_export() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    qgm = ftp.quantize_model(model, [torch.randn(4, 3, 6, 6)], config=ftp.QuantConfig(show_progress=False))
    nodes = {n.name: n for n in qgm.graph.nodes}
    conv = nodes["_0"]
    assert conv.target is int8_ops.conv2d and int8_ops.FUNCTIONAL_OF[conv.target] is F.conv2d
    assert qdq_ops.is_dequantize(conv.args[0]) and qdq_ops.is_dequantize(conv.args[1])  # positional args as before
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = qgm(x)
        assert torch.equal(copy.deepcopy(qgm)(x), want)
        buffer = io.BytesIO()
        torch.save(qgm, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(x), want)
        assert torch.equal(pickle.loads(pickle.dumps(qgm))(x), want)
        exported = torch.export.export(qgm, (x,)).module()
        assert torch.equal(exported(x), want)
        assert not any(int8_ops.is_integer_op(n) for n in float_form.float_path(qgm).graph.nodes)
        assert torch.allclose(float_form.float_path(qgm)(x), want, atol=1e-4)


def test_deconv_scaled_on_its_summed_axis_keeps_the_float_form() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3)).eval()
    calib = [torch.randn(2, 4, 5, 5)]
    on_inputs = ftp.quantize_model(model, calib, config=ftp.QuantConfig(show_progress=False, deconv_weight_axis=0))
    on_outputs = ftp.quantize_model(model, calib, config=ftp.QuantConfig(show_progress=False, deconv_weight_axis=1))
    assert [n.target for n in on_inputs.graph.nodes if n.name == "_0"] == [F.conv_transpose2d]
    assert [n.target for n in on_outputs.graph.nodes if n.name == "_0"] == [int8_ops.conv_transpose2d]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_matches_cpu_bitwise() -> None:
    torch.manual_seed(0)
    qgm = ftp.quantize_model(
        torchvision.models.resnet18().eval(), [torch.randn(4, 3, 64, 64)], config=ftp.QuantConfig(show_progress=False)
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cpu = qgm(x)
        gpu = copy.deepcopy(qgm).cuda()(x.cuda()).cpu()
    assert torch.equal(cpu, gpu)
