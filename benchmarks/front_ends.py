"""The torch.ao FX seed flow and PT2E (TensorRTQuantizer) as inputs: engine built, executor vs the front end's own
quantized model, INT8 vs FP32.

torch.ao: ``prepare_fx`` (TensorRT QConfig: symmetric qint8 activations, per-channel symmetric qint8 weights,
``get_tensorrt_backend_config()``), one calibration batch, ``convert_to_reference_fx``; the reference graph is
converted, built with the real builder, and run in the network executor next to the reference graph itself.
PT2E: ``torch.export`` with a dynamic batch -> ``prepare_pt2e(TensorRTQuantizer(mse))`` -> ``convert_pt2e``;
built with a batch profile 1..8, compared at batch 1 and 4, and with ``ftp.quantize``'s network (layer counts,
largest relative scale difference). Random weights except MobileNetV2 (real ImageNet weights, skimage photos).

    python benchmarks/front_ends.py                        # all 11 torch.ao models + PT2E resnet18 / mobilenet_v2
    python benchmarks/front_ends.py --ao resnet18 --pt2e   # a subset
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter

import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network
from fx2trt_pipeline.validate.compare import cosine_similarity

AO_MODELS = (
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "squeezenet1_0",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mnasnet0_5",
)
SIZE_AO, SIZE_PT2E = 96, 64


def model_and_data(name: str, size: int) -> tuple[torch.nn.Module, object]:
    """The model and ``data(batch, seed)``: photo crops for the real MobileNetV2, random tensors otherwise."""
    if name == "mobilenet_v2":
        from fx2trt_pipeline.models import mobilenet_v2_imagenet as mv2

        return mv2.mobilenet_v2_imagenet(), lambda batch, seed: mv2.photo_samples(batch, size=size, seed=seed)
    torch.manual_seed(0)
    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(weights=None, **extra).eval()
    return model, lambda batch, seed: torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def torch_ao_reference(model: torch.nn.Module, calib: torch.Tensor) -> torch.fx.GraphModule:
    """The seed flow: prepare_fx with a TensorRT QConfig, calibrate, convert_to_reference_fx."""
    from torch.ao import quantization as tq
    from torch.ao.quantization.backend_config import get_tensorrt_backend_config
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx

    qconfig = tq.QConfig(
        activation=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        weight=tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    mapping, backend = tq.QConfigMapping().set_global(qconfig), get_tensorrt_backend_config()
    prepared = prepare_fx(model, mapping, (calib,), backend_config=backend)
    with torch.no_grad():
        prepared(calib)
    return convert_to_reference_fx(prepared, qconfig_mapping=mapping, backend_config=backend)


def built_network(gm: torch.fx.GraphModule, specs: list) -> tuple:
    """Convert and build (real builder, optimization profile for dynamic specs); returns what must stay alive."""
    builder, network, ctx = ftp.network_from_graph_module(gm, specs)
    data = engine_bytes_from_network(builder, network, specs)
    return network, ctx, len(data)


def ao_row(name: str) -> str:
    start = time.perf_counter()
    model, data = model_and_data(name, SIZE_AO)
    ref = torch_ao_reference(model, data(2, 0))
    x = data(1, 1)
    network, _ctx, size = built_network(ref, [ftp.InputSpec.from_tensor("x", x)])
    got = ftp.NetworkExecutor(network).run({"x": x})[0]["output0"]
    with torch.no_grad():
        expected, fp32 = ref(x), model(x)
    return (
        f"| {name} | yes ({size / 2**20:.1f} MiB) | {cosine_similarity(expected, got):.6f} | "
        f"{cosine_similarity(fp32, expected):.4f} | {time.perf_counter() - start:.0f} |"
    )


def _layer_counts(network) -> Counter:
    return Counter(network.get_layer(i).type.name for i in range(network.num_layers))


def pt2e_row(name: str) -> str:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from fx2trt_pipeline.pt2e import TensorRTQuantizer

    start = time.perf_counter()
    model, data = model_and_data(name, SIZE_PT2E)
    calib = [data(8, 0), data(8, 100)]
    config = ftp.QuantConfig(calibrator="mse", show_progress=False)
    batch = torch.export.Dim("batch", min=1, max=8)
    prepared = prepare_pt2e(
        torch.export.export(model, (calib[0],), dynamic_shapes=({0: batch},)).module(), TensorRTQuantizer(config)
    )
    with torch.no_grad():
        for c in calib:
            prepared(c)
    qgm = convert_pt2e(prepared)
    spec = ftp.InputSpec.dynamic_batch("x", (3, SIZE_PT2E, SIZE_PT2E), 1, 4, 8)
    network, _ctx, size = built_network(qgm, [spec])
    ours = ftp.quantize(model, calib, example_inputs=(calib[0],), config=config)
    network_ours, _ctx_ours, _ = built_network(ours, [spec])
    kinds = ("QUANTIZE", "DEQUANTIZE", "CONVOLUTION", "MATRIX_MULTIPLY")
    same = all(_layer_counts(network)[k] == _layer_counts(network_ours)[k] for k in kinds)
    executor, cosines, fp32_cos = ftp.NetworkExecutor(network), [], []
    for b in (1, 4):
        x = data(b, 7 + b)
        with torch.no_grad():
            expected, fp32 = qgm(x), model(x)
        cosines.append(cosine_similarity(expected, executor.run({"x": x})[0]["output0"]))
        fp32_cos.append(cosine_similarity(fp32, expected))
    counts = ", ".join(f"{k.lower()} {_layer_counts(network)[k]}" for k in kinds)
    return (
        f"| {name} | yes, batch 1..8 ({size / 2**20:.1f} MiB) | {min(cosines):.6f} | {min(fp32_cos):.4f} | "
        f"{'same' if same else 'DIFFERENT'} ({counts}) | {time.perf_counter() - start:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ao", nargs="*", default=list(AO_MODELS), help="torch.ao models (none: skip)")
    parser.add_argument("--pt2e", nargs="*", default=["resnet18", "mobilenet_v2"], help="PT2E models")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch.ao's prepare_fx and qint8 tensors are deprecated in torch 2.14
    torch.set_num_threads(2)
    if args.ao:
        print(f"torch.ao FX seed flow, {SIZE_AO} px, batch 1\n")
        print("| model | engine built | executor vs torch.ao reference (cosine) | INT8 vs FP32 | seconds |")
        print("|---|---|---|---|---|")
        for name in args.ao:
            print(ao_row(name), flush=True)
    if args.pt2e:
        print(f"\nPT2E TensorRTQuantizer (mse), {SIZE_PT2E} px, dynamic batch\n")
        print(
            "| model | engine built | executor vs converted PT2E model (min cosine, batch 1 and 4) | "
            "INT8 vs FP32 | network vs ftp.quantize | seconds |"
        )
        print("|---|---|---|---|---|---|")
        for name in args.pt2e:
            print(pt2e_row(name), flush=True)


if __name__ == "__main__":
    main()
