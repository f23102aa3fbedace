"""Converter coverage over the torchvision model zoo: which models go end to end, and how well.

Each model runs in its own subprocess with a timeout (one failure or hang does not stop the table):
random weights with real-ish BatchNorm statistics (a few train-mode forwards on random data), quantize
(mse calibrator, ``--calib-batches`` batches of ``--batch``) -> convert -> build a dynamic-batch engine
with TensorRT-RTX -> network executor vs simulated INT8 (cosine, and tie-aware parity quantize layer by
quantize layer: ``validate.tie_parity``) -> QDQ ONNX in ONNX Runtime vs
simulated -> simulated INT8 vs FP32 (cosine), on a held-out random batch.

    python benchmarks/coverage.py                       # every model, 96 px (vit/swin at their own sizes)
    python benchmarks/coverage.py --models vit_b_16 fcn_resnet50 --timeout 600
    python benchmarks/coverage.py --models onnx2torch_yolo onnx2torch_dbnet torch_ao_swin_t   # foreign graphs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CLASSIFICATION = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "squeezenet1_0",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mnasnet0_5",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
]
SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
#: Models that reach torch.fx by other roads: exported to ONNX and converted back by onnx2torch
#: (``fx2trt_pipeline.models.onnx_heads``: a YOLOv8-style detector, a DBNet-style text detector; dynamic batch),
#: and swin_t as torch.ao's reference graph (front_ends.py's seed flow; its wrapped Swin helpers converted as
#: they are, their insides float as torch.ao left them; no ONNX column: qint8 tensors have no ONNX translation).
FOREIGN = ["onnx2torch_yolo", "onnx2torch_dbnet", "torch_ao_swin_t"]
#: Input sizes the architectures need (vit: image_size is a constructor argument; swin's windows need 224
#: down to 7x7 at the last stage; inception's stem needs 75+).
SIZES = {"vit_b_16": 64, "swin_t": 224, "inception_v3": 96, "onnx2torch_yolo": 64, "onnx2torch_dbnet": 64}
SIZES["torch_ao_swin_t"] = SIZES["swin_t"]


def make_model(name: str):
    """A torchvision model with random weights (no downloads) in eval mode with warmed-up BN statistics."""
    import torch
    import torchvision

    if name in SEGMENTATION:
        model = getattr(torchvision.models.segmentation, name)(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False
        )
    elif name.startswith("onnx2torch_"):
        from fx2trt_pipeline.models import onnx_heads

        model = {"yolo": onnx_heads.TinyYolo, "dbnet": onnx_heads.TinyDBNet}[name.split("_", 1)[1]]()
    elif name.startswith("torch_ao_"):
        return make_model(name.split("_", 2)[2])
    elif name == "vit_b_16":
        model = torchvision.models.vit_b_16(weights=None, image_size=SIZES[name])
    elif name in ("googlenet", "inception_v3"):
        model = getattr(torchvision.models, name)(weights=None, aux_logits=False, init_weights=True)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(1)
    size = SIZES.get(name, 96)
    model.train()
    with torch.no_grad():  # real-ish BN statistics: running mean/var from data instead of 0/1
        for _ in range(3):
            model(torch.randn(4, 3, size, size, generator=gen))
    return model.eval(), size


def _cosine(a, b) -> float:
    from fx2trt_pipeline.validate.compare import cosine_similarity

    return min(cosine_similarity(x, y) for x, y in zip(a, b))


def quantized(name: str, model, calib: list):
    """The simulated INT8 graph: ours of the model or of its onnx2torch round trip, or torch.ao's reference graph."""
    import fx2trt_pipeline as ftp

    if name.startswith("torch_ao_"):
        from front_ends import torch_ao_reference

        return torch_ao_reference(model, calib[0])
    if name.startswith("onnx2torch_"):
        from fx2trt_pipeline.models.onnx_heads import onnx2torch_roundtrip

        model = onnx2torch_roundtrip(model, calib[0][:1])
    return ftp.quantize_model(model, calib, example_inputs=(calib[0],), config=ftp.QuantConfig(show_progress=False))


