"""TensorRT's plan in a real ``fx2trt build`` of the bundled default: printed, written, recorded, reported, re-read.

The demo detector is 18 convs (INT8) and three ConvTranspose layers that TensorRT-RTX plans as
``deconv Float, Float`` (no INT8 deconvolution kernel there), so the plan line must say 18 of 21, not 21."""

from __future__ import annotations

import json

import pytest

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


def test_every_build_sets_its_plan_beside_tensorrts_fp16_plan(demo_build: BuildRun) -> None:
    manifest = json.loads((demo_build.output / "fx2trt_run.json").read_text())
    plans = manifest["plans"]
    assert set(plans) >= {"int8", "fp16", "estimate_label", "gpus"} and "chosen" not in plans
    assert plans["int8"]["engine_layers"] == manifest["plan"]["summary"]["engine_layers"]
    fp16 = plans["fp16"]
    assert fp16["compute_layers_by_dtype"] == {"Half": 21}  # every conv and deconv, no Q/DQ: TensorRT's FP16 plan
    assert set(fp16["estimates"]) == set(plans["gpus"]) == {"RTX 4090", "L40S", "L4", "A10"}
    assert "not a measurement" in plans["estimate_label"]
    slower = [g for g in plans["gpus"] if plans["int8"]["estimates"][g] > fp16["estimates"][g]]
    assert plans["slower_than_fp16_on"] == slower
    if slower:  # the build says so, names the layers that cost most, and points to the remedy
        line = next(ln for ln in demo_build.stdout.splitlines() if "estimated SLOWER than FP16" in ln)
        assert "costliest layers" in line and "--placement plan-cost" in line


def test_plan_cost_placement_build(tmp_path) -> None:
    """--placement plan-cost on the demo: the chosen engine is estimated no slower than the faster of all-INT8 and
    FP16 on every GPU (or the best tried), moves no more bytes than FP16, and passes the gate like any build."""
    out = tmp_path / "pc"
    code, stdout, _ = run_cli(
        [
            "build",
            "--output",
            str(out),
            "--max-eval-images",
            "20",
            "--placement",
            "plan-cost",
            "--float-dtype",
            "float16",
        ]
    )
    manifest = json.loads((out / "fx2trt_run.json").read_text())
    placement, plans = manifest["placement"], manifest["plans"]
    assert code == 0 and manifest["passed"]
    assert "verified on TensorRT's rebuilt plans:" in stdout
    chosen = next(c for c in placement["candidates"] if c["label"] == placement["chosen"])
    assert plans["chosen"]["estimates"] == pytest.approx(chosen["seconds"])
    for gpu in plans["gpus"]:
        best = min(plans["int8"]["estimates"][gpu], plans["fp16"]["estimates"][gpu])
        assert chosen["score"] > 1 or plans["chosen"]["estimates"][gpu] <= best * (1 + 1e-9)
    assert chosen["score"] <= 1 or chosen["score"] == min(c["score"] for c in placement["candidates"])
    assert plans["chosen"]["bytes_per_item"] <= plans["fp16"]["bytes_per_item"] * (1 + 1e-9)
    audit = manifest["plan_audit"]["counts"]
    assert audit["int8_in_plan"] == len(placement["keep_int8"])  # the audit sees exactly what was kept INT8
    if not placement["is_int8_engine"]:
        assert "this is not an INT8 engine" in stdout
        assert "the rows named INT8 below are the float16 model it chose" in stdout
