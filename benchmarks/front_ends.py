"""The torch.ao FX seed flow and PT2E (TensorRTQuantizer) as inputs: engine built, executor vs the front end's own
quantized model, INT8 vs FP32.

torch.ao: ``prepare_fx`` (TensorRT QConfig: symmetric qint8 activations, per-channel symmetric qint8 weights,
``get_tensorrt_backend_config()``), one calibration batch, ``convert_to_reference_fx``; the reference graph is
converted, built with the real builder, and run in the network executor next to the reference graph itself.
PT2E: ``torch.export`` with a dynamic batch -> ``prepare_pt2e(TensorRTQuantizer(mse))`` -> ``convert_pt2e``;
built with a batch profile 1..8, compared at batch 1 and 4, and with ``ftp.quantize_model``'s network (layer counts,
largest relative scale difference). Random weights with real-ish BatchNorm statistics (benchmarks/coverage.py's
models) on random inputs; ``--real-mobilenet`` adds MobileNetV2 with its real ImageNet weights on photo crops.

The executor is compared with the front end's graph twice: evaluated with TensorRT's arithmetic (exact int8 sums,
``x / s`` half-to-even quantize: ``executor.exact_reference.TensorRTArithmetic``), which an integer-exact engine
must equal, and as torch runs it (float32 convolutions, ``x * (1/s)``), which differs on rounding ties.

    python benchmarks/front_ends.py                        # all 11 torch.ao models + PT2E resnet18 / mobilenet_v2
    python benchmarks/front_ends.py --ao resnet18 --pt2e   # a subset
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter

import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network
from fx2trt_pipeline.executor.exact_reference import TensorRTArithmetic
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


def model_and_data(name: str, size: int, real: bool = False) -> tuple[torch.nn.Module, object]:
    """The model and ``data(batch, seed)``: the real MobileNetV2 on photo crops (``real``), else random weights
    with real-ish BatchNorm statistics (as benchmarks/coverage.py) on random tensors."""
    if real:
        from fx2trt_pipeline.models import mobilenet_v2_imagenet as mv2

        return mv2.mobilenet_v2_imagenet(), lambda batch, seed: mv2.photo_samples(batch, size=size, seed=seed)
    from coverage import make_model

    torch.manual_seed(0)
    model, _ = make_model(name)
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


def ao_row(name: str, real: bool = False) -> str:
    start = time.perf_counter()
    model, data = model_and_data(name, SIZE_AO, real)
    ref = torch_ao_reference(model, data(2, 0))
    x = data(1, 1)
    network, _ctx, size = built_network(ref, [ftp.InputSpec.from_tensor("x", x)])
    got = ftp.NetworkExecutor(network).run({"x": x})[0]["output0"]
    with torch.no_grad():
        as_torch_runs_it, fp32 = ref(x), model(x)
    exact = TensorRTArithmetic(ref).run(x)
    label = f"{name} (ImageNet weights, photos)" if real else name
    return (
        f"| {label} | yes ({size / 2**20:.1f} MiB) | {cosine_similarity(exact, got):.6f} | "
        f"{cosine_similarity(as_torch_runs_it, got):.6f} | {cosine_similarity(fp32, as_torch_runs_it):.4f} | "
        f"{time.perf_counter() - start:.0f} |"
    )


def _layer_counts(network) -> Counter:
    return Counter(network.get_layer(i).type.name for i in range(network.num_layers))


def pt2e_row(name: str, real: bool = False) -> str:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from fx2trt_pipeline.pt2e import TensorRTQuantizer

    start = time.perf_counter()
    model, data = model_and_data(name, SIZE_PT2E, real)
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
    ours = ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=config)
    network_ours, _ctx_ours, _ = built_network(ours, [spec])
    kinds = ("QUANTIZE", "DEQUANTIZE", "CONVOLUTION", "MATRIX_MULTIPLY")
    same = all(_layer_counts(network)[k] == _layer_counts(network_ours)[k] for k in kinds)
    executor, exact = ftp.NetworkExecutor(network), TensorRTArithmetic(qgm)
    cosines, torch_cosines, fp32_cos = [], [], []
    for b in (1, 4):
        x = data(b, 7 + b)
        with torch.no_grad():
            expected, fp32 = qgm(x), model(x)
        got = executor.run({"x": x})[0]["output0"]
        cosines.append(cosine_similarity(exact.run(x), got))
        torch_cosines.append(cosine_similarity(expected, got))
        fp32_cos.append(cosine_similarity(fp32, expected))
    counts = ", ".join(f"{k.lower()} {_layer_counts(network)[k]}" for k in kinds)
    label = f"{name} (ImageNet weights, photos)" if real else name
    return (
        f"| {label} | yes, batch 1..8 ({size / 2**20:.1f} MiB) | {min(cosines):.6f} | {min(torch_cosines):.6f} | "
        f"{min(fp32_cos):.4f} | {'same' if same else 'DIFFERENT'} ({counts}) | {time.perf_counter() - start:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ao", nargs="*", default=list(AO_MODELS), help="torch.ao models (none: skip)")
    parser.add_argument("--pt2e", nargs="*", default=["resnet18", "mobilenet_v2"], help="PT2E models")
    parser.add_argument(
        "--real-mobilenet", action="store_true", help="add MobileNetV2 rows with real ImageNet weights on photo crops"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch.ao's prepare_fx and qint8 tensors are deprecated in torch 2.14
    torch.set_num_threads(2)
    if args.ao:
        print(f"torch.ao FX seed flow, {SIZE_AO} px, batch 1\n")
        print(
            "| model | engine built | executor vs torch.ao graph, TensorRT arithmetic | executor vs torch.ao graph "
            "as torch runs it | INT8 vs FP32 | seconds |"
        )
        print("|---|---|---|---|---|---|")
        for name in args.ao:
            print(ao_row(name), flush=True)
        if args.real_mobilenet:
            print(ao_row("mobilenet_v2", real=True), flush=True)
    if args.pt2e:
        print(f"\nPT2E TensorRTQuantizer (mse), {SIZE_PT2E} px, dynamic batch\n")
        print(
            "| model | engine built | executor vs converted PT2E graph, TensorRT arithmetic (min of batch 1 and 4) "
            "| as torch runs it | INT8 vs FP32 | network vs ftp.quantize_model | seconds |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in args.pt2e:
            print(pt2e_row(name), flush=True)
        if args.real_mobilenet:
            print(pt2e_row("mobilenet_v2", real=True), flush=True)


if __name__ == "__main__":
    main()
