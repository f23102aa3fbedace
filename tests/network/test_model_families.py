"""A ViT-style block and a segmentation-style model end to end: quantize -> convert -> real TensorRT-RTX
build (dynamic batch) -> network executor vs the simulated INT8 model, plus the transformer Q/DQ placement."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.validate.compare import cosine_similarity
from fx2trt_pipeline.validate.quant_error import quant_error_table

pytestmark = pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")


class TinyViT(nn.Module):
    """Patch-embedding conv, class token, one pre-norm encoder block (MHA + GELU MLP), LayerNorm head."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x)[:, 0])


class TinySegmenter(nn.Module):
    """Strided conv backbone, classifier conv, bilinear upsampling back to the input size read from its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(16, 32, 3, 2),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(32, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(self.classifier(self.backbone(x)), size=size, mode="bilinear", align_corners=False)


def _end_to_end(model: nn.Module, shape: tuple[int, ...]) -> tuple[torch.fx.GraphModule, object]:
    torch.manual_seed(0)
    calib = [torch.randn(2, *shape) for _ in range(2)]
    qgm = ftp.quantize_model(
        model.eval(), calib, example_inputs=(calib[0],), config=ftp.QuantConfig(show_progress=False)
    )
    spec = ftp.InputSpec.dynamic_batch("x", shape, 1, 2, 4)
    builder, network, _ = network_from_graph_module(qgm, [spec])
    assert len(engine_bytes_from_network(builder, network, [spec])) > 0
    x = torch.randn(3, *shape)  # a batch size the calibration never saw
    outputs, _ = NetworkExecutor(network).run({"x": x})
    with torch.no_grad():
        simulated, fp32 = qgm(x), model(x)
    assert cosine_similarity(simulated, outputs[network.get_output(0).name]) >= 0.9999
    assert cosine_similarity(fp32, simulated) >= 0.99
    return qgm, network


def test_vit_block_quantizes_both_attention_matmuls_and_every_linear() -> None:
    model = TinyViT()
    qgm, network = _end_to_end(model, (3, 16, 16))
    # The per-layer error table captures the float model with the same attention rewrite (same node names).
    table = quant_error_table(model, qgm, (torch.randn(2, 3, 16, 16),))
    assert {"matmul", "matmul_1", "attn_q_proj", "attn_out_proj"} <= {row.layer for row in table}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    types = Counter(layer.type.name for layer in layers)
    assert types["NORMALIZATION"] == 3 and types["SOFTMAX"] == 1
    made_by = {layer.get_output(j).name: layer for layer in layers for j in range(layer.num_outputs)}

    def dequantized(tensor) -> bool:
        layer = made_by.get(tensor.name)
        while layer is not None and layer.type.name in ("SHUFFLE", "UNSQUEEZE"):  # transposes, rank matching
            layer = made_by.get(layer.get_input(0).name)
        return layer is not None and layer.type.name == "DEQUANTIZE"

    matmuls = [layer for layer in layers if layer.type.name == "MATRIX_MULTIPLY"]
    # q, k, v, out projections + 2 MLP linears + head + Q @ K^T + attn @ V
    assert len(matmuls) == 9
    assert all(dequantized(m.get_input(0)) and dequantized(m.get_input(1)) for m in matmuls)
    softmax_or_norm_inputs = [layer.get_input(0) for layer in layers if layer.type.name in ("SOFTMAX", "NORMALIZATION")]
    assert not any(dequantized(t) for t in softmax_or_norm_inputs)  # LayerNorm / softmax stay float


def test_segmentation_model_resizes_to_the_dynamic_input_size() -> None:
    _, network = _end_to_end(TinySegmenter(), (3, 20, 24))
    assert tuple(network.get_output(0).shape) == (-1, 5, 20, 24)
