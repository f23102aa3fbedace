"""Real INT8 engines for whole models, quantized by our quantizer, built by the TensorRT-RTX builder.

For resnet18, mobilenet_v2 and the CenterNet-style detector (three ConvTranspose2d stages), each with a
dynamic batch profile: the network has one IQuantizeLayer / IDequantizeLayer per Q/DQ node of the graph,
every conv / deconv kernel and every matmul weight is an int8 constant through an IDequantizeLayer, every
layer maps back to an FX node, the engine is non-empty and its metadata round-trips through the sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import load_engine_bytes
from fx2trt_pipeline.models.centernet import centernet_resnet18
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.quantize.qdq_ops import is_dequantize, is_quantize
from tests.converters.harness import check_kernels, check_names, check_qdq_counts, layer_type, producers

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")

MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(),
    "centernet": lambda: centernet_resnet18(num_classes=4),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_quantized_model_builds_a_dynamic_batch_int8_engine(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(2, 3, 64, 64, generator=gen) for _ in range(2)]
    qgm = ftp.quantize_model(model, data, example_inputs=(data[0],), config=ftp.QuantConfig(show_progress=False))
    spec = ftp.InputSpec.dynamic_batch("images", (3, 64, 64), min_batch=1, opt_batch=4, max_batch=8)

    _, network, _ = network_from_graph_module(qgm, [spec])
    check_names(qgm, network)
    check_qdq_counts(qgm, network)
    check_kernels(network)
    q_nodes = sum(is_quantize(n) for n in qgm.graph.nodes)
    dq_nodes = sum(is_dequantize(n) for n in qgm.graph.nodes)
    types = [layer_type(network.get_layer(i)) for i in range(network.num_layers)]
    assert types.count("QUANTIZE") == q_nodes > 0 and types.count("DEQUANTIZE") == dq_nodes
    made_by = producers(network)
    trt = trt_api.get_trt()
    for i in range(network.num_layers):  # a matmul weight is an int8 constant through an IDequantizeLayer
        layer = network.get_layer(i)
        if layer_type(layer) != "MATRIX_MULTIPLY":
            continue
        source = made_by.get(layer.get_input(1).name)
        while source is not None and layer_type(source) == "SHUFFLE":  # a transpose of the weight
            source = made_by.get(source.get_input(0).name)
        assert source is not None and layer_type(source) == "DEQUANTIZE", layer.name
        constant = made_by.get(source.get_input(0).name)
        assert layer_type(constant) == "CONSTANT" and constant.get_output(0).dtype == trt.int8, layer.name
    if name == "centernet":
        assert types.count("DECONVOLUTION") == 3

    art = ftp.build_engine(qgm, [spec], tmp_path / f"{name}.plan")
    data_bytes, meta = load_engine_bytes(art.engine_path)
    assert len(data_bytes) == art.size_bytes > 100_000
    assert json.loads(art.metadata_path.read_text()) == meta
    assert [ftp.InputSpec.from_dict(d) for d in meta["inputs"]] == [spec]
    assert meta["quant_state_hash"] == "sha256:" + ftp.get_quant_state(qgm).digest()
    assert meta["library"] == {"name": trt_api.library_name(), "version": trt_api.library_version()}
    assert all(o["shape"][0] == -1 for o in meta["outputs"])
