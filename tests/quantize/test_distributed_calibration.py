"""Multi-process calibration: 2 gloo ranks, each with half the batches, give exactly the scales of one
process calibrating on all of them, for every calibrator; a failing rank makes every rank raise."""

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
from torch import nn

import fx2trt_pipeline as ftp
from fx2trt_pipeline.errors import CalibrationError, ConfigError

# Imported from the module: `fx2trt_pipeline.network` is also a subpackage, which can shadow ftp.convert.
from fx2trt_pipeline.quantize.api import calibrate, convert, prepare
from fx2trt_pipeline.quantize.config import CALIBRATORS, PERCENTILES
from fx2trt_pipeline.quantize.distributed_calibration import calibrate_distributed, shard_for_rank

WORLD = 2
N_BATCHES = 6


class TinyNet(nn.Module):
    """Conv/BN/ReLU, a residual add, max-pool, concat and a linear head: every kind of scale group."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(self.conv1(x)))
        b = torch.relu(self.conv2(a) + a)
        c = torch.cat([self.pool(b), self.pool(self.conv3(b))], 1)
        return self.fc(torch.flatten(self.avg(c), 1))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics so folding matters
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    # Different ranges per batch, so the shards' histograms have different bin widths before merging.
    return [torch.randn(4, 3, 16, 16, generator=gen) * (1.0 + 3.0 * i) for i in range(N_BATCHES)]


def _configs() -> dict[str, ftp.QuantConfig]:
    out = {}
    for calibrator in CALIBRATORS:
        for percentile in PERCENTILES if calibrator == "percentile" else (99.99,):
            out[f"{calibrator}-{percentile}"] = ftp.QuantConfig(
                calibrator=calibrator, percentile=percentile, show_progress=False
            )
    return out


def _scales(prepared: torch.fx.GraphModule) -> dict[str, Any]:
    """amax per group for every calibrator, plus the merged statistics (to compare exactly)."""
    result: dict[str, Any] = {}
    for name, cfg in _configs().items():
        qgm = convert(prepared, cfg)
        result[name] = ftp.get_quant_state(qgm).amax
    state = ftp.get_quant_state(convert(prepared))
    result["stats"] = {k: s.to_dict() for k, s in (state.stats or {}).items()}
    return result


def _biases(prepared: torch.fx.GraphModule) -> dict[str, list[float]]:
    """The corrected biases bias correction derives from the (merged) per-channel input means."""
    return ftp.get_quant_state(convert(prepared)).edits.biases


def _worker(rank: int, init_file: str, out_dir: str, mode: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # this child only: the ranks talk over loopback
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        batches = _batches()
        cfg = ftp.QuantConfig(show_progress=False, bias_correction=mode == "bias")
        prepared = prepare(_model(), (batches[0],), cfg)
        shard = shard_for_rank(batches)
        if mode == "nan" and rank == 1:
            shard = [shard[0].clone().fill_(float("nan"))]
        if mode == "twice":  # two calls, with the data split across them, must still be exact
            calibrate_distributed(prepared, shard[:1])
            calibrate_distributed(prepared, shard[1:])
        else:
            try:
                calibrate_distributed(prepared, shard)
            except CalibrationError as exc:
                Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"error": str(exc).splitlines()[0]}))
                return
        result = _biases(prepared) if mode == "bias" else _scales(prepared)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        # Every rank reaches this point before any tears its sockets down: a rank that exits while a peer
        # still flushes the last collective makes gloo abort that peer ("terminate called ...").
        dist.barrier()
        dist.destroy_process_group()


def _spawn(tmp_path: Path, mode: str) -> list[dict[str, Any]]:
    out_dir = tmp_path / mode
    out_dir.mkdir()
    mp.spawn(_worker, args=(str(tmp_path / f"init-{mode}"), str(out_dir), mode), nprocs=WORLD, join=True)
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_process() -> dict[str, Any]:
    batches = _batches()
    prepared = prepare(_model(), (batches[0],), ftp.QuantConfig(show_progress=False))
    calibrate(prepared, batches)
    return json.loads(json.dumps(_scales(prepared)))  # same float round trip as the workers' files


@pytest.mark.slow
def test_two_ranks_match_single_process_for_every_calibrator(tmp_path: Path, single_process: dict) -> None:
    ranks = _spawn(tmp_path, "halves")
    assert ranks[0] == ranks[1], "ranks ended with different statistics or scales"
    assert set(single_process) == set(_configs()) | {"stats"}
    for name in _configs():
        assert ranks[0][name] == single_process[name], f"calibrator {name}: scales differ from one process"
    assert ranks[0]["stats"] == single_process["stats"]
    # Not vacuous: one shard alone gives other scales than the union.
    batches = _batches()
    alone = prepare(_model(), (batches[0],), ftp.QuantConfig(show_progress=False))
    calibrate(alone, shard_for_rank(batches, 0, WORLD))
    assert json.loads(json.dumps(_scales(alone)))["entropy-99.99"] != single_process["entropy-99.99"]


@pytest.mark.slow
def test_repeated_calls_stay_exact(tmp_path: Path, single_process: dict) -> None:
    ranks = _spawn(tmp_path, "twice")
    assert ranks[0] == ranks[1] == single_process


@pytest.mark.slow
def test_a_failing_rank_makes_every_rank_raise(tmp_path: Path) -> None:
    ranks = _spawn(tmp_path, "nan")
    for result in ranks:
        assert "error" in result, result
        assert "rank 1" in result["error"] and "NaN" in result["error"]


@pytest.mark.slow
def test_bias_correction_means_merge_across_ranks(tmp_path: Path) -> None:
    ranks = _spawn(tmp_path, "bias")
    assert ranks[0] == ranks[1], "ranks derived different corrected biases"
    batches = _batches()
    whole = prepare(_model(), (batches[0],), ftp.QuantConfig(show_progress=False, bias_correction=True))
    calibrate(whole, batches)
    alone = prepare(_model(), (batches[0],), ftp.QuantConfig(show_progress=False, bias_correction=True))
    calibrate(alone, shard_for_rank(batches, 0, WORLD))
    one, shard0 = _biases(whole), _biases(alone)
    assert set(ranks[0]) == set(one) and len(one) == 4
    for layer, bias in one.items():  # float64 sums in another order: equal to float32 rounding
        assert torch.allclose(torch.tensor(ranks[0][layer]), torch.tensor(bias), rtol=1e-6, atol=1e-7), layer
    assert any(not torch.allclose(torch.tensor(shard0[k]), torch.tensor(one[k])) for k in one)  # not vacuous


def test_refuses_settings_that_keep_samples_on_one_process() -> None:
    x = torch.randn(2, 3, 16, 16)
    for cfg in (ftp.QuantConfig(adaround=True), ftp.QuantConfig(calibrator="auto_per_group")):
        prepared = prepare(_model(), (x,), cfg)
        with pytest.raises(ConfigError, match="one process"):
            calibrate_distributed(prepared, [x])


def test_needs_an_initialised_process_group() -> None:
    x = torch.randn(2, 3, 16, 16)
    prepared = prepare(_model(), (x,), ftp.QuantConfig(show_progress=False))
    with pytest.raises(CalibrationError, match="init_process_group"):
        calibrate_distributed(prepared, [x])


def test_rejects_an_unprepared_module() -> None:
    with pytest.raises(ConfigError, match="prepare"):
        calibrate_distributed(torch.fx.symbolic_trace(_model()), [])


def test_shard_for_rank_covers_every_item_once() -> None:
    items = list(range(11))
    shards = [shard_for_rank(items, r, 3) for r in range(3)]
    assert sorted(x for s in shards for x in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ConfigError):
        shard_for_rank(items, 3, 3)
    if not dist.is_initialized():
        with pytest.raises(CalibrationError, match="rank and world_size"):
            shard_for_rank(items)
