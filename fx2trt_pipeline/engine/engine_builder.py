"""Build a serialized TensorRT engine from a network and write it with its metadata, in small steps.

::

    network_from_graph_module(qgm, inputs)         (fx2trt_pipeline.network.network)
        -> engine_from_network(builder, network, inputs, options)         one profile, options, build; the
                                                                          bytes, sidecar fields and plan in hand
        -> save_engine(engine_bytes, path, metadata, plan)                engine + <engine>.json, atomic
    build_engine(qgm, inputs, path, ...) chains the three (one conversion) and returns an EngineArtifact.
    engine_bytes_from_network / engine_and_plan_from_network: the build alone.

Networks are STRONGLY_TYPED: TensorRT 11 and TensorRT-RTX have no INT8/FP16 builder flags, the
precision of every layer comes from the explicit Q/DQ and cast layers in the network.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> from fx2trt_pipeline.engine.engine_builder import build_engine
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> spec = InputSpec.dynamic_batch("x", (3, 16, 16), 1, 2, 4)
    >>> art = build_engine(qgm, [spec], "conv_int8.plan")   # TensorRT-RTX builds on a CPU-only machine
    >>> art.engine_path.name, art.metadata["build"]["engine_bytes"] == art.size_bytes
    ('conv_int8.plan', True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import EngineArtifact
from fx2trt_pipeline.engine.build_setup import (
    add_profile,
    check_inputs,
    check_network,
    load_timing_cache,
    save_timing_cache,
)
from fx2trt_pipeline.engine.engine_files import model_metadata, network_io_metadata, save_engine
from fx2trt_pipeline.engine.engine_plan import EnginePlan, attribute_nodes
from fx2trt_pipeline.engine.options import BuildOptions, apply_build_options
from fx2trt_pipeline.engine.plan_parse import layers_message, opt_batch, plan_from_build_log
from fx2trt_pipeline.errors import EngineBuildError
from fx2trt_pipeline.network.context import node_name_of_layer
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.trt_types import make_logger

_LOG = logging.getLogger("fx2trt_pipeline.tensorrt")


def create_builder(logger: Any | None = None) -> Any:
    """A ``trt.Builder`` with a capturing logger that keeps VERBOSE messages (the engine plan is one of them)."""
    return trt_api.get_trt().Builder(logger if logger is not None else make_logger("VERBOSE"))


def engine_bytes_from_network(
    builder: Any, network: Any, inputs: Sequence[InputSpec], options: BuildOptions | None = None
) -> bytes:
    """Build a serialized engine from a STRONGLY_TYPED network.

    Adds one optimization profile for the dynamic inputs (from the InputSpecs' min/opt/max shapes),
    applies ``options`` and, when ``options.timing_cache_path`` is set, loads and re-saves the cache.
    :func:`engine_and_plan_from_network` also returns TensorRT's plan of the engine.

    Args:
        builder: the ``trt.Builder`` that created ``network`` (ideally with :func:`make_logger`).
        network: a strongly typed ``INetworkDefinition`` with its outputs marked.
        inputs: one InputSpec per dynamic network input (static ones are optional and checked if given).
        options: build settings; ``None`` means TensorRT's defaults.

    Returns:
        The serialized engine.

    Raises:
        EngineBuildError: the network is not strongly typed, has no outputs, disagrees with ``inputs``,
            or TensorRT refused it (the message carries TensorRT's error messages).
        ConfigError: an option is not available in the library in use.

    Example:
        >>> from fx2trt_pipeline import trt_api
        >>> trt = trt_api.get_trt()
        >>> builder = create_builder()
        >>> network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        >>> x = network.add_input("x", trt.float32, (1, 4))
        >>> network.mark_output(network.add_activation(x, trt.ActivationType.RELU).get_output(0))
        >>> data = engine_bytes_from_network(builder, network, [InputSpec("x", (1, 4))])
        >>> len(data) > 1000
        True
    """
    return engine_and_plan_from_network(builder, network, inputs, options)[0]


def engine_and_plan_from_network(
    builder: Any, network: Any, inputs: Sequence[InputSpec], options: BuildOptions | None = None
) -> tuple[bytes, EnginePlan | None]:
    """Build like :func:`engine_bytes_from_network` and read TensorRT's plan of the engine from the build log.

    Unless ``options.profiling_verbosity`` says otherwise the build uses DETAILED verbosity (the engine then
    also carries its layer information for ``IEngineInspector`` on a GPU host). The plan is ``None`` when the
    builder's logger does not keep VERBOSE messages or the verbosity was set to less than DETAILED.

    Example:
        >>> from fx2trt_pipeline import trt_api
        >>> trt = trt_api.get_trt()
        >>> builder = create_builder()
        >>> network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        >>> x = network.add_input("x", trt.float32, (2, 4))
        >>> relu = network.add_activation(x, trt.ActivationType.RELU)
        >>> relu.name = "relu"
        >>> network.mark_output(relu.get_output(0))
        >>> data, plan = engine_and_plan_from_network(builder, network, [InputSpec("x", (2, 4))])
        >>> [layer.inputs[0].dtype for layer in plan.layers if layer.inputs], plan.batch
        (['Float'], 2)
    """
    trt = trt_api.get_trt()
    _LOG.info("building with %s (%s)", trt_api.library_label(), trt_api.build_library_reason())
    options = options if options is not None else BuildOptions()
    check_network(network, trt)
    specs = check_inputs(network, inputs)
    config = builder.create_builder_config()
    apply_build_options(options, config, trt)
    if options.profiling_verbosity is None:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the plan is logged only at DETAILED
    add_profile(builder, network, config, specs)
    if options.timing_cache_path is not None:
        load_timing_cache(config, options.timing_cache_path)
    logger = getattr(builder, "logger", None)
    since = len(getattr(logger, "messages", []))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise _build_failure(network, logger, since)
    if options.timing_cache_path is not None:
        save_timing_cache(config, options.timing_cache_path)
    plan = None
    messages = getattr(logger, "messages", [])[since:]
    if layers_message(messages) is not None:
        library = f"{trt_api.library_name()} {trt_api.library_version()}"
        plan = plan_from_build_log(messages, opt_batch(inputs) if inputs else 1, library)
        plan = replace(plan, layers=attribute_nodes(plan.layers, _network_layer_nodes(network)))
    return bytes(memoryview(serialized)), plan


def _network_layer_nodes(network: Any) -> dict[str, str]:
    """Network layer (and tensor) names -> the FX node each was named after."""
    out: dict[str, str] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = node_name_of_layer(layer.name)
        out[layer.name] = node
        for j in range(layer.num_outputs):
            out.setdefault(layer.get_output(j).name, node)
    return out


def _build_failure(network: Any, logger: Any, since: int) -> EngineBuildError:
    """The error for a refused build, quoting what TensorRT logged since message ``since``."""
    errors = logger.errors(since) if hasattr(logger, "errors") else []
    detail = (
        ("\n  - " + "\n  - ".join(errors))
        if errors
        else (
            " (create the builder with fx2trt_pipeline.engine.engine_builder.create_builder() to see "
            "TensorRT's messages here; they were logged to the builder's own logger)"
        )
    )
    return EngineBuildError(
        f"TensorRT ({trt_api.library_name()} {trt_api.library_version()}) could not build "
        f"the network ({network.num_layers} layers); TensorRT said:{detail}"
    )


def build_engine(
    qgm: torch.fx.GraphModule,
    inputs: Sequence[InputSpec | torch.Tensor],
    path: str | Path,
    *,
    options: BuildOptions | None = None,
    output_names: Sequence[str] | None = None,
    quant_state_hash: str | None = None,
) -> EngineArtifact:
    """Convert a quantized GraphModule, build the engine and write it with its metadata.

    Args:
        qgm: the reference-quantized GraphModule (``fx2trt_pipeline.quantize`` output).
        inputs: one InputSpec per graph input, in placeholder order (dynamic ones get a profile), or
            example tensors (static shapes, named after the placeholders), as torch_tensorrt accepts.
        path: engine file to write; the sidecar goes to ``<path>.json``.
        options: build settings (``None``: TensorRT defaults).
        output_names: names for the engine outputs, in graph output order (``None``: the converter's).
        quant_state_hash: digest of the quantization state; ``None`` takes the quantizer's
            ``QuantState.digest()`` attached to ``qgm``, or else hashes ``qgm.state_dict()`` (scales and
            int8 weights) with :func:`hash_quant_state`.

    Returns:
        The written :class:`EngineArtifact` (metadata records network and build seconds, engine size).

    Raises:
        UnsupportedOpsError / ConversionError: from the converters.
        EngineBuildError: TensorRT refused the network or the files could not be written.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
        >>> x = torch.randn(2, 3, 16, 16)
        >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
        >>> art = build_engine(qgm, [InputSpec("x", (2, 3, 16, 16))], "model.plan",
        ...                    options=BuildOptions(builder_optimization_level=3))
        >>> art.metadata["build_options"]["builder_optimization_level"], art.metadata["inputs"][0]["shape"]
        (3, [2, 3, 16, 16])
    """
    from fx2trt_pipeline.network.inputs import as_input_specs
    from fx2trt_pipeline.network.network import network_from_graph_module  # heavy: converters register on import

    inputs = as_input_specs(qgm, inputs)  # example tensors become static specs named after the placeholders
    start = time.perf_counter()
    # Our builder, so that a refused build quotes TensorRT's own messages (see make_logger).
    builder, network, ctx = network_from_graph_module(
        qgm, inputs, builder=create_builder(), output_names=list(output_names) if output_names is not None else None
    )
    built = engine_from_network(builder, network, inputs, options, network_seconds=time.perf_counter() - start)
    del ctx  # the converter context keeps weight arrays alive until the build has copied them
    return save_engine(
        built.data, path, {**built.metadata, **model_metadata(qgm, options, quant_state_hash)}, built.plan
    )


def plan_at_opt_shape(
    qgm: torch.fx.GraphModule,
    inputs: Sequence[InputSpec],
    options: BuildOptions | None = None,
    output_names: Sequence[str] | None = None,
) -> EnginePlan | None:
    """TensorRT's plan of ``qgm`` converted and built with every input static at its profile's opt shape.

    For a model that is only planned, not built (placement candidates, the float reference). An engine's own
    plan comes with :func:`engine_from_network`, from the network it was built from.
    """
    from fx2trt_pipeline.network.network import network_from_graph_module

    static = [InputSpec(s.name, s.example_shape(), s.dtype) for s in inputs]
    builder, network, ctx = network_from_graph_module(
        qgm, static, builder=create_builder(), output_names=list(output_names) if output_names is not None else None
    )
    _, plan = engine_and_plan_from_network(builder, network, static, options)
    del ctx
    return plan if plan is None else _at_opt_shape(plan, inputs)


def _at_opt_shape(plan: EnginePlan, inputs: Sequence[InputSpec]) -> EnginePlan:
    shapes = [list(s.example_shape()) for s in inputs]
    note = f"dims at the optimization profile's opt shape {shapes}, from a build at that shape"
    return replace(plan, notes=(*plan.notes, note))


def _network_plan_at_opt_shape(
    builder: Any, network: Any, inputs: Sequence[InputSpec], options: BuildOptions | None
) -> EnginePlan | None:
    """The plan of ``network`` built with its dynamic inputs set to their opt shapes; the shapes are put back.

    A dynamic-shape plan logs every dynamic dim as -1, also those that fold the batch into another dim (a
    transformer's linears over batch x tokens show ``(-1, 768)``), so no single batch resolves its bytes and MACs.
    The same network built at the opt shape gives exact dims; on TensorRT-RTX, whose kernels are compiled per
    shape at run time, that is also the plan of an engine call at the opt shape.
    """
    dynamic = {s.name: s for s in inputs if s.is_dynamic}
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    saved = {t.name: tuple(t.shape) for t in tensors if t.name in dynamic}
    try:
        for tensor in tensors:
            if tensor.name in dynamic:
                tensor.shape = dynamic[tensor.name].example_shape()
        static = [InputSpec(s.name, s.example_shape(), s.dtype) for s in inputs]
        _, plan = engine_and_plan_from_network(builder, network, static, options)
    finally:
        for tensor in tensors:
            if tensor.name in saved:
                tensor.shape = saved[tensor.name]
    return plan if plan is None else _at_opt_shape(plan, inputs)


@dataclass(frozen=True)
class BuiltEngine:
    """A serialized engine in hand, before anything is written.

    Attributes:
        data: the engine bytes (hand them to :func:`save_engine`, a Triton repository, a service).
        metadata: the sidecar fields read from the network (:func:`network_io_metadata`) and ``build``
            (network and build seconds, engine bytes).
        plan: TensorRT's plan of the engine (at the opt shape for dynamic inputs), or None when not logged.
    """

    data: bytes
    metadata: dict[str, Any]
    plan: EnginePlan | None


def engine_from_network(
    builder: Any,
    network: Any,
    inputs: Sequence[InputSpec],
    options: BuildOptions | None = None,
    *,
    network_seconds: float | None = None,
) -> BuiltEngine:
    """Build ``network`` into an engine: its bytes, its sidecar's network fields and TensorRT's plan.

    The network is the one serialized: convert once with ``network_from_graph_module`` and pass the result
    here (the caller keeps the conversion context alive until this returns). For dynamic inputs the plan comes
    from the same network built again at the profile's opt shape (its input shapes are restored afterwards).

    Args:
        builder, network, inputs, options: as for :func:`engine_bytes_from_network`.
        network_seconds: how long the conversion took, recorded in the sidecar's ``build`` fields.

    Example:
        >>> from fx2trt_pipeline import trt_api
        >>> trt = trt_api.get_trt()
        >>> builder = create_builder()
        >>> network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        >>> x = network.add_input("x", trt.float32, (-1, 4))
        >>> network.mark_output(network.add_activation(x, trt.ActivationType.RELU).get_output(0))
        >>> built = engine_from_network(builder, network, [InputSpec.dynamic_batch("x", (4,), 1, 2, 8)])
        >>> built.metadata["build"]["engine_bytes"] == len(built.data), tuple(network.get_input(0).shape)
        (True, (-1, 4))
    """
    start = time.perf_counter()
    data, plan = engine_and_plan_from_network(builder, network, inputs, options)
    timings = {
        "build_seconds": round(time.perf_counter() - start, 4),
        "engine_bytes": len(data),
        "library": f"{trt_api.library_label()} ({trt_api.build_library_reason()})",
    }
    if network_seconds is not None:
        timings = {"network_seconds": round(network_seconds, 4), **timings}
    metadata = {**network_io_metadata(network, inputs), "build": timings}
    if plan is not None and any(spec.is_dynamic for spec in inputs):
        plan = _network_plan_at_opt_shape(builder, network, inputs, options)
    return BuiltEngine(data, metadata, plan)
