"""Cost of TensorRT's integer arithmetic in the simulated model, and tie-aware parity per backend.

For each model: quantize, then time the simulated forward with integer arithmetic (exact int8 x int8
sums, float32 epilogue: what ``ftp.quantize_model`` returns) against the float path (a float32 conv on
dequantized values: ``float_form.float_path``), interleaved in one run so that machine load hits both;
check thread-count determinism of both; then tie-aware parity of the network executor and of ONNX
Runtime without graph optimizations (parity) and with its default optimizations (deployment).

    python benchmarks/integer_path.py --models mobilenet_v2 resnet18 --size 224 --repeats 5 [--timing-only]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.quantize import float_form
from fx2trt_pipeline.validate.tie_parity import tie_parity
from fx2trt_pipeline.validate.tie_regions import ExecutorRegions, OnnxRuntimeRegions


def model_and_data(name: str, size: int) -> tuple[torch.nn.Module, list[torch.Tensor], torch.Tensor]:
    if name == "mobilenet_v2":
        from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_samples

        return mobilenet_v2_imagenet(), [photo_samples(8, size, seed=0)], photo_samples(4, size, seed=1)
    gen = torch.Generator().manual_seed(0)
    return (
        torchvision.models.resnet18().eval(),
        [torch.randn(8, 3, size, size, generator=gen)],
        torch.randn(4, 3, size, size, generator=gen),
    )


def timing(integer: torch.nn.Module, floating: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per forward, the two paths interleaved."""
    times: dict[str, list[float]] = {"integer": [], "float": []}
    with torch.no_grad():
        integer(x), floating(x)  # warm-up
        for _ in range(repeats):
            for label, module in (("integer", integer), ("float", floating)):
                start = time.perf_counter()
                module(x)
                times[label].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def thread_drift(module: torch.nn.Module, x: torch.Tensor) -> float:
    """Max |output(1 thread) - output(2 threads)|."""
    before = torch.get_num_threads()
    outs = []
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(module(x))
    torch.set_num_threads(before)
    return float((outs[0] - outs[1]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timing-only", action="store_true", help="skip the parity part")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for name in args.models:
        model, calib, x = model_and_data(name, args.size)
        qgm = ftp.quantize_model(model, calib, config=ftp.QuantConfig(show_progress=False))
        fgm = float_form.float_path(qgm)
        t = timing(qgm, fgm, x, args.repeats)
        print(
            f"{name}, input {tuple(x.shape)}: simulated forward integer {t['integer'] * 1e3:.0f} ms, float "
            f"{t['float'] * 1e3:.0f} ms, ratio {t['integer'] / t['float']:.2f}x"
        )
        print(
            f"  1 vs 2 threads, max |diff| of the outputs: integer {thread_drift(qgm, x):.3g}, "
            f"float {thread_drift(fgm, x):.3g}"
        )
        if args.timing_only:
            continue
        _, network, _ctx = network_from_graph_module(qgm, [ftp.InputSpec.from_tensor("x", x)])
        with tempfile.TemporaryDirectory() as tmp:
            path = export_qdq_onnx(qgm, (x,), Path(tmp) / f"{name}.onnx", input_names=["x"])
            backends = [
                ExecutorRegions(network),
                OnnxRuntimeRegions(path, "disabled", "ONNX Runtime parity"),
                OnnxRuntimeRegions(path, "all", "ONNX Runtime deployment"),
            ]
            for backend in backends:
                print("  " + tie_parity(qgm, backend, (x,)).summary())


if __name__ == "__main__":
    main()
