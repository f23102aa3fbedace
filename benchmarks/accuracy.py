"""Accuracy of the demo detector on real labels: FP32, INT8 per calibrator, engine parity, mixed precision.

One calibration pass over the ``calib`` split; every number is scored on the ``val`` split (300 MNIST
scenes, pycocotools COCO mAP). The engine backend is the TensorRT engine where a supported GPU exists,
else the network executor on the converted network definition (ONNX Runtime on the QDQ ONNX is
printed beside it with ``--onnx``).

    python benchmarks/accuracy.py                       # ~6-8 min on 2 busy CPU cores
    python benchmarks/accuracy.py --max-images 100 --full-sensitivity
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.models.centernet import centernet_decode
from fx2trt_pipeline.quantize.api import convert
from fx2trt_pipeline.quantize.config import QuantConfig
from fx2trt_pipeline.tune.calibrator_search import best_calibrator
from fx2trt_pipeline.tune.mixed_precision import mixed_precision_search
from fx2trt_pipeline.tune.sensitivity import layer_sensitivity, quantize_with_skip
from fx2trt_pipeline.validate.accuracy import detection_evaluator, validate_detector
from fx2trt_pipeline.validate.demo_detector import demo_setup
from fx2trt_pipeline.validate.gate import DEFAULT_ENGINE_TOLERANCE, DEFAULT_INT8_BUDGET, GateSpec


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""

    def ranks(v: list[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in t.unique():  # average the ranks of ties
            r[t == value] = r[t == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-images", type=int, default=None, help="score the first N val scenes (all 300)")
    p.add_argument("--calib-images", type=int, default=None, help="calibrate on N calib scenes (all 200)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=DEFAULT_INT8_BUDGET, help="max mAP drop (0.003: 0.3 pts)")
    p.add_argument("--mp-calibrator", default="percentile", help="calibrator of the mixed-precision demo")
    p.add_argument("--mp-percentile", type=float, default=99.9)
    p.add_argument("--onnx", action="store_true", help="also score ONNX Runtime on the QDQ ONNX")
    p.add_argument(
        "--full-sensitivity",
        action="store_true",
        help="leave-one-out mAP of every layer (one evaluation each) vs the SQNR proxy",
    )
    p.add_argument("--weights", default=None, help="detector checkpoint (default: the shipped one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"$ python {' '.join(sys.argv)}")
    library = trt_api.library_name() if trt_api.is_available() else "no TensorRT"
    print(f"torch {torch.__version__}, {library}, {platform.processor() or platform.machine()}, {args.threads} threads")

    t0 = start = time.perf_counter()
    setup = demo_setup(calib_images=args.calib_images, weights=args.weights)
    print(
        f"prepare + calibrate once: {time.perf_counter() - start:.1f} s "
        f"({sum(len(b) for b in setup.calib_batches)} calib scenes)"
    )
    evaluate = detection_evaluator(setup.val, centernet_decode, max_images=args.max_images)
    fp32 = evaluate(setup.model)
    print(f"\nFP32: mAP {100 * fp32['mAP']:.2f}  AP50 {100 * fp32['AP50']:.2f}  ({int(fp32['num_images'])} val scenes)")

    qgm, table = best_calibrator(setup.prepared, evaluate, metric="mAP", fp32_metrics=fp32)
    print(f"\n{table}")
    drop = fp32["mAP"] - table.best_row.metrics["mAP"]
    print(
        f"best: {table.best.label}, INT8 drop {100 * drop:+.2f} points "
        f"(target <= {100 * args.budget:.2f}): {'met' if drop <= args.budget + 1e-12 else 'NOT met'}"
    )

    backends = ["network_executor", "onnxruntime"] if args.onnx else "auto"
    gate = GateSpec(engine_tolerance=DEFAULT_ENGINE_TOLERANCE, int8_budget=args.budget)
    result = validate_detector(
        setup.model,
        qgm,
        setup.val,
        max_images=args.max_images,
        backends=backends,
        decode_fn=centernet_decode,
        gate=gate,
    )
    print(f"\nparity with {table.best.label}:\n{result}")

    mp = mixed_precision_search(
        setup.model,
        setup.prepared,
        evaluate,
        args.budget,
        config=table.best.config(QuantConfig(show_progress=False)),
        calib_batches=setup.calib_batches,
        fp32_metric=fp32["mAP"],
    )
    print(
        f"\nmixed precision, best calibrator ({table.best.label}): {len(mp.float_layers)} layer(s) in "
        f"float, mAP {100 * mp.final:.2f}, {'budget met' if mp.met_budget else 'budget NOT met'} "
        f"({mp.evaluations} evaluations{'; ' + mp.note if mp.note else ''})"
    )

    demo_cfg = QuantConfig(calibrator=args.mp_calibrator, percentile=args.mp_percentile, show_progress=False)
    label = f"{args.mp_calibrator} {args.mp_percentile:g}" if args.mp_calibrator == "percentile" else args.mp_calibrator
    start = time.perf_counter()
    mp = mixed_precision_search(
        setup.model,
        setup.prepared,
        evaluate,
        args.budget,
        config=demo_cfg,
        calib_batches=setup.calib_batches,
        fp32_metric=fp32["mAP"],
    )
    print(f"\nmixed precision, {label} ({time.perf_counter() - start:.0f} s):")
    print(mp)

    if args.full_sensitivity:  # the metric effect of every layer, to judge the proxies by
        start = time.perf_counter()
        sens = layer_sensitivity(
            setup.model, setup.prepared, (setup.calib_batches[0],), config=demo_cfg, calib_batches=setup.calib_batches
        )
        proxy_seconds = time.perf_counter() - start
        int8 = evaluate(convert(setup.prepared, demo_cfg))["mAP"]
        for s in sens:
            floated = quantize_with_skip(setup.model, setup.prepared, [s.layer], demo_cfg, setup.calib_batches)
            s.recovered = evaluate(floated)["mAP"] - int8
        sens.sort(key=lambda s: -(s.recovered or 0.0))
        eval_seconds = time.perf_counter() - start - proxy_seconds
        print(
            f"\nleave-one-out sensitivity of every layer ({label}, full INT8 {100 * int8:.2f}; proxies "
            f"{proxy_seconds:.0f} s, {len(sens) + 1} evaluations {eval_seconds:.0f} s):"
        )
        print(f"  {'layer':28s} {'output gain dB':>14s} {'own SQNR dB':>11s} {'recovered pts':>13s}")
        for s in sens:
            gain = 100 * (s.recovered or 0.0)
            print(f"  {s.layer:28s} {s.output_gain_db:14.3f} {s.sqnr_db:11.2f} {gain:+13.2f}")
        recovered = [s.recovered or 0.0 for s in sens]
        rho_out = spearman([s.output_gain_db for s in sens], recovered)
        rho_own = spearman([-s.sqnr_db for s in sens], recovered)
        print(
            f"Spearman rank correlation with the recovered mAP: output gain {rho_out:.2f}, "
            f"own SQNR (lower = more sensitive) {rho_own:.2f}"
        )
        k = 4  # mixed_precision_search verifies the proxy's top 4 by default
        truth = {s.layer for s in sens[:k]}
        by_out = {s.layer for s in sorted(sens, key=lambda s: -s.output_gain_db)[:k]}
        by_own = {s.layer for s in sorted(sens, key=lambda s: s.sqnr_db)[:k]}
        print(
            f"of the {k} layers recovering the most: {len(truth & by_out)} in the output proxy's top {k}, "
            f"{len(truth & by_own)} in the own-SQNR proxy's top {k}"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
