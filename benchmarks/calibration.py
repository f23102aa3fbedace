"""Calibration cost, side by side in one run: plain FP32 forwards vs fx2trt-pipeline vs torch.ao FX.

Same model (torchvision resnet18, random weights), same batches, same thread count. Each flow is
timed end to end (prepare / calibrate / convert) and reported as a ratio to the plain forward passes
over the same batches. Best of ``--repeat`` runs.

    python benchmarks/calibration.py --threads 2 --batches 4 --batch-size 8
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Callable

import torch
import torchvision


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_forwards(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for b in batches:
            model(b)


def ours(model: torch.nn.Module, batches: list[torch.Tensor], calibrator: str) -> None:
    import fx2trt_pipeline as ftp

    ftp.quantize_model(
        model, batches, example_inputs=(batches[0],), config=ftp.QuantConfig(calibrator=calibrator, show_progress=False)
    )


def torch_ao(model: torch.nn.Module, batches: list[torch.Tensor], observer: str) -> None:
    from torch.ao.quantization import (
        HistogramObserver,
        MinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )
    from torch.ao.quantization.backend_config import get_tensorrt_backend_config
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx

    act = {"histogram": HistogramObserver, "minmax": MinMaxObserver}[observer]
    qconfig = QConfig(
        activation=act.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(
            copy.deepcopy(model),
            QConfigMapping().set_global(qconfig),
            (batches[0],),
            backend_config=get_tensorrt_backend_config(),
        )
        with torch.no_grad():
            for b in batches:
                prepared(b)
        convert_to_reference_fx(prepared, backend_config=get_tensorrt_backend_config())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    batches = [torch.randn(args.batch_size, 3, args.size, args.size) for _ in range(args.batches)]

    plain_forwards(model, batches[:1])  # warm-up
    base = best_of(lambda: plain_forwards(model, batches), args.repeat)
    rows = [("plain FP32 forwards", base)]
    for calibrator in ("entropy", "mse", "minmax"):
        rows.append(
            (f"fx2trt quantize_model() [{calibrator}]", best_of(lambda: ours(model, batches, calibrator), args.repeat))
        )
    for observer in ("histogram", "minmax"):
        rows.append(
            (
                f"torch.ao prepare/calibrate/convert [{observer}]",
                best_of(lambda: torch_ao(model, batches, observer), args.repeat),
            )
        )

    print(
        f"resnet18, {args.batches} batches of {args.batch_size}x3x{args.size}x{args.size}, "
        f"{args.threads} threads, best of {args.repeat}"
    )
    print(f"{'flow':48s} {'seconds':>8s} {'x plain':>8s}")
    for name, sec in rows:
        print(f"{name:48s} {sec:8.3f} {sec / base:8.2f}")
    ours_entropy = rows[1][1]
    ao_hist = rows[4][1]
    print(f"speed-up of fx2trt quantize_model() [entropy] over torch.ao [histogram]: {ao_hist / ours_entropy:.2f}x")


if __name__ == "__main__":
    main()
