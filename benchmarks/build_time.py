"""Engine build cost per model: network construction, TensorRT build, engine size.

Each model (torchvision architectures with random weights: build cost does not depend on the values)
is quantized once with ``fx2trt_pipeline.quantize`` (minmax over a few random batches, which is not
what is timed), then ``build_engine`` runs ``--repeat`` times; the table shows the best network-
construction and build seconds and the engine size. Builds run on the CPU with TensorRT-RTX (its AOT
builder needs no GPU); the numbers are for that builder and the given thread count.

    python benchmarks/build_time.py --threads 2 --models resnet18 mobilenet_v2 --batch 1 --size 224
    python benchmarks/build_time.py --dynamic-batch 1 8 32     # one optimization profile on the batch
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision


def make_model(name: str) -> torch.nn.Module:
    """A torchvision classifier with random weights (no download)."""
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def quantize(model: torch.nn.Module, batch: int, size: int, calib_batches: int) -> tuple[Any, float]:
    import fx2trt_pipeline as ftp

    batches = [torch.randn(batch, 3, size, size) for _ in range(calib_batches)]
    start = time.perf_counter()
    qgm = ftp.quantize_model(
        model,
        batches,
        example_inputs=(batches[0],),
        config=ftp.QuantConfig(calibrator="minmax", show_progress=False),
    )
    return qgm, time.perf_counter() - start


def build_once(qgm: Any, spec: Any, path: Path, opt_level: int | None) -> dict[str, float]:
    from fx2trt_pipeline.engine.engine_builder import build_engine
    from fx2trt_pipeline.engine.options import BuildOptions

    art = build_engine(
        qgm, [spec], path, options=BuildOptions(builder_optimization_level=opt_level), output_names=["logits"]
    )
    build = art.metadata["build"]
    return {
        "network_s": build["network_seconds"],
        "build_s": build["build_seconds"],
        "engine_mb": art.size_bytes / 2**20,
        "layers": art.metadata["num_layers"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--batch", type=int, default=1, help="static batch (ignored with --dynamic-batch)")
    parser.add_argument("--dynamic-batch", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"), default=None)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--calib-batches", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="builds per model; the best is reported")
    parser.add_argument("--opt-level", type=int, default=None, help="builder_optimization_level (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        import fx2trt_pipeline as ftp

        ftp.quantize_model  # noqa: B018  (the quantizer may not be installed in a partial checkout)
        from fx2trt_pipeline import trt_api
        from fx2trt_pipeline.network.inputs import InputSpec

        trt_api.get_trt()
    except Exception as exc:  # report what is missing instead of a traceback
        print(f"cannot run: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 2

    if args.dynamic_batch:
        lo, opt, hi = args.dynamic_batch
        spec = InputSpec.dynamic_batch("images", (3, args.size, args.size), lo, opt, hi)
        calib_batch = opt
    else:
        spec = InputSpec("images", (args.batch, 3, args.size, args.size))
        calib_batch = args.batch

    print(
        f"# {trt_api.library_name()} {trt_api.library_version()}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, threads={torch.get_num_threads()}, input {spec.shape}"
        + (f" profile {spec.min_shape}..{spec.max_shape}" if spec.is_dynamic else "")
        + f", opt level {args.opt_level if args.opt_level is not None else 'default'}, best of {args.repeat}"
    )
    header = f"{'model':<14} {'layers':>6} {'quantize s':>10} {'network s':>10} {'build s':>8} {'engine MB':>10}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            qgm, quant_s = quantize(make_model(name), calib_batch, args.size, args.calib_batches)
            try:
                runs = [build_once(qgm, spec, Path(tmp) / f"{name}.plan", args.opt_level) for _ in range(args.repeat)]
            except ImportError as exc:  # converters not installed in this checkout
                print(f"cannot build: the converters do not import ({exc})", file=sys.stderr)
                return 2
            best = {k: min(r[k] for r in runs) for k in ("network_s", "build_s")}
            print(
                f"{name:<14} {runs[0]['layers']:>6} {quant_s:>10.2f} {best['network_s']:>10.3f} "
                f"{best['build_s']:>8.3f} {runs[0]['engine_mb']:>10.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
