"""PT2E front end: torch.export -> prepare_pt2e(TensorRTQuantizer) -> calibrate -> convert_pt2e, built with the
real builder, run in the network executor, and compared with the network ftp.quantize_model makes of the same model."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError, UnsupportedOpsError
from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic
from fx2trt_pipeline.validate.compare import cosine_similarity
from tests.converters.harness import build_engine_bytes, layer_type, producers

pt2e = pytest.importorskip("fx2trt_pipeline.pt2e", reason="torchao (the pt2e extra) is not installed")
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"),
]

SIZE = 64
# minmax keeps the suite fast; both flows feed the same TensorStats / calibrator functions whatever the method.
# BN folded by torchao and by ftp.quantize_model differ in the last bits, hence a float tolerance on scales.
CONFIG = ftp.QuantConfig(calibrator="minmax", show_progress=False)


def _batches(n: int = 1, batch: int = 3, size: int = SIZE, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=gen) for _ in range(n)]


def pt2e_quantize(
    model: torch.nn.Module, calib: list[torch.Tensor], config: ftp.QuantConfig = CONFIG, dynamic: bool = True
) -> torch.fx.GraphModule:
    x = calib[0]
    shapes = ({0: torch.export.Dim("batch", min=1, max=16)},) if dynamic else None
    prepared = prepare_pt2e(
        torch.export.export(model, (x,), dynamic_shapes=shapes).module(), pt2e.TensorRTQuantizer(config)
    )
    with torch.no_grad():
        for batch in calib:
            prepared(batch)
    return convert_pt2e(prepared)


def _network(gm: torch.fx.GraphModule) -> tuple:
    spec = ftp.InputSpec.dynamic_batch("x", (3, SIZE, SIZE), min_batch=1, opt_batch=2, max_batch=4)
    builder, network, ctx = ftp.network_from_graph_module(gm, [spec])
    return builder, network, ctx, spec


def _constant(network: torch.Tensor, layer) -> torch.Tensor:
    source = producers(network)[layer.get_input(1).name]
    source.__class__ = trt_api.get_trt().IConstantLayer
    return torch.from_numpy(source.weights.copy()).reshape(-1)


def _scales(network) -> tuple[list[float], list[torch.Tensor]]:
    """Activation Q scales (sorted) and per-channel weight DQ scales (network order)."""
    made_by = producers(network)
    acts, weights = [], []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer_type(layer)
        if kind == "QUANTIZE":
            acts.append(float(_constant(network, layer)))
        elif kind == "DEQUANTIZE" and layer_type(made_by[layer.get_input(0).name]) == "CONSTANT":
            weights.append(_constant(network, layer))
    return sorted(acts), weights


def _model_and_data(name: str) -> tuple[torch.nn.Module, Callable[[int, int], torch.Tensor]]:
    """resnet18 with random weights on random data; MobileNetV2 with its real ImageNet weights on photo crops
    (random MobileNetV2 weights shrink activations to ~1e-10, where every value sits near a rounding tie)."""
    if name == "mobilenet_v2":
        from fx2trt_pipeline.models import mobilenet_v2_imagenet as mv2

        try:
            model = mv2.mobilenet_v2_imagenet()
        except ConfigError as exc:
            pytest.skip(str(exc))
        return model, lambda batch, seed: mv2.photo_samples(batch, size=SIZE, seed=seed)
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval(), lambda batch, seed: _batches(1, batch, seed=seed)[0]


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def flows(request):
    model, data = _model_and_data(request.param)
    calib = [data(3, 0)]
    qgm = pt2e_quantize(model, calib)
    return model, qgm, ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=CONFIG), data


def test_same_network_as_ftp_quantize_and_executor_parity(flows) -> None:
    model, qgm, ours, data = flows
    builder, network, _, spec = _network(qgm)
    _, network_ours, _, _ = _network(ours)
    kinds = ("QUANTIZE", "DEQUANTIZE", "CONVOLUTION", "MATRIX_MULTIPLY")
    counts = Counter(layer_type(network.get_layer(i)) for i in range(network.num_layers))
    counts_ours = Counter(layer_type(network_ours.get_layer(i)) for i in range(network_ours.num_layers))
    assert {k: counts[k] for k in kinds} == {k: counts_ours[k] for k in kinds}
    acts, weights = _scales(network)
    acts_ours, weights_ours = _scales(network_ours)
    torch.testing.assert_close(torch.tensor(acts), torch.tensor(acts_ours), rtol=1e-5, atol=0)
    assert len(weights) == len(weights_ours)
    for w, w_ours in zip(weights, weights_ours):
        torch.testing.assert_close(w, w_ours, rtol=1e-5, atol=0)
    assert build_engine_bytes(builder, network, [spec])  # dynamic batch profile 1..4
    executor = ftp.NetworkExecutor(network)
    # The executor sums int8 x int8 exactly (as TensorRT); the converted PT2E model runs float32 convolutions on
    # dequantized values and rounds x * (1/s), which flips the odd int8 value on a rounding tie. The same graph
    # with TensorRT's arithmetic is what the executor must equal; torch's own run stays close.
    exact = TensorRTArithmetic(qgm)
    for batch in (1, 3):
        x = data(batch, 10 + batch)
        with torch.no_grad():
            expected, fp32 = qgm(x), model(x)
        got = executor.run({"x": x})[0]["output0"]
        assert cosine_similarity(exact.run(x), got) >= 0.9999
        assert cosine_similarity(expected, got) >= 0.995
        assert cosine_similarity(fp32, expected) >= 0.99
    weighted = [n.name for n in qgm.graph.nodes if str(n.target).startswith(("aten.conv2d.", "aten.linear."))]
    assert exact.integer_nodes == weighted  # every conv / linear summed over its int8 values


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.pool = torch.nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        return torch.cat([self.pool(self.up(self.conv2(y))), self.pool(self.up(y))], 1)


def _weight_dq_axes(gm: torch.fx.GraphModule) -> dict[str, int]:
    """Consumer node name -> per-channel axis of its weight DQ."""
    dq = torch.ops.quantized_decomposed.dequantize_per_channel.default
    return {user.name: n.args[3] for n in gm.graph.nodes if n.target is dq for user in n.users}


def test_skip_overrides_and_deconv_axis() -> None:
    torch.manual_seed(0)
    model = Small().eval()
    calib = [torch.randn(2, 3, 16, 16)]
    config = ftp.QuantConfig(
        show_progress=False,
        skip=("conv2",),
        deconv_weight_axis=1,
        name_overrides={"conv1": ftp.LayerOverride(calibrator="minmax")},
    )
    qgm = pt2e_quantize(model, calib, config, dynamic=False)
    axes = _weight_dq_axes(qgm)
    assert sorted(axes.values()) == [0, 1, 1]  # conv1, and the ConvTranspose2d on axis 1; conv2 skipped
    qt = torch.ops.quantized_decomposed.quantize_per_tensor.default
    first_q = next(n for n in qgm.graph.nodes if n.target is qt and n.args[0].op == "placeholder")
    assert first_q.args[1] == pytest.approx(float(calib[0].abs().max()) / 127, rel=1e-6)  # minmax on conv1
    ours = ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=config)
    x = torch.randn(2, 3, 16, 16)  # the export's batch: it was static
    with torch.no_grad():
        assert cosine_similarity(ours(x), qgm(x)) > 0.9999


def test_build_engine_with_example_tensors_and_onnx_export(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = Small().eval(), torch.randn(2, 3, 16, 16)
    qgm = pt2e_quantize(model, [x], dynamic=False)
    art = ftp.build_engine(qgm, (x,), tmp_path / "small.plan")  # example tensors, as torch_tensorrt takes
    meta = json.loads(art.metadata_path.read_text())
    assert meta["inputs"][0]["shape"] == [2, 3, 16, 16] and meta["quant_state_hash"].startswith("sha256:")
    onnxruntime = pytest.importorskip("onnxruntime")
    path = ftp.export_qdq_onnx(qgm, (x,), tmp_path / "small.onnx")
    session = onnxruntime.InferenceSession(str(path))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert cosine_similarity(qgm(x), torch.from_numpy(got)) >= 0.9999


def test_x86_quantizer_graph_is_refused_before_tensorrt(monkeypatch) -> None:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval()
    x = torch.randn(2, 3, 16, 16)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    prepared(x)
    gm = convert_pt2e(prepared)

    def no_tensorrt():
        raise AssertionError("a TensorRT object was requested before the graph was checked")

    monkeypatch.setattr(trt_api, "get_trt", no_tensorrt)
    with pytest.raises(UnsupportedOpsError) as info:
        ftp.network_from_graph_module(gm, (x,))
    text = str(info.value)
    activation_qdq = [n.name for n in gm.graph.nodes if "per_tensor" in str(n.target)]
    assert len(activation_qdq) == 4 and all(name in text for name in activation_qdq)
    assert "uint8 is not int8" in text and "zero point" in text and "TensorRTQuantizer" in text
