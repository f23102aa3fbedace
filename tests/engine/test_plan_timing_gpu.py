"""For a user with a GPU TensorRT-RTX supports: time the FP16, all-INT8 and plan-cost engines of MobileNetV2 and
print the measurement beside the estimate from the plan. Nothing is asserted about the times (no timing thresholds
in tests); each engine must run and agree with its own simulated model, so the comparison times working engines.

    pytest -m gpu tests/engine/test_plan_timing_gpu.py -s
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import fx2trt_pipeline as ftp
from fx2trt_pipeline import trt_api
from fx2trt_pipeline.deploy.plan_step import BuildContext, float_reference, place_by_plan_cost
from fx2trt_pipeline.engine.engine_plan import EnginePlan, plan_path
from fx2trt_pipeline.plan.cost import estimates
from fx2trt_pipeline.plan.gpus import GPUS
from fx2trt_pipeline.quantize.state import get_quant_state
from fx2trt_pipeline.validate.compare import cosine_similarity
from tests.engine.gpu import engine_or_skip, skip_unless_engines_run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not trt_api.is_available(), reason="no TensorRT library installed")]
BATCH, SIZE, RUNS = 8, 224, 50


def _time(engine, x: torch.Tensor) -> float:
    engine.warm_up(batch_sizes=[BATCH])
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(RUNS):
        engine(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / RUNS / BATCH  # seconds per item


def test_fp16_int8_and_chosen_engines_timed_beside_their_estimates(tmp_path: Path) -> None:
    skip_unless_engines_run()
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    cfg = ftp.QuantConfig(show_progress=False, float_dtype="float16")
    prepared = ftp.prepare(model, (x,), cfg)
    ftp.calibrate(prepared, [x])
    int8 = ftp.convert(prepared)
    spec = [ftp.InputSpec("x", tuple(x.shape))]
    nodes = list(get_quant_state(int8).placement.weights)
    chosen, _, record, _ = place_by_plan_cost(prepared, int8, cfg, BuildContext(spec), nodes)
    name = torch.cuda.get_device_name()
    gpu = next((g for g in GPUS if g.lower().replace(" ", "") in name.lower().replace(" ", "")), None)
    for label, qgm in {"fp16": float_reference(prepared, cfg), "int8": int8, "chosen": chosen}.items():
        art = ftp.build_engine(qgm, spec, tmp_path / f"{label}.plan")
        engine = engine_or_skip(art.engine_path)
        xc = x.cuda()
        out = next(iter(engine(xc).values())).float().cpu()
        with torch.no_grad():
            simulated = qgm(x).float()
        assert cosine_similarity(out, simulated) >= 0.99, label
        measured = _time(engine, xc)
        plan = EnginePlan.read(plan_path(art.engine_path))
        estimate = estimates(plan, [gpu])[gpu] if gpu else float("nan")
        print(
            f"{label:>6}: measured {measured * 1e6:.1f} µs/item on {name}; estimate ({gpu or 'GPU not in the table'}) "
            f"{estimate * 1e6:.1f} µs/item; {plan.summary()['engine_layers']} engine layers"
        )
    print(f"plan-cost chose: {record['chosen']} ({len(record['keep_int8'])} layers INT8)")
