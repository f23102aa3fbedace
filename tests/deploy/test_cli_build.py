"""The CLI's default run end to end: every artifact exists, parses and agrees with the others."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import markupsafe
import pytest

from fx2trt_pipeline.engine.artifact import EngineArtifact, load_engine_bytes
from fx2trt_pipeline.engine.compatibility import deployment_target
from fx2trt_pipeline.quantize.state import load_quant_state

from .conftest import EVAL_IMAGES, BuildRun
from .pbtxt import parse_pbtxt

STEPS = ("capture", "quantize", "build network", "build engine", "export onnx", "validate", "report")


def test_exit_code_progress_and_timing(demo_build: BuildRun) -> None:
    assert demo_build.code == 0, demo_build.stderr
    out = demo_build.stdout
    for i, name in enumerate(STEPS, start=1):
        assert f"[{i}/7] {name}" in out
    assert len(re.findall(r"^      done in \d+\.\d s$", out, flags=re.M)) == 7
    assert "calibrator mse" in out  # the demo's calibrator, said out loud
    assert f"wrote {demo_build.output}/" in out
    leftovers = [p.name for p in demo_build.output.parent.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_engine_and_sidecar(demo_build: BuildRun) -> None:
    artifact = EngineArtifact.open(demo_build.output / "model.plan")  # size, sha256, library, header checks
    meta = json.loads((demo_build.output / "model.plan.json").read_text())
    assert meta["engine"]["sha256"] == artifact.sha256
    assert [i["name"] for i in meta["inputs"]] == ["images"]
    assert meta["inputs"][0]["shape"] == [-1, 1, 96, 96]
    assert [i["max_shape"][0] for i in meta["inputs"]] == [32]
    assert [o["name"] for o in meta["outputs"]] == ["hm", "wh", "reg"]
    state = load_quant_state(demo_build.output / "model.quant.json")
    assert meta["quant_state_hash"] == "sha256:" + state.digest()
    assert state.config.calibrator == "mse" and state.stats and set(state.amax) == set(state.stats)


def test_deployment_target_in_output_sidecar_report_and_triton(demo_build: BuildRun) -> None:
    meta = json.loads((demo_build.output / "model.plan.json").read_text())
    target = deployment_target(meta)
    assert meta["compatibility"]["library"] == meta["library"]["name"]
    assert f"deployment target: {target}" in demo_build.stdout
    assert str(markupsafe.escape(target)) in (demo_build.output / "report.html").read_text()  # as jinja2 escapes
    pbtxt = (demo_build.output / "triton" / "demo_detector" / "config.pbtxt").read_text()
    assert target in " ".join(line[2:] for line in pbtxt.splitlines() if line.startswith("# "))


def test_qdq_onnx_loads_and_has_named_dynamic_io(demo_build: BuildRun) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(demo_build.output / "model.qdq.onnx"))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["hm", "wh", "reg"]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch


def test_triton_repository(demo_build: BuildRun) -> None:
    model_dir = demo_build.output / "triton" / "demo_detector"
    cfg = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert cfg["name"] == "demo_detector" and cfg["platform"] == "tensorrt_plan"
    assert cfg["max_batch_size"] == 32
    assert cfg["input"] == [{"name": "images", "data_type": "TYPE_FP32", "dims": [1, 96, 96]}]
    assert [(o["name"], o["dims"]) for o in cfg["output"]] == [
        ("hm", [10, 24, 24]),
        ("wh", [2, 24, 24]),
        ("reg", [2, 24, 24]),
    ]
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8, 32]
    plan = (model_dir / "1" / "model.plan").read_bytes()
    assert plan == (demo_build.output / "model.plan").read_bytes()
    load_engine_bytes(demo_build.output / "model.plan")


def test_graph_svg_and_dot(demo_build: BuildRun) -> None:
    root = ET.fromstring((demo_build.output / "graph.svg").read_text())
    assert root.tag.endswith("svg")
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("backbone_0: conv2d") for t in titles)  # the stem conv, drawn as an INT8 layer
    assert any("INT8 layer" in t for t in titles)
    dot = (demo_build.output / "graph.dot").read_text()
    assert dot.startswith("digraph") and '"hm_2"' in dot


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_html_is_self_contained_with_tables(demo_build: BuildRun) -> None:
    html = (demo_build.output / "report.html").read_text()
    parser = _Tables()
    parser.feed(html)
    text = " ".join(parser.text)
    assert parser.tags.count("table") >= 6
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert not re.search(r"(src|href)=\"https?://", html)
    for heading in (
        "Accuracy",
        "Per-layer quantization error",
        "Activations of the worst layers",
        "Layers kept in float",
        "Model and quantization scheme",
        "Build",
        "Artifacts",
    ):
        assert heading in text
    for backend in (
        "FP32",
        "INT8 simulated",
        "INT8 TensorRT network",
        "INT8 QDQ ONNX",
        "INT8 TensorRT engine",
    ):
        assert backend in text
    assert "clip " in html and "SQNR (dB)" in html
    assert html.count("<svg") >= 4  # SQNR chart, histograms, step times, graph


def test_manifest_records_everything(demo_build: BuildRun) -> None:
    manifest = json.loads((demo_build.output / "fx2trt_run.json").read_text())
    ev = manifest["evaluation"]
    assert ev["task"] == "detection" and ev["num_samples"] == EVAL_IMAGES
    rows = {r["key"]: r for r in ev["rows"]}
    assert {"fp32", "simulated", "network_executor", "onnxruntime", "tensorrt"} <= set(rows)
    assert rows["fp32"]["metrics"]["mAP"] > 0.3  # the demo detector really detects digits
    # The network executor runs the network the engine was built from: the same INT8 model.
    assert rows["network_executor"]["cosine_vs_simulated"] > 0.9999
    assert abs(rows["network_executor"]["metrics"]["mAP"] - rows["simulated"]["metrics"]["mAP"]) < 0.002
    assert manifest["layers"] and manifest["histograms"]
    assert [s["name"] for s in manifest["steps"]] == list(STEPS)
    for entry in manifest["artifacts"]:
        data = (demo_build.output / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    listed = {e["path"] for e in manifest["artifacts"]}
    assert {
        "model.plan",
        "model.plan.json",
        "model.quant.json",
        "model.qdq.onnx",
        "graph.svg",
        "report.html",
        "triton/demo_detector/config.pbtxt",
        "triton/demo_detector/1/model.plan",
    } <= listed
