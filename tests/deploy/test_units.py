"""Config loading, staging, graph drawing and charts, without building anything."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline.deploy.analysis import kept_in_float
from fx2trt_pipeline.deploy.charts import Histogram, display_bins, histogram, sqnr_bars, step_bars
from fx2trt_pipeline.deploy.config import DEMO_MODEL
from fx2trt_pipeline.deploy.config_loader import load_config_file, run_config_from_dict, run_config_from_sources
from fx2trt_pipeline.deploy.graph_svg import graph_view, render_svg, to_dot
from fx2trt_pipeline.deploy.steps import MANIFEST_NAME, Steps, staged_output
from fx2trt_pipeline.errors import ConfigError, StepFailedError

from .models import tiny_classifier


def test_defaults_are_the_demo() -> None:
    cfg = run_config_from_sources(None)
    assert cfg.model.source == DEMO_MODEL and cfg.is_demo
    assert cfg.calibration.source == "mnist_det:calib" and cfg.evaluation.source == "mnist_det:val"
    assert cfg.inputs[0].name == "images" and cfg.inputs[0].max_shape == (32, 1, 96, 96)
    assert cfg.model.output_names == ("hm", "wh", "reg") and cfg.quant.calibrator == "mse"
    assert run_config_from_dict(cfg.to_dict()) == cfg


def test_file_paths_are_relative_to_the_file_and_cli_wins(tmp_path: Path) -> None:
    cfg_file = tmp_path / "conf" / "run.toml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(
        '[model]\nsource = "resnet18"\nweights = "w/r18.pth"\n[calibration]\nsource = "calib"\n'
        '[evaluation]\nsource = "val"\nannotations = "val.json"\n[quant]\ncalibrator = "minmax"\n'
        "[build]\nbuilder_optimization_level = 2\n[gate]\nint8_budget = 0.01\n"
    )
    cfg = run_config_from_sources(cfg_file, {"percentile": None, "max_eval_images": 7})
    assert cfg.model.weights == tmp_path / "conf" / "w" / "r18.pth"
    assert cfg.calibration.source == str(tmp_path / "conf" / "calib")
    assert cfg.evaluation.annotations == tmp_path / "conf" / "val.json" and cfg.evaluation.max_images == 7
    assert cfg.quant.calibrator == "minmax" and cfg.build.builder_optimization_level == 2
    assert cfg.gate.int8_budget == 0.01 and not cfg.is_demo
    cli = run_config_from_sources(cfg_file, {"calibrator": "entropy", "calib_data": "other"})
    assert cli.quant.calibrator == "entropy" and cli.calibration.source == str(Path.cwd() / "other")


@pytest.mark.parametrize(
    "text, match",
    [
        ("[modle]\n", "unknown section"),
        ('[model]\nsorce = "x"\n', "sorce"),
        ('[quant]\ncalibrator = "best"\n', "calibrator"),
        ("[build]\nworkspace = 1\n", "workspace"),
        ("[[inputs]]\nshape = [1]\n", "name"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        run_config_from_sources(path)


def test_yaml_needs_pyyaml_or_parses(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("quant:\n  calibrator: minmax\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="PyYAML"):
            load_config_file(path)
    else:
        assert load_config_file(path) == {"quant": {"calibrator": "minmax"}}
    other = tmp_path / "c.json"
    other.write_text("{}")
    with pytest.raises(ConfigError, match="must end in"):
        load_config_file(other)


def test_staged_output_publishes_whole_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with staged_output(out) as stage:
        (stage / MANIFEST_NAME).write_text("{}")
        (stage / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), staged_output(out) as stage:
        (stage / "a.txt").write_text("2")
        raise RuntimeError("half way")
    assert (out / "a.txt").read_text() == "1"  # the old run survives a failed one
    with staged_output(out) as stage:  # a previous fx2trt output is replaced whole
        (stage / MANIFEST_NAME).write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_steps_print_times_and_wrap_errors() -> None:
    stream = io.StringIO()
    steps = Steps(["a", "b"], stream=stream)
    with steps.step("a", "first"):
        steps.note("hello")
    with pytest.raises(StepFailedError) as info, steps.step("b"):
        raise ValueError("broken\ndetail")
    assert str(info.value).startswith("step 2/2 'b' failed: ValueError: broken [at ")
    text = stream.getvalue()
    assert "[1/2] a: first\n      hello\n      done in" in text and "[2/2] b" in text
    assert [r["status"] for r in steps.to_list()] == ["ok", "failed"]


def _quantized(skip: tuple[str, ...] = ()) -> torch.fx.GraphModule:
    from fx2trt_pipeline.quantize.api import quantize_model

    x = torch.randn(4, 3, 16, 16)
    return quantize_model(tiny_classifier(), [x], (x,), ftp.QuantConfig(skip=skip, show_progress=False))


def test_graph_svg_marks_int8_and_float_layers() -> None:
    qgm = _quantized(skip=("conv",))
    view = graph_view(qgm)
    kinds = {n.name: n.kind for n in view.nodes}
    assert kinds["conv"] == "float" and kinds["stem_0"] == "int8" and kinds["fc"] == "int8"
    assert any(e == ("stem_2", "conv", False) for e in view.edges)  # no Q/DQ into the float conv
    assert any(dst == "fc" and int8 for _, dst, int8 in view.edges)
    svg = render_svg(view)
    ET.fromstring(svg)
    assert "kept in float" in svg and to_dot(view).count("->") == len(view.edges)
    assert kept_in_float(qgm) == [
        {"layer": "conv", "op": "Conv2d", "reason": "matched QuantConfig.skip or an override with skip=True"}
    ]
    assert kept_in_float(_quantized()) == []


def test_charts_are_valid_svg() -> None:
    for svg in (
        sqnr_bars([("a", 5.0, "conv"), ("b", float("inf"), "add"), ("c", float("nan"), "x")]),
        histogram(Histogram([10, 5, 0, 1], 0.25, 0.6, 0.9), title="layer <1>"),
        step_bars([("capture", 1.0), ("quantize", 2.5)]),
    ):
        ET.fromstring(svg)
    assert "layer &lt;1&gt;" in histogram(Histogram([1], 1.0, 0.5, 0.5), title="layer <1>")
    counts, width = display_bins(list(range(10)), 0.5, 2.0, target=2)
    assert width == 1.0 and sum(counts) == sum(range(10))


def test_preprocessing_flags_over_torchvision_weights_defaults(tmp_path: Path) -> None:
    from fx2trt_pipeline.deploy.config_loader import run_config_from_sources

    base = {"model": "mobilenet_v2", "calib_data": str(tmp_path)}
    spec = run_config_from_sources(None, base).preprocess
    assert (spec.size, spec.resize, spec.channels) == ((224, 224), 232, 3)  # the DEFAULT weights' transforms
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    spec = run_config_from_sources(None, {**base, "input_size": (96, 96)}).preprocess
    assert (spec.size, spec.resize) == ((96, 96), 99)  # the weights' resize/crop ratio kept
    spec = run_config_from_sources(
        None, {**base, "input_size": (64, 80), "resize": 90, "mean": (0.5,), "std": (0.25,), "channels": 1}
    ).preprocess
    assert (spec.size, spec.resize, spec.mean, spec.std, spec.channels) == ((64, 80), 90, (0.5,), (0.25,), 1)
    assert run_config_from_sources(None, {"model": "pkg.mod:factory", "calib_data": "x"}).preprocess is None
    with pytest.raises(ConfigError, match="resize"):
        run_config_from_sources(None, {**base, "resize": 100})  # smaller than the 224 crop


def test_a_factory_module_in_the_current_directory_imports(tmp_path, monkeypatch) -> None:
    """``fx2trt build --model mymodels:tiny`` from the folder holding mymodels.py, as ``python -m`` would find it;
    a module that is nowhere still gets the one-line error naming it."""
    import sys

    import pytest

    from fx2trt_pipeline.deploy.sources import resolve_callable
    from fx2trt_pipeline.errors import ConfigError

    (tmp_path / "my_local_factories.py").write_text("def tiny():\n    return 'built'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert resolve_callable("my_local_factories:tiny", "Model factory")() == "built"
    with pytest.raises(ConfigError, match="cannot import module 'no_such_factories'"):
        resolve_callable("no_such_factories:tiny", "Model factory")
