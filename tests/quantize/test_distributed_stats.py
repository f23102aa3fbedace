"""all_reduce_stats over two real gloo processes equals one process that saw all the data."""

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fx2trt_pipeline.errors import CalibrationError
from fx2trt_pipeline.quantize.distributed import all_reduce_stats
from fx2trt_pipeline.quantize.statistics import TensorStats

WORLD = 2


def full_data() -> dict[str, tuple[int, list[torch.Tensor]]]:
    """Per observer: (num_bins, per-rank data); an empty list means the rank saw nothing."""
    g = torch.Generator().manual_seed(7)
    return {
        # The ranks see very different ranges, so their bin widths differ by ~2**10.
        "conv1": (2048, [torch.randn(3000, generator=g), torch.randn(2000, generator=g) * 1000.0]),
        "small": (64, [torch.rand(500, generator=g) * 3.0, -torch.rand(700, generator=g)]),
        "only_rank0": (2048, [torch.randn(300, generator=g) * 0.01, torch.empty(0)]),
        "never": (2048, [torch.empty(0), torch.empty(0)]),
    }


def shard_stats(rank: int) -> dict[str, TensorStats]:
    out = {}
    for name, (bins, shards) in full_data().items():
        out[name] = TensorStats(bins)
        for piece in shards[rank].split(256):  # several batches per rank
            out[name].update(piece, name)
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        stats = shard_stats(rank)
        before = {k: v.to_dict() for k, v in stats.items()}
        merged = all_reduce_stats(stats)
        result = {
            "merged": {k: v.to_dict() for k, v in merged.items()},
            "inputs_unchanged": before == {k: v.to_dict() for k, v in stats.items()},
        }
        if rank == 1:
            stats["extra_on_rank1"] = TensorStats()
        try:
            all_reduce_stats(stats)
            result["mismatch_error"] = ""
        except CalibrationError as exc:
            result["mismatch_error"] = str(exc)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_ranks_merge_to_the_single_process_state(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

    expected = {}
    for name, (bins, shards) in full_data().items():
        s = TensorStats(bins)
        s.update(torch.cat(shards), name)
        expected[name] = s
    for rank, res in enumerate(results):
        merged = {k: TensorStats.from_dict(v) for k, v in res["merged"].items()}
        assert merged == expected, f"rank {rank}"
        assert res["inputs_unchanged"]
        assert "rank 1 has extra ['extra_on_rank1']" in res["mismatch_error"]
    assert results[0]["merged"] == results[1]["merged"]
    # The ranks really did start from different widths.
    assert shard_stats(0)["conv1"].log2_width < shard_stats(1)["conv1"].log2_width - 8
    assert expected["conv1"].count == 5000 and expected["never"].count == 0


def test_needs_an_initialised_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(CalibrationError, match="init_process_group"):
        all_reduce_stats({"x": TensorStats()})
