"""TensorRT's plan in a real ``fx2trt build`` of the bundled default: printed, written, recorded, reported, re-read.

The demo detector is 18 convs (INT8) and three ConvTranspose layers that TensorRT-RTX plans as
``deconv Float, Float`` (no INT8 deconvolution kernel there), so the plan line must say 18 of 21, not 21."""

from __future__ import annotations

import json

from fx2trt_pipeline import trt_api
from tests.deploy.conftest import BuildRun, run_cli


def test_build_prints_the_plan_line(demo_build: BuildRun) -> None:
    line = next(ln for ln in demo_build.stdout.splitlines() if "quantized convs and matmuls run INT8" in ln)
    assert "engine layers" in line and "MB per image at batch" in line and "model.plan.layers.json" in line
    if trt_api.library_name() == "tensorrt_rtx":
        assert "18/21 quantized convs and matmuls run INT8" in line
        assert "3 run in float for want of an INT8 kernel in tensorrt_rtx" in line


def test_plan_file_has_the_documented_keys(demo_build: BuildRun) -> None:
    plan = json.loads((demo_build.output / "model.plan.layers.json").read_text())
    assert {"layers", "summary", "source", "batch"} <= set(plan)
    summary = plan["summary"]
    assert {"engine_layers", "bytes_per_item", "int8_compute_layers", "float_compute_layers"} <= set(summary)
    layer = next(entry for entry in plan["layers"] if entry["type"] == "correlation")
    assert {"name", "type", "inputs", "outputs", "constants", "nodes", "bytes", "macs"} <= set(layer)
    assert set(layer["inputs"][0]) >= {"name", "shape", "dtype", "format"} and layer["inputs"][0]["dtype"] == "Int8"
    assert layer["nodes"][0] in layer["name"]  # the FX node the engine layer implements
    # bytes per item add up from the layers (inputs + outputs + constants at the recorded batch)
    total = sum(entry["bytes"] for entry in plan["layers"])
    assert abs(total / plan["batch"] - summary["bytes_per_item"]) < 1.0
    # the counts are the plan's own: every compute layer is counted once, by the dtype it reads
    compute = [entry for entry in plan["layers"] if entry["compute"]]
    assert summary["int8_compute_layers"] == sum(entry["compute_dtype"] == "Int8" for entry in compute)
    assert summary["int8_compute_layers"] + summary["float_compute_layers"] == len(compute)


def test_sidecar_manifest_and_report_carry_the_plan(demo_build: BuildRun) -> None:
    sidecar = json.loads((demo_build.output / "model.plan.json").read_text())
    manifest = json.loads((demo_build.output / "fx2trt_run.json").read_text())
    plan = json.loads((demo_build.output / "model.plan.layers.json").read_text())
    assert sidecar["plan"]["engine_layers"] == plan["summary"]["engine_layers"]
    assert sidecar["plan"]["file"] == "model.plan.layers.json"
    assert manifest["plan_audit"]["passed"] and manifest["plan"]["summary"] == plan["summary"]
    assert any(line.startswith("PASS TensorRT plan:") for line in manifest["evaluation"]["gate_lines"])
    html = (demo_build.output / "report.html").read_text()
    assert 'id="plan"' in html and "Bytes per engine layer" in html
    assert "every conv, deconv, linear, matmul and avg-pool runs in INT8" not in html
    if trt_api.library_name() == "tensorrt_rtx":  # the deconvs are listed as float with the reason
        assert "no INT8 deconv kernel" in html


def test_fx2trt_plan_prints_the_same(demo_build: BuildRun) -> None:
    code, out, _ = run_cli(["plan", str(demo_build.output)])
    plan = json.loads((demo_build.output / "model.plan.layers.json").read_text())
    assert code == 0
    assert f"{plan['summary']['engine_layers']} engine layers" in out and "heaviest" in out
    code, out, _ = run_cli(["plan", str(demo_build.output / "model.plan"), "--json"])
    assert code == 0 and json.loads(out)["summary"] == plan["summary"]
    code, _, err = run_cli(["plan", str(demo_build.output / "missing.plan")])
    assert code == 2 and "no engine there" in err


def test_fx2trt_plan_inspect_needs_a_gpu_it_can_use(demo_build: BuildRun) -> None:
    import torch

    code, out, err = run_cli(["plan", str(demo_build.output), "--inspect"])
    if not torch.cuda.is_available():
        assert code == 3 and "does not deserialize here" in err
    else:  # a GPU host: the engine's own layer information, or exit 3 on a GPU the library refuses
        assert code == 3 or "engine inspector" in out


def test_placement_lint_runs_before_the_build(demo_build: BuildRun) -> None:
    """The demo's heads end in 10 / 2 / 2-channel INT8 convs: advice, printed in the network step, never a failure."""
    manifest = json.loads((demo_build.output / "fx2trt_run.json").read_text())
    rules = sorted((f["rule"], f["node"]) for f in manifest["lint"])
    assert rules == [("int8_channels_not_multiple_of_16", n) for n in ("hm_2", "reg_2", "wh_2")]
    network_step = demo_build.stdout.split("[3/7]")[1].split("[4/7]")[0]
    assert network_step.count("LINT int8_channels_not_multiple_of_16") == 3
    assert demo_build.code == 0  # advice does not fail the gate
    assert "LINT int8_channels_not_multiple_of_16 hm_2" in (demo_build.output / "report.html").read_text()