def run_one(name: str, batch: int, calib_batches: int) -> dict:
    """The whole chain for one model; returns the table row (raises on the first failing step)."""
    import tempfile
    from pathlib import Path

    import torch

    import fx2trt_pipeline as ftp
    from fx2trt_pipeline.capture import flatten_outputs
    from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network
    from fx2trt_pipeline.executor.network_executor import NetworkExecutor
    from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
    from fx2trt_pipeline.network.network import network_from_graph_module
    from fx2trt_pipeline.validate.runners import OnnxRuntimeRunner
    from fx2trt_pipeline.validate.tie_parity import TieTolerance, tie_parity
    from fx2trt_pipeline.validate.tie_regions import ExecutorRegions

    torch.manual_seed(0)
    row: dict = {"model": name, "step": "model"}
    model, size = make_model(name)
    gen = torch.Generator().manual_seed(2)
    calib = [torch.randn(batch, 3, size, size, generator=gen) for _ in range(calib_batches)]
    x = torch.randn(batch, 3, size, size, generator=gen)
    start = time.perf_counter()
    row["step"] = "quantize"
    qgm = quantized(name, model, calib)
    row["step"] = "convert"
    spec = ftp.InputSpec.dynamic_batch("x", (3, size, size), 1, batch, 2 * batch)
    builder, network, _ctx = network_from_graph_module(qgm, [spec])
    row["layers"] = network.num_layers
    row["step"] = "build"
    row["engine_mb"] = round(len(engine_bytes_from_network(builder, network, [spec])) / 1e6, 2)
    row["step"] = "executor"
    with torch.no_grad():
        sim, fp32 = flatten_outputs(qgm(x)), flatten_outputs(model(x))
    executor = NetworkExecutor(network)
    outs, _ = executor.run({"x": x})
    row["executor_vs_sim"] = _cosine(sim, list(outs.values()))
    row["step"] = "tie parity"
    report = tie_parity(qgm, ExecutorRegions(executor), (x,), TieTolerance(noise_flips=0))
    row["tie_parity"] = "pass" if report else "FAIL"
    row["tie_flips"] = report.tie_flips
    row["step"] = "onnx"
    if not name.startswith("torch_ao_"):
        with tempfile.TemporaryDirectory() as tmp:
            path = export_qdq_onnx(qgm, (x,), Path(tmp) / f"{name}.onnx", input_names=["x"])
            row["ort_vs_sim"] = _cosine(sim, list(OnnxRuntimeRunner(path).run({"x": x}).values()))
    row["int8_vs_fp32"] = _cosine(fp32, sim)
    row["seconds"] = round(time.perf_counter() - start, 1)
    row["step"] = "done"
    return row


def _child(name: str, batch: int, calib_batches: int) -> None:
    import warnings

    warnings.simplefilter("ignore")
    try:
        row = run_one(name, batch, calib_batches)
    except Exception as exc:  # the table reports the failing step and the first line of the error
        row = {"model": name, "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}"}
    print("ROW " + json.dumps(row))


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=CLASSIFICATION + SEGMENTATION + FOREIGN)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--calib-batches", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        _child(args.child, args.batch, args.calib_batches)
        return
    print(
        "| model | layers | engine MB | executor vs simulated | tie-aware parity (tie flips) | ORT vs simulated | "
        "INT8 vs FP32 | s | result |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    passed = 0
    for name in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--batch",
            str(args.batch),
            "--calib-batches",
            str(args.calib_batches),
            "--threads",
            str(args.threads),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout).stdout
            rows = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
            row = rows[0] if rows else {"model": name, "error": "child process died (see stderr)"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "error": f"timeout after {args.timeout:.0f} s"}
        # The parity criterion is tie-aware (validate/tie_parity.py): end-to-end cosine is shown, not gated,
        # since float layers (softmax, LayerNorm, GELU) may put a value on the other side of a rounding tie.
        ok = "error" not in row and row["tie_parity"] == "pass" and row["int8_vs_fp32"] >= 0.99
        passed += ok
        result = "pass" if ok else row.get("error", "below threshold")
        print(
            f"| {name} | {row.get('layers', '-')} | {_fmt(row.get('engine_mb'), '.1f')} | "
            f"{_fmt(row.get('executor_vs_sim'), '.6f')} | {row.get('tie_parity', '-')} ({row.get('tie_flips', '-')}) | "
            f"{_fmt(row.get('ort_vs_sim'), '.6f')} | "
            f"{_fmt(row.get('int8_vs_fp32'), '.4f')} | {_fmt(row.get('seconds'), '.0f')} | {result} |",
            flush=True,
        )
    print(
        f"\n{passed}/{len(args.models)} models end to end (tie-aware parity of the executor with the simulated "
        "model, INT8 vs FP32 >= 0.99)"
    )


if __name__ == "__main__":
    main()
