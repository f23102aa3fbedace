"""Runners: one interface, ``run(feeds) -> {output name: tensor}``, over every way to run a model.

* :class:`TorchRunner`: the float model or the simulated INT8 GraphModule (any ``nn.Module``).
* :class:`NetworkExecutorRunner`: the TensorRT network definition, executed in torch on CPU/CUDA.
* :class:`OnnxRuntimeRunner`: an exported QDQ ONNX model in ONNX Runtime.
* :class:`TensorRTEngineRunner`: a serialized engine through :class:`fx2trt_pipeline.engine.runtime.Engine`
  (needs a GPU the TensorRT library supports).

Feeds are named like the network inputs; outputs are named like the network outputs, so any two
runners compare with :func:`compare_runners` (Polygraphy's ``Comparator.run`` + ``compare_accuracy``).

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> from fx2trt_pipeline.network.network import network_from_graph_module
    >>> _, network, ctx = network_from_graph_module(qgm, [InputSpec("images", (2, 3, 16, 16))])
    >>> from fx2trt_pipeline.validate.runners import NetworkExecutorRunner, TorchRunner, compare_runners
    >>> executor = NetworkExecutorRunner(network)
    >>> simulated = TorchRunner(qgm, executor.input_names, executor.output_names, name="simulated")
    >>> result = compare_runners(simulated, executor, {"images": x})
    >>> bool(result)
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from fx2trt_pipeline.capture.tracer import flatten_outputs
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.executor.network_executor import NetworkExecutor
from fx2trt_pipeline.validate.compare import ComparisonResult, Tolerance, compare_outputs
from fx2trt_pipeline.validate.tie_regions import ORT_LEVELS

Feeds = Mapping[str, torch.Tensor]


@runtime_checkable
class Runner(Protocol):
    """Anything with a ``name`` and ``run(feeds) -> dict[str, Tensor]``."""

    name: str

    def run(self, feeds: Feeds) -> dict[str, torch.Tensor]:
        """Outputs by name for inputs by name."""
        ...


class TorchRunner:
    """Runs an ``nn.Module`` (float model or simulated INT8 GraphModule) under ``torch.no_grad``.

    Args:
        module: called as ``module(*[feeds[n] for n in input_names])``.
        input_names: the feed names in the module's positional order.
        output_names: names for the flattened outputs; defaults to the keys of a dict output,
            else ``output_0, output_1, ...``.
        name: label used in comparison tables.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str] | None = None,
        name: str = "torch",
    ) -> None:
        self.module = module
        self.input_names = list(input_names)
        self.output_names = list(output_names) if output_names is not None else None
        self.name = name

    def run(self, feeds: Feeds) -> dict[str, torch.Tensor]:
        """Outputs of the module by name."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ConfigError(f"{self.name}: feeds lack inputs {missing} (expects {self.input_names})")
        with torch.no_grad():
            result = self.module(*[feeds[n] for n in self.input_names])
        tensors = flatten_outputs(result)
        names = self.output_names
        if names is None:
            names = (
                list(result)
                if isinstance(result, Mapping) and len(result) == len(tensors)
                else [f"output_{i}" for i in range(len(tensors))]
            )
        if len(names) != len(tensors):
            raise ConfigError(
                f"{self.name}: the module returned {len(tensors)} tensors but {len(names)} output "
                f"names were given ({names})"
            )
        return dict(zip(names, tensors))


class NetworkExecutorRunner:
    """Runs a TensorRT network definition with :class:`NetworkExecutor` (CPU or CUDA feeds)."""

    def __init__(self, network: Any, name: str = "network_executor") -> None:
        self.executor = network if isinstance(network, NetworkExecutor) else NetworkExecutor(network)
        self.name = name

    @property
    def input_names(self) -> list[str]:
        """Network input names."""
        return self.executor.input_names

    @property
    def output_names(self) -> list[str]:
        """Network output names."""
        return self.executor.output_names

    def run(self, feeds: Feeds) -> dict[str, torch.Tensor]:
        """Network outputs by tensor name."""
        return self.executor.run(feeds)[0]


class OnnxRuntimeRunner:
    """Runs an ONNX model (path or serialized bytes) in ONNX Runtime; returns CPU tensors.

    Args:
        model: path of an ``.onnx`` file or its bytes.
        providers: ONNX Runtime execution providers, CPU by default.
        optimization: graph optimization level, "disabled" (default: keeps QDQ semantics, so it is a
            parity backend), "basic", "extended" or "all" (ONNX Runtime's default: QDQ groups become
            its own integer kernels, what a deployment gets).
    """

    def __init__(
        self,
        model: str | Path | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        name: str = "onnxruntime",
        optimization: str = "disabled",
    ) -> None:
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[optimization])
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
        self.name, self.model = name, model

    @property
    def input_names(self) -> list[str]:
        """Graph input names."""
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        """Graph output names."""
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Feeds) -> dict[str, torch.Tensor]:
        """Outputs by graph output name."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ConfigError(f"{self.name}: feeds lack inputs {missing} (expects {self.input_names})")
        arrays = {n: feeds[n].detach().cpu().numpy() for n in self.input_names}
        values = self.session.run(None, arrays)
        return {n: torch.from_numpy(v) for n, v in zip(self.output_names, values)}


