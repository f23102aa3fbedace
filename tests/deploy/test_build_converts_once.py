"""One ``fx2trt build`` converts its quantized graph once: the network of the network step is the engine's, the
sidecar is written once, the Triton copy holds the same bytes."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fx2trt_pipeline.engine.artifact import EngineArtifact
from fx2trt_pipeline.network import network as network_module

from .conftest import run_cli

TINY = "tests.deploy.models:tiny_classifier"


def test_a_build_converts_its_graph_once_and_writes_the_sidecar_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversions: list[torch.fx.GraphModule] = []
    convert = network_module.network_from_graph_module

    def counting_convert(gm: torch.fx.GraphModule, *args: Any, **kwargs: Any) -> Any:
        conversions.append(gm)
        return convert(gm, *args, **kwargs)

    published: Counter[str] = Counter()
    replace = os.replace

    def counting_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        dst = Path(dst)  # every atomic write publishes its file with one os.replace
        published[f"{dst.parent.name}/{dst.name}" if dst.parent.name in ("1", "triton") else dst.name] += 1
        replace(src, dst, *args, **kwargs)

    # The steps import the converter from its module when they run, so they see the counting one.
    monkeypatch.setattr(network_module, "network_from_graph_module", counting_convert)
    monkeypatch.setattr(os, "replace", counting_replace)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32))
    output = tmp_path / "out"
    args = ["build", "--model", TINY, "--calib-data", str(calib), "--no-onnx", "--output", str(output)]
    code, _, stderr = run_cli([*args, "--mean", "0.5", "--std", "0.25"])
    assert code == 0, stderr

    quantized = [gm for gm in conversions if any("fx2trt" in str(n.target) for n in gm.graph.nodes)]
    assert len(quantized) == 1, f"the quantized graph was converted {len(quantized)} times"
    # the other conversion is the float16 reference planned beside the engine (no Q/DQ at all)
    assert len(conversions) == 2
    assert published["model.plan.json"] == 1 and published["model.plan"] == 1 and published["1/model.plan"] == 1
    sidecar = json.loads((output / "model.plan.json").read_text())
    assert sidecar["preprocess"]["mean"] == [0.5] and sidecar["build"]["network_seconds"] > 0
    engine = EngineArtifact.open(output / "model.plan")  # size and sha256 in the sidecar match the file
    assert (output / "triton" / "tiny_classifier" / "1" / "model.plan").read_bytes() == (
        output / "model.plan"
    ).read_bytes()
    assert engine.metadata["plan"]["file"] == "model.plan.layers.json"
