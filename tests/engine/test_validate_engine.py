"""``fx2trt validate --engine`` on engine fakes: static batches, warm-up before timing, torchrun ranks.

The engine file and sidecar are real (built here with TensorRT-RTX); what runs them is a fake runtime
whose context computes on the bound CPU memory (tests/engine/fakes.py), so whole evaluations run on a
machine without a GPU.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fx2trt_pipeline.calib_data.preprocess import PreprocessSpec
from fx2trt_pipeline.deploy import validate_cmd
from fx2trt_pipeline.deploy.config import DataSpec
from fx2trt_pipeline.deploy.torchrun import torchrun_group
from fx2trt_pipeline.deploy.validate_cmd import ArtifactCheck, validate_artifact
from fx2trt_pipeline.engine.engine_builder import engine_bytes_from_network, network_io_metadata, save_engine
from fx2trt_pipeline.engine.runtime import Engine
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.validate.backends import ChunkedRunner
from fx2trt_pipeline.validate.evaluation import EvalData, score_runner
from fx2trt_pipeline.validate.runners import TensorRTEngineRunner, TorchRunner
from tests.engine.fakes import FakeContext, FakeCudaEngine, FakeGpu

#: Grey level of each class's images; the fake engine classifies by the nearest one.
LEVELS = (40, 128, 220)


def _classify(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3) logits: minus the distance of each image's mean to each level."""
    mean = x.mean(dim=(1, 2, 3))[:, None]
    return -(mean - torch.tensor(LEVELS, dtype=torch.float32) / 255).abs()


