"""The torch.ao FX seed flow (prepare_fx with a TensorRT QConfig and get_tensorrt_backend_config, calibrate,
convert_to_reference_fx) as an input: engine + sidecar built, executor equal to the torch.ao reference graph,
per-layer reports on the reference graph."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic
from fx2trt_pipeline.validate.compare import compare_outputs, cosine_similarity
from tests.converters.harness import convert_gm
from tests.converters.qdq_graph import ao_reference

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    # torch.ao's prepare_fx / qint8 tensors are deprecated in torch 2.14 (pytorch#184982).
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"),
]


def _seed_flow(name: str, size: int = 96) -> tuple[torch.nn.Module, torch.fx.GraphModule, torch.Tensor]:
    # 96 px: at 64 px resnet18's last maps are 2x2, whose average sits on a rounding tie in a quarter of
    # the values when the pool's output shares its input scale; torch.ao rounds x * (1/s) there, TensorRT
    # x / s half to even (docs/benchmarks.md).
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, ao_reference(model, (x,)), x


@pytest.fixture(scope="module")
def resnet18_flow() -> tuple[torch.nn.Module, torch.fx.GraphModule, torch.Tensor]:
    return _seed_flow("resnet18")


@pytest.mark.parametrize("name", ["resnet18", "mnasnet0_5"])
def test_seed_flow_builds_and_matches_reference(name: str, tmp_path, resnet18_flow) -> None:
    model, ref, x = resnet18_flow if name == "resnet18" else _seed_flow(name)
    art = ftp.build_engine(ref, [ftp.InputSpec("x", tuple(x.shape))], tmp_path / "m.plan")
    meta = json.loads(art.metadata_path.read_text())
    assert meta["quant_state_hash"].startswith("sha256:") and meta["quant_state_hash_source"] == "state_dict"
    converted = convert_gm(ref, (x,))  # names, Q/DQ counts and int8 kernels checked inside
    outputs, _ = ftp.NetworkExecutor(converted.network).run({"x0": x})
    with torch.no_grad():
        as_torch_runs_it = ref(x)
    # The executor sums int8 x int8 exactly (as TensorRT); torch.ao runs float32 convolutions on dequantized
    # values and rounds x * (1/s), which flips the odd int8 value on a rounding tie. The same graph with
    # TensorRT's arithmetic (same int8 weights and scales) is what the executor must equal.
    assert cosine_similarity(TensorRTArithmetic(ref).run(x), outputs["output0"]) >= 0.9999
    assert cosine_similarity(as_torch_runs_it, outputs["output0"]) >= 0.999
    report = ftp.layer_parity(ref, converted.network, (x,))  # default tolerance: cosine 0.9999, 30 dB
    assert report.outputs and len(report.layers.outputs) > 50, str(report)  # qint8 values compared layer by layer


def test_tensorrt_arithmetic_reference_catches_a_wrong_weight(resnet18_flow) -> None:
    """The exact reference is not the executor agreeing with itself: a graph whose first block's conv weight
    is 1.5x the network's (a scale bug) falls below the parity threshold, end to end and layer by layer."""
    import copy

    _, ref, x = resnet18_flow
    converted = convert_gm(ref, (x,))
    got = ftp.NetworkExecutor(converted.network).run({"x0": x})[0]["output0"]
    reference = TensorRTArithmetic(ref)
    exact = reference.run(x)
    assert len(reference.integer_nodes) == 21  # 20 convs and the fc, each an int8 x int8 sum + epilogue
    assert cosine_similarity(exact, got) >= 0.99999
    changed = copy.deepcopy(ref)
    conv = changed.get_submodule("layer1.0.conv1")[0]  # ConvReLU2d: (reference conv, relu)
    with torch.no_grad():  # torch.ao quantizes this float weight with the module's fixed scales
        conv.weight.mul_(1.5)
    assert cosine_similarity(TensorRTArithmetic(changed).run(x), got) < 0.9999
    assert not ftp.layer_parity(changed, converted.network, (x,))


def test_weights_are_torch_ao_int8_values(resnet18_flow) -> None:
    """The kernel constants are exactly torch.ao's quantize_per_channel values, ties included."""
    from fx2trt_pipeline.converters.conv import reference_int8_weight

    _, ref, x = resnet18_flow
    conv = ref.get_submodule("layer1.0.conv1")[0]
    q = conv.get_quantized_weight()
    assert torch.equal(reference_int8_weight(conv), q.int_repr())
    scale = conv.weight_scale.reshape(-1, 1, 1, 1).float()
    naive = torch.clamp(torch.round(conv.weight.detach() / scale), -128, 127).to(torch.int8)
    # amax / 127.5 scales put each channel's extreme weight on a tie: re-rounding would differ there.
    assert not torch.equal(naive, q.int_repr())
    converted = convert_gm(ref, (x,))
    (layer,) = [la for la in converted.layers_of("CONSTANT") if la.name == "layer1_0_conv1.conv.weight.int8"]
    layer.__class__ = trt_api.get_trt().IConstantLayer
    assert torch.equal(torch.from_numpy(layer.weights.copy()).reshape(q.shape), q.int_repr())


def test_reports_accept_torch_ao_graphs(resnet18_flow) -> None:
    model, ref, x = resnet18_flow
    table = ftp.quant_error_table(model, ref, (x,))
    convs = [r for r in table if r.op in ("Conv2d", "ConvReLU2d")]
    assert len(convs) == 20 and all(r.weight_sqnr_db > 30 and r.activation_cosine > 0.999 for r in convs)
    q = torch.quantize_per_tensor(torch.tensor([0.5, -1.0]), 0.25, 0, torch.qint8)
    assert compare_outputs({"y": q}, {"y": torch.tensor([0.5, -1.0])})