class TensorRTEngineRunner:
    """Runs a serialized engine with :class:`fx2trt_pipeline.engine.runtime.Engine` (imported lazily).

    Feeds are moved to the engine's CUDA device; outputs stay there. The engine runs every profile
    shape once when the runner is made (``Engine.warm_up``), so TensorRT-RTX's just-in-time kernel
    compilation is not part of any timing taken with the runner.

    Args:
        engine: an ``Engine``, or the path of an engine file (loaded with ``Engine.load``).
        device: the CUDA device; ``None`` means the engine's own (for a path: the current CUDA device).
            ``"cuda"`` without an index means the current device. A non-CUDA device such as ``"cpu"``,
            or a device other than a given Engine's, is a :class:`ConfigError`, never a silent switch.
        name: label used in comparison tables.
        warm_up: run the warm-up (``warm_up_seconds`` records how long it took).
    """

    def __init__(
        self, engine: Any, device: str | torch.device | None = None, name: str = "tensorrt", warm_up: bool = True
    ) -> None:
        runtime = importlib.import_module("fx2trt_pipeline.engine.runtime")
        if isinstance(engine, (str, Path)):
            engine = runtime.Engine.load(engine, device=device)
        elif device is not None and runtime.resolve_device(device) != engine.device:
            raise ConfigError(
                f"{name}: the engine runs on {engine.device}, not on the requested device {device}; "
                "load it with Engine.load(path, device=...) to run it elsewhere"
            )
        self.engine = engine
        self.device: torch.device = engine.device
        self.name = name
        self.warm_up_seconds = engine.warm_up() if warm_up else None

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Compile the engine for these batch sizes too (``Engine.warm_up``; shapes already run are skipped)."""
        self.engine.warm_up(batch_sizes=list(batch_sizes))

    @property
    def input_names(self) -> list[str]:
        """Engine input names."""
        return list(self.engine.input_names)

    @property
    def output_names(self) -> list[str]:
        """Engine output names."""
        return list(self.engine.output_names)

    def run(self, feeds: Feeds) -> dict[str, torch.Tensor]:
        """Engine outputs by name (CUDA tensors)."""
        # Engine itself makes inputs contiguous and 256-byte aligned (copying only when needed).
        return dict(self.engine(**{n: t.to(self.device) for n, t in feeds.items()}))


def compare_runners(
    ref: Runner, test: Runner, feeds: Feeds, tolerances: Tolerance | Mapping[str, Tolerance] | None = None
) -> ComparisonResult:
    """Run both runners on ``feeds`` and compare their outputs by name.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
        >>> x = torch.randn(2, 3, 16, 16)
        >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
        >>> from fx2trt_pipeline.network.inputs import InputSpec
        >>> from fx2trt_pipeline.network.network import network_from_graph_module
        >>> _, network, ctx = network_from_graph_module(qgm, [InputSpec("images", (2, 3, 16, 16))])
        >>> test = NetworkExecutorRunner(network)
        >>> ref = TorchRunner(qgm, ["images"], test.output_names)
        >>> result = compare_runners(ref, test, {"images": x})
        >>> assert result, str(result)
    """
    return compare_outputs(ref.run(feeds), test.run(feeds), tolerances, ref_name=ref.name, test_name=test.name)
