"""Accuracy and cost of each post-training algorithm, off and on, side by side in one run.

MobileNetV2 with its real ImageNet weights on scikit-image photo crops (calibration and evaluation
crops are disjoint, as in tests/quantize/test_accuracy_mobilenet.py): mean cosine of the logits and
top-1 agreement of the simulated INT8 model with FP32. The cost column is the whole quantize_model() time
divided by the plain FP32 forwards over the same calibration batches.

    python benchmarks/ptq_algorithms.py --threads 2 --calib-batches 3 --eval-batches 2
    python benchmarks/ptq_algorithms.py --model resnet18 --settings base equalization
    python benchmarks/ptq_algorithms.py --model demo_detector --max-images 100 --calibrator mse

The demo detector (CenterNet on MNIST scenes, real labels) is scored by COCO mAP on its val split.
"""

from __future__ import annotations

import argparse
import time

import torch

import fx2trt_pipeline as ftp

#: Named settings: QuantConfig keyword arguments on top of the calibrator given on the command line.
SETTINGS: dict[str, dict] = {
    "base": {},
    "equalization": {"equalization": True},
    "bias_correction": {"bias_correction": True},
    "auto_calibrator": {"calibrator": "auto_per_group"},
    "adaround": {"adaround": True},
    "eq+bc": {"equalization": True, "bias_correction": True},
    "eq+bc+auto": {"equalization": True, "bias_correction": True, "calibrator": "auto_per_group"},
    "all": {"equalization": True, "bias_correction": True, "calibrator": "auto_per_group", "adaround": True},
    "act_eq": {"equalization": "activations"},
    "act_eq+bc": {"equalization": "activations", "bias_correction": True},
    "act_eq+auto": {"equalization": "activations", "calibrator": "auto_per_group"},
    "act_eq+bc+auto": {"equalization": "activations", "bias_correction": True, "calibrator": "auto_per_group"},
    "act_eq+auto+adaround": {"equalization": "activations", "calibrator": "auto_per_group", "adaround": True},
    "act_eq+bc+auto+adaround": {
        "equalization": "activations",
        "bias_correction": True,
        "calibrator": "auto_per_group",
        "adaround": True,
    },
    "act_eq+adaround": {"equalization": "activations", "adaround": True},
    # MobileNetV2's most sensitive layer by leave-one-out (the first depthwise conv, 288 weights) kept in float.
    "act_eq+auto+float_dw1": {
        "equalization": "activations",
        "calibrator": "auto_per_group",
        "skip": ("features.1.conv.0.0",),
    },
}


def load(name: str, calib_batches: int, eval_batches: int, batch_size: int):
    from fx2trt_pipeline.models.mobilenet_v2_imagenet import mobilenet_v2_imagenet, photo_batches

    if name == "mobilenet_v2":
        model = mobilenet_v2_imagenet()
    else:  # random weights: the cosine still shows the quantization error, top-1 is less meaningful
        import torchvision

        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
    calib = photo_batches(batch_size=batch_size, num_batches=calib_batches, seed=0)
    evaluation = torch.cat(photo_batches(batch_size=16, num_batches=eval_batches, seed=1))
    return model, calib, evaluation


def plain_forwards(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model(b)
    return time.perf_counter() - start


def detector_rows(args: argparse.Namespace) -> None:
    """mAP of the demo detector per setting (drop vs FP32 in points)."""
    from fx2trt_pipeline.models.centernet import centernet_decode
    from fx2trt_pipeline.validate.accuracy import detection_evaluator
    from fx2trt_pipeline.validate.demo_detector import demo_setup

    setup = demo_setup(calib_images=args.calib_images)
    evaluate = detection_evaluator(setup.val, centernet_decode, max_images=args.max_images)
    fp32 = evaluate(setup.model)["mAP"]
    print(
        f"demo detector, {sum(len(b) for b in setup.calib_batches)} calibration scenes, calibrator "
        f"{args.calibrator}, FP32 mAP {100 * fp32:.2f}, {args.threads} threads"
    )
    print(f"{'setting':24s} {'mAP':>7s} {'drop (points)':>14s}")
    for name in args.settings:
        cfg = ftp.QuantConfig(**{"calibrator": args.calibrator, "show_progress": False, **SETTINGS[name]})
        qgm = ftp.quantize_model(
            setup.model, setup.calib_batches, example_inputs=(setup.calib_batches[0][:1],), config=cfg
        )
        metric = evaluate(qgm)["mAP"]
        print(f"{name:24s} {100 * metric:7.2f} {100 * (fp32 - metric):14.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--calibrator", default="entropy")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--max-images", type=int, default=None, help="demo detector: val scenes scored")
    parser.add_argument("--calib-images", type=int, default=None, help="demo detector: calibration scenes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "demo_detector":
        return detector_rows(args)
    model, calib, evaluation = load(args.model, args.calib_batches, args.eval_batches, args.batch_size)
    with torch.no_grad():
        reference = model(evaluation)
    plain_forwards(model, calib[:1])  # warm-up
    base = plain_forwards(model, calib)
    print(
        f"{args.model}, calibration {args.calib_batches}x{args.batch_size} crops, evaluation "
        f"{len(evaluation)} crops, calibrator {args.calibrator}, {args.threads} threads"
    )
    print(f"{'setting':24s} {'cosine':>8s} {'top-1':>7s} {'quantize_model() x plain':>24s}")
    for name in args.settings:
        kwargs = {"calibrator": args.calibrator, "show_progress": False, **SETTINGS[name]}
        start = time.perf_counter()
        qgm = ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=ftp.QuantConfig(**kwargs))
        cost = (time.perf_counter() - start) / base
        with torch.no_grad():
            out = qgm(evaluation)
        cos = torch.nn.functional.cosine_similarity(out, reference, dim=1).mean().item()
        top1 = (out.argmax(1) == reference.argmax(1)).float().mean().item()
        print(f"{name:24s} {cos:8.4f} {top1:7.3f} {cost:24.2f}", flush=True)


if __name__ == "__main__":
    main()
