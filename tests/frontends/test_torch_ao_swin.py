"""Swin graphs made elsewhere: torchvision's wrapped helpers (``shifted_window_attention``,
``_get_relative_position_bias``, ``_patch_merging_pad``) inside a torch.ao reference graph (converted as they
are, their insides float as torch.ao left them) and inside a float graph traced by torch.fx (decomposed at
capture, so our quantizer makes the projections and both attention matmuls INT8)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torchvision
from torchvision.models import swin_transformer as swin

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network
from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.quantize import int8_ops
from fx2trt_pipeline.quantize.state import get_quant_state
from fx2trt_pipeline.validate.compare import cosine_similarity
from fx2trt_pipeline.validate.tie_parity import TieTolerance, tie_parity
from fx2trt_pipeline.validate.tie_regions import ExecutorRegions
from tests.converters.qdq_graph import ao_reference

pytestmark = [
    pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed"),
    # torch.ao's prepare_fx / qint8 tensors are deprecated in torch 2.14 (pytorch#184982).
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"),
]

QUICK = TieTolerance(noise_flips=0)
WRAPPED = (swin.shifted_window_attention, swin._get_relative_position_bias, swin._patch_merging_pad)


def _small_swin() -> torch.nn.Module:
    """swin_t's architecture, scaled down: 4x4 windows shifted by 2 (masks), two stages, one patch merging."""
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer([4, 4], 16, [2, 2], [2, 4], [4, 4]).eval()
    with torch.no_grad():  # relative-position bias tables that matter (torchvision initializes them near zero)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 1.0)
    return model


def _data(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@functools.cache
def ao_flow() -> tuple[torch.fx.GraphModule, object, torch.Tensor]:
    """The torch.ao reference graph of the small Swin, its network (dynamic batch, engine built) and an input."""
    x = _data(2, 1)
    ref = ao_reference(_small_swin(), (x,))
    spec = ftp.InputSpec.dynamic_batch("x", (3, 32, 32), min_batch=1, opt_batch=2, max_batch=4)
    builder, network, ctx = network_from_graph_module(ref, [spec])
    assert len(engine_bytes_from_network(builder, network, [spec])) > 0
    return ref, NetworkExecutor(network), x


def test_torch_ao_reference_graph_builds_and_has_tie_aware_parity() -> None:
    ref, executor, x = ao_flow()
    assert sum(n.target in WRAPPED for n in ref.graph.nodes) == 9  # the calls torch.ao left opaque
    report = tie_parity(ref, ExecutorRegions(executor), (x,), QUICK)
    assert report and len(report.regions) >= 40, str(report)  # every torch.ao quantize node, region by region
    got = executor.run({"x": x})[0]["output0"]
    assert cosine_similarity(TensorRTArithmetic(ref).run(x), got) > 0.99999
    names = [name for name, _ in executor.layers]
    assert any(n.startswith("shifted_window_attention_1.") and "roll" in n for n in names)  # the shifted block


def test_a_wrong_attention_weight_fails_tie_aware_parity() -> None:
    """The check can fail: a reference whose first attention's qkv weight is 1.5x the network's is caught."""
    ref, executor, x = ao_flow()
    changed = copy.deepcopy(ref)
    with torch.no_grad():
        changed.get_parameter("features.1.0.attn.qkv.weight").mul_(1.5)
    report = tie_parity(changed, ExecutorRegions(executor), (x,), QUICK)
    assert not report and report.first_failure() is not None


def test_traced_float_graph_is_quantized_with_int8_attention() -> None:
    """A float graph traced by torch.fx (wrapped helpers inside) goes through our quantizer: the helpers are
    decomposed at capture, q/k/v and output projections get int8 weights, both attention matmuls sum int8."""
    model = _small_swin()
    foreign = torch.fx.symbolic_trace(model)
    x = _data(2, 1)
    config = ftp.QuantConfig(calibrator="minmax", show_progress=False)
    qgm = ftp.quantize_model(foreign, [_data(2, 2)], example_inputs=(x,), config=config)
    weights = {w.module for w in get_quant_state(qgm).placement.weights.values()}
    assert {"features.1.0.attn.qkv", "features.1.0.attn.proj", "features.3.1.attn.qkv"} <= weights
    assert sum(n.target is int8_ops.matmul for n in qgm.graph.nodes) == 8  # Q @ K^T and attn @ V in 4 blocks
    _, network, _ = network_from_graph_module(qgm, [ftp.InputSpec("x", tuple(x.shape))])
    report = tie_parity(qgm, ExecutorRegions(network), (x,), QUICK)
    assert report, str(report)
    with torch.no_grad():
        assert cosine_similarity(qgm(x), model(x)) > 0.99


def test_swin_t_torch_ao_reference_graph_has_tie_aware_parity() -> None:
    """torchvision's swin_t itself (224 px: 7x7 windows down to the last stage), batch 1, static shape."""
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ref = ao_reference(model, (x,))
    assert sum(n.target in WRAPPED for n in ref.graph.nodes) == 27
    builder, network, _ctx = network_from_graph_module(ref, [ftp.InputSpec("x", tuple(x.shape))])
    assert len(engine_bytes_from_network(builder, network, [ftp.InputSpec("x", tuple(x.shape))])) > 0
    report = tie_parity(ref, ExecutorRegions(network), (x,), QUICK)
    assert report and len(report.regions) >= 100, str(report)
