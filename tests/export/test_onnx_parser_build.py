"""Our QDQ ONNX is what TensorRT's own ONNX parser accepts: a STRONGLY_TYPED network that builds an engine.

trtexec users and datacenter deployments take the ONNX route, so every exported model must survive it. For the
demo detector (real weights, real MNIST-scene calibration; its ConvTranspose layers included) and two torchvision
architectures, the file goes through ``OnnxParser`` into a STRONGLY_TYPED network, which must

* build a serialized engine whose header is a complete plan of the library in use;
* plan every quantized conv/matmul as INT8 (the precision audit of :mod:`fx2trt_pipeline.plan.audit`), except
  layers TensorRT-RTX has no INT8 kernel for (its ConvTranspose);
* compute exactly what the simulated model computes, executed layer by layer on the CPU from the parsed network.

The plans of resnet18 and mobilenet_v2 against our own network's are compared in tests/plan/test_onnx_plan.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fx2trt_pipeline import trt_api

if not trt_api.is_available():
    pytest.skip("no TensorRT library installed (pip install 'fx2trt-pipeline[rtx]')", allow_module_level=True)
pytest.importorskip("onnx")
torchvision = pytest.importorskip("torchvision")

import fx2trt_pipeline as ftp  # noqa: E402
from fx2trt_pipeline.calib_data import load_mnist_detection  # noqa: E402
from fx2trt_pipeline.engine.artifact import check_engine_header  # noqa: E402
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network  # noqa: E402
from fx2trt_pipeline.models import load_demo_detector  # noqa: E402
from fx2trt_pipeline.plan.audit import audit_plan  # noqa: E402
from fx2trt_pipeline.trt_types import make_logger  # noqa: E402
from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs  # noqa: E402
from fx2trt_pipeline.validate.runners import NetworkExecutorRunner, TorchRunner  # noqa: E402


def _torchvision(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """Random weights with BN statistics from data (an all-zero folded bias would leave the ONNX), 32 px."""
    model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 32, 32, generator=gen))
    return model.eval(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _demo_detector() -> tuple[torch.nn.Module, torch.Tensor]:
    scenes = load_mnist_detection("calib")
    return load_demo_detector(), torch.stack([scenes[i][0] for i in range(2)]).float()


MODELS = {"demo_detector": _demo_detector, "resnet18": lambda: _torchvision("resnet18")}
MODELS["squeezenet1_1"] = lambda: _torchvision("squeezenet1_1")


@pytest.mark.parametrize("name", list(MODELS))
def test_tensorrt_onnx_parser_builds_a_strongly_typed_int8_engine(name: str, tmp_path: Path) -> None:
    trt = trt_api.get_trt()
    torch.manual_seed(0)
    model, x = MODELS[name]()
    config = ftp.QuantConfig(show_progress=False, calibrator="minmax")  # any scales do; MSE triples the time
    qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=config)
    path = ftp.export_qdq_onnx(qgm, (x,), tmp_path / f"{name}.onnx", input_names=["x"])

    logger = make_logger("VERBOSE")  # the plan is a VERBOSE message of the build
    builder = create_builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    assert network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    spec = ftp.InputSpec("x", tuple(x.shape))
    data, plan = engine_and_plan_from_network(builder, network, [spec])
    check_engine_header(data, f"{name} engine")  # a complete plan of the library in use (TensorRT-RTX header)
    assert plan is not None and len(data) > 0

    audit = audit_plan(network, plan)
    counts = audit.counts()
    assert audit.passed, "\n".join(audit.gate_lines())
    no_int8 = 3 if name == "demo_detector" and trt_api.library_name() == "tensorrt_rtx" else 0  # its deconvs
    assert counts["no_int8_kernel"] == no_int8 and counts["int8_in_plan"] == counts["quantized"] - no_int8 > 10

    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    simulated = TorchRunner(qgm, ["x"], outputs, name="simulated").run({"x": x})
    parsed = NetworkExecutorRunner(network, name="parsed ONNX").run({"x": x})
    result = compare_outputs(simulated, parsed, Tolerance(min_cosine=0.9999))
    assert result, str(result)
    assert max(s.max_abs_error for s in result.outputs) == 0.0  # the same integer arithmetic, bit for bit
    del parser
