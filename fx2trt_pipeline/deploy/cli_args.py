"""The ``fx2trt`` command line's flags: the parser of ``build``, ``validate`` and ``plan``, and the flat config
overrides that parsed ``build`` flags stand for.

Example:
    >>> args = build_parser().parse_args(["build", "--model", "resnet18", "--input-size", "96,128"])
    >>> build_overrides(args)["input_size"], build_overrides(args)["model"]
    ((96, 128), 'resnet18')
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fx2trt_pipeline.deploy.plan_cmd import add_plan_arguments

DEFAULT_OUTPUT = Path("out/demo")


def _floats(text: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> floats (argparse type of --mean / --std)."""
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _names(text: str) -> tuple[str, ...]:
    """``"RTX 4090, L4"`` -> ``("RTX 4090", "L4")`` (argparse type of --target-gpus)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _size(text: str) -> tuple[int, int]:
    """``"224"`` or ``"224,160"`` (H,W) -> (H, W) (argparse type of --input-size)."""
    try:
        values = [int(v) for v in text.lower().replace("x", ",").split(",") if v]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W, got {text!r}") from exc
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W with positive values, got {text!r}")
    return (values[0], values[-1])


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="TOML (or YAML) file with [model], [[inputs]], [preprocess], "
        "[calibration], [evaluation], [quant], [build], [gate], [triton], [export]",
    )
    p.add_argument(
        "--model",
        help="torchvision model name (resnet18) or package.module:factory (default: the bundled demo detector); "
        "the module is imported from the current directory first, as with python -m, then from PYTHONPATH",
    )
    p.add_argument("--weights", type=Path, help="state dict loaded with torch.load(weights_only=True)")
    p.add_argument(
        "--weights-tag",
        metavar="TAG",
        help="the torchvision weights entry of --weights (e.g. IMAGENET1K_V1), whose transforms prepare the images; "
        "default: found from the file's name, sha256 or tensors, else the DEFAULT entry (the build says which)",
    )
    p.add_argument("--name", help="model name for the Triton repository and the report")


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib-data", help="calibration data: image folder, .npy/.npz, COCO set or mnist_det:<split>")
    p.add_argument("--calib-annotations", type=Path, help="COCO annotations JSON of --calib-data")
    p.add_argument(
        "--eval-data",
        help="evaluation data (same forms): class subfolders named by class index (285/), WordNet id "
        "(n02123045/) or --labels give top-1; COCO gives mAP; any folder gives agreement with FP32",
    )
    p.add_argument("--eval-annotations", type=Path, help="COCO annotations JSON of --eval-data")
    p.add_argument(
        "--labels", type=Path, help="text file, one class per line in output order: maps class folders to outputs"
    )
    p.add_argument("--task", choices=("auto", "detection", "classification", "none"), help="evaluation task")
    p.add_argument("--num-calib-samples", type=int, help="calibration items drawn (seeded; default all)")
    p.add_argument("--calib-batch-size", type=int, help="calibration batch size")
    p.add_argument("--max-eval-images", type=int, help="evaluate only the first N images")
    p.add_argument(
        "--output-index",
        metavar="N|NAME",
        help="the model output holding the class scores (index in output order, or name; default 0)",
    )


def _add_preprocess_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "preprocessing",
        "how image files become inputs; defaults: the transforms of the torchvision weights entry of --weights "
        "(see --weights-tag) when --model names a torchvision model, else a [preprocess] section",
    )
    g.add_argument(
        "--input-size",
        type=_size,
        metavar="SIZE|H,W",
        help="network input size (the crop); without --resize the weights' resize/crop ratio is kept",
    )
    g.add_argument("--resize", type=int, metavar="N", help="resize the shorter side to N, then centre-crop")
    g.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="per-channel mean in [0, 1] units")
    g.add_argument("--std", type=_floats, metavar="S[,S,S]", help="per-channel std in [0, 1] units")
    g.add_argument("--channels", type=int, choices=(1, 3), help="convert images to 1 or 3 channels")


def _add_quant_arguments(p: argparse.ArgumentParser) -> None:
    """Flags setting one QuantConfig field each; their dests are listed in config_loader.QUANT_OVERRIDES."""
    g = p.add_argument_group("quantization", "QuantConfig fields (the [quant] section of --config)")
    g.add_argument(
        "--calibrator",
        choices=("minmax", "percentile", "entropy", "mse", "auto", "auto_per_group"),
        help="activation calibrator; auto scores every one on --eval-data (top-1/mAP, or agreement with "
        "FP32 on unlabelled data) and keeps the best; auto_per_group picks one per scale group by the "
        "output error of the layers reading it (no evaluation data needed)",
    )
    g.add_argument("--percentile", type=float, help="percentile of the percentile calibrator (e.g. 99.99)")
    g.add_argument(
        "--equalization",
        nargs="?",
        const=True,
        metavar="activations",
        help="cross-layer equalization of conv/linear pairs before calibration; '--equalization activations' "
        "equalizes the activation ranges into depthwise convolutions instead (measured on calibration data)",
    )
    g.add_argument(
        "--bias-correction",
        action="store_const",
        const=True,
        help="fold the expected output shift of weight rounding into the biases",
    )
    g.add_argument(
        "--adaround",
        action="store_const",
        const=True,
        help="adaptive rounding of conv2d/linear weights, each layer fitted to its inputs in the quantized model "
        "(layer by layer on two calibration batches; about 15 s for MobileNetV2 at 224 px on 2 CPU cores)",
    )
    g.add_argument("--adaround-iterations", type=int, metavar="N", help="AdaRound steps per layer (default 200)")
    g.add_argument(
        "--adaround-batches",
        type=int,
        metavar="N",
        help="calibration batches AdaRound fits on, the first ones (default 2); more data, longer fit",
    )
    g.add_argument(
        "--float-dtype",
        choices=("float32", "float16"),
        help="dtype of everything that is not int8: dequantize outputs, layers never quantized or kept in float, "
        "their weights (default float32); the engine's inputs and outputs stay float32 (docs/float16.md)",
    )
    g.add_argument(
        "--placement",
        choices=("rules", "plan-cost"),
        help="rules (default): Q/DQ by TensorRT's rules; plan-cost: keep in float each layer whose INT8 form "
        "costs more in TensorRT's plan than its float form, verified on the rebuilt plan (docs/plan.md)",
    )
    g.add_argument(
        "--target-gpus",
        dest="placement_gpus",
        type=_names,
        help="GPUs the plan cost is estimated for, comma-separated (default: RTX 4090,L40S,L4,A10)",
    )
    g.add_argument(
        "--mixed-precision",
        type=float,
        metavar="BUDGET",
        help="keep the fewest layers in float so that INT8 keeps the FP32 model's predictions within BUDGET "
        "(drop in agreement with FP32, 0.02 = 2%% of images; in output cosine for models without class scores), "
        "chosen on half of --eval-data and reported on the other half",
    )


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    _add_model_arguments(p)
    _add_data_arguments(p)
    _add_preprocess_arguments(p)
    _add_quant_arguments(p)
    p.add_argument("--no-onnx", dest="onnx", action="store_const", const=False, help="skip the QDQ ONNX export")
    p.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT, help="output directory (default out/demo)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory not written by fx2trt")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result (or the error)")
    p.add_argument("--verbose", "-v", action="store_true", help="print the traceback of a failure")


#: ``fx2trt validate`` threshold flags (GateSpec fields).
GATE_FLAGS = ("min_cosine", "engine_tolerance", "int8_budget", "min_metric", "min_agreement", "min_fp32_cosine")
#: ``fx2trt validate`` flags that describe how a lone ONNX file or engine reads its data.
STANDALONE_FLAGS = ("config", "input_size", "resize", "mean", "std", "channels")


def _add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", type=Path, help="output directory of `fx2trt build`")
    p.add_argument("--engine", type=Path, help="engine file (default: the run's model.plan)")
    p.add_argument("--onnx", type=Path, help="QDQ ONNX file (default: the run's model.qdq.onnx)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "tensorrt", "network_executor", "onnxruntime"),
        help="engine-side backend(s) to check (auto: every one that can run here)",
    )
    p.add_argument("--data", help="evaluation data (default: the run's); image folder, .npy/.npz, COCO, mnist_det:val")
    p.add_argument("--annotations", type=Path, help="COCO annotations JSON of --data")
    p.add_argument("--labels", type=Path, help="class list (one per line, output order) for class folders")
    p.add_argument("--task", default="auto", choices=("auto", "detection", "classification", "none"))
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=50, help="evaluation batch size")
    p.add_argument("--decode", help="package.module:function decoding detector outputs (standalone mode)")
    p.add_argument("--npz-key", help="array name inside an .npz of --data")
    p.add_argument(
        "--output-index", metavar="N|NAME", help="the output holding the class scores (index or name; default 0)"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="with --onnx/--engine: a TOML/YAML file whose [preprocess], [evaluation] and [model] decode "
        "describe the data (a build output directory carries its own)",
    )
    _add_preprocess_arguments(p)
    p.add_argument("--min-cosine", type=float, help="min output cosine of each INT8 backend vs the simulated model")
    p.add_argument("--engine-tolerance", type=float, help="max |metric(engine) - metric(simulated)|, e.g. 0.002")
    p.add_argument("--int8-budget", type=float, help="max metric(FP32) - metric(simulated), e.g. 0.003")
    p.add_argument("--min-metric", type=float, help="min task metric (mAP / top-1, in [0, 1]) of the engine side")
    p.add_argument(
        "--min-agreement", type=float, help="min share of FP32's top-1 predictions the engine side keeps, e.g. 0.98"
    )
    p.add_argument("--min-fp32-cosine", type=float, help="min output cosine of the engine side vs FP32, e.g. 0.99")
    p.add_argument("--json", type=Path, help="also write the verdict and all numbers as JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="print the traceback of a failure")


def build_parser() -> argparse.ArgumentParser:
    """The ``fx2trt`` parser with its ``build`` and ``validate`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="fx2trt", description="PyTorch -> torch.fx INT8 -> TensorRT engine, with proof of accuracy."
    )
    sub = parser.add_subparsers(dest="command", metavar="{build,validate,plan}")
    add_build_arguments(
        sub.add_parser(
            "build",
            help="quantize, build the engine, validate, report",
            description="Quantize a model, build its TensorRT engine, validate it "
            "and write the artifacts. No arguments: the bundled demo detector.",
        )
    )
    _add_validate_arguments(
        sub.add_parser(
            "validate",
            help="check built artifacts against data and thresholds",
            description="Exit code 0 pass, 1 gate failed, 2 bad input, 3 the requested backend cannot run here.",
        )
    )
    add_plan_arguments(
        sub.add_parser(
            "plan",
            help="print TensorRT's plan of a build (engine layers, dtypes, bytes, the precision audit)",
            description="Exit code 0, or 1 when the build's precision audit failed.",
        )
    )
    return parser


#: ``fx2trt build`` flags that override one config value each: flag dest -> RunConfig.from_sources key.
BUILD_OVERRIDES = (
    "model",
    "weights",
    "weights_tag",
    "name",
    "calib_data",
    "calib_annotations",
    "eval_data",
    "eval_annotations",
    "task",
    "num_calib_samples",
    "calib_batch_size",
    "max_eval_images",
    "output_index",
    "onnx",
    "labels",
    "input_size",
    "resize",
    "mean",
    "std",
    "channels",
)


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flat config overrides of parsed ``fx2trt build`` arguments (unset flags are left out)."""
    from fx2trt_pipeline.deploy.config_loader import QUANT_OVERRIDES

    keys = (*BUILD_OVERRIDES, *QUANT_OVERRIDES)
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


__all__ = [
    "BUILD_OVERRIDES",
    "DEFAULT_OUTPUT",
    "GATE_FLAGS",
    "STANDALONE_FLAGS",
    "add_build_arguments",
    "build_overrides",
    "build_parser",
]