def _image_folder(root: Path, counts: tuple[int, ...]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, count in enumerate(counts):
        (root / str(label)).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(LEVELS[label] + rng.integers(-20, 21, size=(12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / str(label) / f"{i}.png")
    return root


def test_a_static_batch_engine_validates_a_set_that_is_not_a_multiple_of_its_batch(
    tmp_path: Path, qdq_network: Any, fake_gpu: FakeGpu
) -> None:
    path, context = _static_engine(tmp_path, qdq_network, fake_gpu)
    folder = _image_folder(tmp_path / "images", (4, 3, 3))  # 10 items: chunks of 4, 4 and a padded 2
    lines: list[str] = []
    stream = type("Lines", (), {"write": lambda self, s: lines.append(s), "flush": lambda self: None})()
    check = ArtifactCheck(
        DataSpec(str(folder)), engine=path, min_metric=0.99, preprocess=PreprocessSpec((12, 12), channels=3)
    )
    assert validate_artifact(check, stream) == 0, "".join(lines)
    assert "PASS top1: tensorrt 1.0000 >= minimum 0.9900" in "".join(lines)
    assert set(context.executed) == {(4, 3, 12, 12)}  # the engine only ever saw its batch


def test_padding_is_dropped_only_where_the_outputs_have_the_batch() -> None:
    sums = ChunkedRunner(TorchRunner(torch.nn.Identity(), ["x"], ["y"]), 4, static_batch=True)
    x = torch.arange(10.0)[:, None]
    assert torch.equal(sums.run({"x": x})["y"], x) and sums.chunk_sizes([10, 3]) == [4]
    total = ChunkedRunner(TorchRunner(_Total(), ["x"], ["y"]), 4, static_batch=True)
    with pytest.raises(ConfigError, match=r"output 'y' has shape \(\), not a leading batch of 4"):
        total.run({"x": x})
    assert ChunkedRunner.for_inputs(sums.runner, [InputSpec("x", (4, 1))]).static_batch
    dynamic = InputSpec.dynamic_batch("x", (1,), 1, 8, 32)
    assert ChunkedRunner.for_inputs(sums.runner, [dynamic]).chunk_sizes([50, 18]) == [18, 32]


class _Total(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()


def test_every_batch_shape_is_compiled_before_the_timed_evaluation(fake_cuda: dict[str, Any]) -> None:
    context = FakeContext((1, 2), fake_cuda["log"], compute=lambda x: x[:, :2])
    engine = Engine(FakeCudaEngine(context))  # profile 1..8, opt 4
    engine.device = torch.device("cpu")
    runner = ChunkedRunner(TensorRTEngineRunner(engine), 8)
    compiled: list[int] = []  # how many enqueues had run when each warm-up ended
    warm_up = engine.warm_up

    def counting_warm_up(batch_sizes: Any = ()) -> float:
        seconds = warm_up(batch_sizes)
        compiled.append(len(context.executed))
        return seconds

    engine.warm_up = counting_warm_up  # type: ignore[method-assign]
    x = torch.randn(23, 3)
    batches = [(x[i : i + 10], torch.zeros(len(x[i : i + 10]), dtype=torch.long)) for i in range(0, 23, 10)]
    score_runner(runner, EvalData("classification", batches=batches, input_name="x"))
    warmed, timed = context.executed[: compiled[-1]], context.executed[compiled[-1] :]
    assert set(timed) == {(8, 3), (2, 3), (3, 3)}  # batches of 10, 10, 3 in chunks of 8
    assert set(timed) <= set(warmed), f"compiled while timed: {set(timed) - set(warmed)}"


# -- torchrun ----------------------------------------------------------------------------------------------


def _static_engine(tmp_path: Path, qdq_network: Any, fake_gpu: FakeGpu) -> tuple[Path, FakeContext]:
    """A real static batch-4 engine file, run by a fake context that classifies by grey level."""
    spec = InputSpec("x", (4, 3, 12, 12))
    builder, net, _keep = qdq_network(4)
    data = engine_bytes_from_network(builder, net, [spec])
    path = save_engine(data, tmp_path / "static4.plan", network_io_metadata(net, [spec])).engine_path
    context = FakeContext((4, 3), [], compute=_classify)
    fake_gpu.runtime.engine = FakeCudaEngine(context, input_shape=(4, 3, 12, 12), output_shape=(4, 3))
    fake_gpu.run_on_cpu()
    return path, context


def _rank(rank: int, world: int, port: int, check: ArtifactCheck, context: FakeContext, out: str) -> None:
    """One torchrun rank (forked: the test's fakes come along) running ``fx2trt validate --engine``."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    devices: list[int] = []
    torch.cuda.device_count = lambda: world  # a node with `world` GPUs, as far as the device choice goes
    torch.cuda.set_device = devices.append
    seen: list[int] = []  # rows of data the engine classified while scoring (the warm-up's rows are zeros)
    scoring: list[bool] = []
    score_runner = validate_cmd.score_runner

    def scored(runner: Any, data: EvalData) -> Any:
        scoring.append(True)
        try:
            return score_runner(runner, data)
        finally:
            scoring.pop()

    def counting(x: torch.Tensor) -> torch.Tensor:
        if scoring:
            seen.append(int((x.flatten(1).abs().sum(1) > 0).sum()))
        return _classify(x)

    validate_cmd.score_runner = scored  # this forked process only
    context.compute = counting
    lines: list[str] = []
    stream = type("Lines", (), {"write": lambda self, s: lines.append(s), "flush": lambda self: None})()
    code = validate_artifact(check, stream)
    result = {"code": code, "devices": devices, "rows": sum(seen), "lines": "".join(lines)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def test_torchrun_ranks_take_their_gpu_and_score_their_shard(
    tmp_path: Path, qdq_network: Any, fake_gpu: FakeGpu
) -> None:
    import torch.multiprocessing as mp

    path, context = _static_engine(tmp_path, qdq_network, fake_gpu)
    folder = _image_folder(tmp_path / "images", (4, 3, 3))
    check = ArtifactCheck(
        DataSpec(str(folder), batch_size=4),
        engine=path,
        min_metric=0.99,
        preprocess=PreprocessSpec((12, 12), channels=3),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks start with this process's imports and fakes (spawn would import torch twice more)
    mp.start_processes(_rank, args=(2, port, check, context, str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["code"] for r in ranks] == [0, 0] and [r["devices"] for r in ranks] == [[0], [1]]  # cuda:LOCAL_RANK
    # 5 items each, in chunks of 4 and 1 padded to 4: each engine saw only its rank's shard (all 10: 4 + 4 + 2 + 2)
    assert [r["rows"] for r in ranks] == [8, 8], ranks
    assert "PASS top1: tensorrt 1.0000" in ranks[0]["lines"] and ranks[1]["lines"] == ""  # rank 0 speaks


def test_torchrun_without_enough_gpus_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"rank 3 has LOCAL_RANK 3 but this machine shows 2 GPU"):
        with torchrun_group():
            pass
