"""Parity of the simulated INT8 model with the exact TensorRT network and with ONNX Runtime.

For each model: quantize (``--calibrator``, default mse), convert to a strongly typed TensorRT network,
execute that network layer by layer on CPU (the network executor) and compare with the simulated
GraphModule, export the QDQ ONNX and run it in ONNX Runtime, and print the five worst layers of the
quantization-error table.

    python benchmarks/parity.py --models resnet18 mobilenet_v2 centernet
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline.capture import flatten_outputs
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.validate.compare import cosine_similarity, max_abs_error, sqnr_db
from fx2trt_pipeline.validate.layer_report import layer_parity
from fx2trt_pipeline.validate.quant_error import quant_error_table
from fx2trt_pipeline.validate.runners import OnnxRuntimeRunner


def model_and_data(name: str) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor, str]:
    if name == "mobilenet_v2":
        from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_batches

        return mobilenet_v2_imagenet(), photo_batches(8, 3, seed=0), photo_batches(4, 1, seed=1)[0], "ImageNet"
    if name == "centernet":
        from fx2trt_pipeline.calib_data import load_mnist_detection
        from fx2trt_pipeline.models.centernet import load_demo_detector

        calib = load_mnist_detection("calib")
        val = load_mnist_detection("val")
        xs = torch.stack([calib[i][0] for i in range(24)])
        return load_demo_detector(), list(xs.split(8)), torch.stack([val[i][0] for i in range(4)]), "trained"
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(4, 3, 224, 224, generator=gen) for _ in range(3)]
    return torchvision.models.resnet18().eval(), data, torch.randn(2, 3, 224, 224, generator=gen), "random"


def row(label: str, ref: list[torch.Tensor], test: list[torch.Tensor]) -> str:
    cos = min(cosine_similarity(r, t) for r, t in zip(ref, test))
    sq = min(sqnr_db(r, t) for r, t in zip(ref, test))
    err = max(max_abs_error(r, t) for r, t in zip(ref, test))
    return f"  {label:34s} min cosine {cos:.6f}  min SQNR {sq:7.1f} dB  max abs err {err:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "centernet"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibrator", default="mse", choices=("minmax", "percentile", "entropy", "mse"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        model, calib, x, weights = model_and_data(name)
        start = time.perf_counter()
        qgm = ftp.quantize_model(
            model,
            calib,
            example_inputs=(calib[0],),
            config=ftp.QuantConfig(calibrator=args.calibrator, show_progress=False),
        )
        _, network, _ = network_from_graph_module(qgm, [ftp.InputSpec.from_tensor("x", x)])
        print(
            f"{name} ({weights} weights, {args.calibrator}), input {tuple(x.shape)}, "
            f"{network.num_layers} network layers, quantize+convert {time.perf_counter() - start:.1f} s"
        )
        with torch.no_grad():
            sim, fp32 = flatten_outputs(qgm(x)), flatten_outputs(model(x))
        report = layer_parity(qgm, network, (x,))
        print(
            f"  executor vs simulated: {'PASS' if report else 'FAIL'}, {len(report.layers.outputs)} "
            f"intermediate layers compared"
        )
        print(row("executor vs simulated (outputs)", sim, _executor_outputs(network, x)))
        with tempfile.TemporaryDirectory() as tmp:
            path = export_qdq_onnx(qgm, (x,), Path(tmp) / f"{name}.onnx", input_names=["x"])
            ort = OnnxRuntimeRunner(path)
            ort_out = list(ort.run({"x": x}).values())
        print(row("ONNX Runtime vs simulated", sim, ort_out))
        print(row("simulated INT8 vs FP32", fp32, sim))
        table = quant_error_table(model, qgm, (x,))
        print("  worst layers (quantization error):")
        for line in str(table).splitlines()[:7]:
            print("   ", line)


def _executor_outputs(network, x: torch.Tensor) -> list[torch.Tensor]:
    from fx2trt_pipeline.executor.network_executor import NetworkExecutor

    outputs, _ = NetworkExecutor(network).run({"x": x})
    return list(outputs.values())


if __name__ == "__main__":
    main()
