"""Evaluation at scale: 2 gloo ranks each score half the data, predictions are merged before scoring, and
COCO mAP / top-1 / agreement equal what one process computes on all of it (what ``fx2trt validate`` does
under ``torchrun``)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fx2trt_pipeline.validate.backends import Availability, select_backends
from fx2trt_pipeline.validate.evaluation import EvalData, Shard, evaluate_backends, score_runner
from fx2trt_pipeline.validate.gate import GateSpec
from fx2trt_pipeline.validate.runners import TorchRunner

WORLD = 2
DET_IMAGES = 30


def _classifier_data(shard: Shard) -> tuple[dict[str, TorchRunner], EvalData]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(21, 6, generator=gen)
    y = torch.randint(0, 4, (21,), generator=gen)
    torch.manual_seed(0)
    fp32 = torch.nn.Linear(6, 4).eval()
    int8 = torch.nn.Linear(6, 4).eval()
    with torch.no_grad():
        int8.weight.copy_(fp32.weight + 1.0 * torch.randn_like(fp32.weight))
        int8.bias.copy_(fp32.bias)
    runners = {
        "fp32": TorchRunner(fp32, ["x"], ["logits"], name="fp32"),
        "simulated": TorchRunner(int8, ["x"], ["logits"], name="simulated"),
        "network_executor": TorchRunner(int8, ["x"], ["logits"], name="network_executor"),
    }
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 21, 4)]  # 6 batches, the last one short
    return runners, EvalData("classification", batches=batches, input_name="x", shard=shard)


def _detection_metrics(shard: Shard) -> dict[str, float]:
    from fx2trt_pipeline.calib_data import load_mnist_detection
    from fx2trt_pipeline.models import load_demo_detector
    from fx2trt_pipeline.models.centernet import centernet_decode

    runner = TorchRunner(load_demo_detector(), ["images"], ["hm", "wh", "reg"])
    data = EvalData(
        "detection",
        dataset=load_mnist_detection("val"),
        decode_fn=centernet_decode,
        max_images=DET_IMAGES,
        batch_size=7,
        shard=shard,
    )
    return score_runner(runner, data).metrics


def _results(shard: Shard) -> dict[str, Any]:
    runners, data = _classifier_data(shard)
    plan = select_backends(Availability({"network_executor": None}))
    evaluation = evaluate_backends(runners, data, plan, GateSpec(min_cosine=None))
    rows = {r.key: {"metrics": r.metrics, "cosine_vs_fp32": r.cosine_vs_fp32} for r in evaluation.rows}
    return {"classification": rows, "num_samples": evaluation.num_samples, "detection": _detection_metrics(shard)}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120)
    )
    try:
        shard = Shard.current()
        local = len(EvalData("detection", dataset=list(range(DET_IMAGES)), decode_fn=len, shard=shard).indices())
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({**_results(shard), "local_images": local}))
    finally:
        dist.barrier()  # nobody tears sockets down while a peer still flushes the last collective
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_score_the_union_like_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    single = json.loads(json.dumps(_results(Shard())))
    assert [r["local_images"] for r in ranks] == [15, 15]  # each rank ran half the images
    for rank in ranks:
        assert rank["detection"] == single["detection"]  # COCO mAP once, on the merged predictions
        assert rank["detection"]["num_images"] == DET_IMAGES and 0.3 < rank["detection"]["mAP"] <= 1.0
        assert rank["num_samples"] == single["num_samples"] == 21
        for key, row in single["classification"].items():
            assert rank["classification"][key]["metrics"] == row["metrics"], key
            if row["cosine_vs_fp32"] is not None:
                assert rank["classification"][key]["cosine_vs_fp32"] == pytest.approx(row["cosine_vs_fp32"], abs=1e-12)
    sim = single["classification"]["simulated"]["metrics"]
    assert 0.0 < sim["agree_top1"] < 1.0 and "top1" in sim  # a perturbed model: agreement is informative


def test_one_process_is_one_shard() -> None:
    assert Shard.current() == Shard(0, 1) and Shard().gather({"a": 1}) == [{"a": 1}]
