"""Build a serialized TensorRT engine from a network and write it with its metadata, in small steps.

::

    network_from_graph_module(qgm, inputs)         (fx2trt_pipeline.network.network)
        -> engine_bytes_from_network(builder, network, inputs, options)   one profile, options, build
        -> save_engine(engine_bytes, path, metadata)                      engine + <engine>.json, atomic
    build_engine(qgm, inputs, path, ...) chains the three and returns an EngineArtifact.

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

import json
import logging
import time
import warnings
from dataclasses import replace
from importlib import metadata as _pkg_metadata
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.artifact import (
    EngineArtifact,
    check_engine_header,
    engine_metadata,
    hash_quant_state,
    sidecar_path,
)
from fx2trt_pipeline.atomic_io import atomic_open, atomic_write_bytes
from fx2trt_pipeline.engine.engine_plan import EnginePlan, attribute_nodes, plan_path
from fx2trt_pipeline.engine.options import BuildOptions, apply_build_options
from fx2trt_pipeline.engine.plan_parse import layers_message, opt_batch, plan_from_build_log
from fx2trt_pipeline.network.context import node_name_of_layer
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.errors import ConfigError, EngineBuildError, EngineLoadError
from fx2trt_pipeline.trt_types import make_logger, torch_dtype, trt_dtype_name

_LOG = logging.getLogger("fx2trt_pipeline.tensorrt")


def create_builder(logger: Any | None = None) -> Any:
    """A ``trt.Builder`` with a capturing logger that keeps VERBOSE messages (the engine plan is one of them)."""
    return trt_api.get_trt().Builder(logger if logger is not None else make_logger("VERBOSE"))


def _is_strongly_typed(network: Any, trt: Any) -> bool:
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    if hasattr(network, "get_flag"):
        return bool(network.get_flag(flag))
    return bool(int(getattr(network, "flags", 0)) & (1 << int(flag)))


def _check_inputs(network: Any, inputs: Sequence[InputSpec]) -> dict[str, InputSpec]:
    """Match InputSpecs to network inputs by name; every mismatch is reported at once."""
    specs = {spec.name: spec for spec in inputs}
    problems: list[str] = []
    net_names = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        net_names.append(tensor.name)
        shape = tuple(int(d) for d in tensor.shape)
        spec = specs.get(tensor.name)
        if spec is None:
            if -1 in shape:
                problems.append(
                    f"network input {tensor.name!r} has dynamic shape {shape} but no InputSpec gives "
                    "its min/opt/max shapes"
                )
            continue
        if len(shape) != len(spec.shape) or any(n != -1 and n != s for n, s in zip(shape, spec.shape)):
            problems.append(f"input {tensor.name!r}: network shape {shape} does not match InputSpec {spec.shape}")
        elif -1 in shape and not spec.is_dynamic:
            problems.append(
                f"input {tensor.name!r}: network shape {shape} is dynamic but the InputSpec is static "
                f"{spec.shape}; give min/opt/max shapes (InputSpec.dynamic_batch)"
            )
        dtype = trt_dtype_name(tensor.dtype)
        if dtype != str(spec.dtype).replace("torch.", ""):
            problems.append(f"input {tensor.name!r}: network dtype {dtype} but InputSpec dtype {spec.dtype}")
    for name in specs:
        if name not in net_names:
            problems.append(f"InputSpec {name!r} names no network input (network inputs: {net_names})")
    if problems:
        raise EngineBuildError("Network inputs and InputSpecs disagree:\n  - " + "\n  - ".join(problems))
    return specs


def _add_profile(builder: Any, network: Any, config: Any, specs: Mapping[str, InputSpec]) -> None:
    # One profile covering every dynamic input, like trtexec --minShapes/--optShapes/--maxShapes.
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        spec = specs[tensor.name]
        profile.set_shape(tensor.name, spec.min_shape, spec.opt_shape, spec.max_shape)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile for {[t.name for t in dynamic]}")


def _load_timing_cache(config: Any, path: Path | None) -> None:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    with warnings.catch_warnings():
        # TensorRT-RTX deprecates the timing cache as a no-op; the file still round-trips.
        warnings.simplefilter("ignore", DeprecationWarning)
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            _LOG.warning("Timing cache %s does not match this TensorRT version/GPU; starting a new one", path)
            config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: Any, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cache = config.get_timing_cache()
        blob = bytes(cache.serialize()) if cache is not None else b""
    if blob:
        atomic_write_bytes(path, blob)


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
    _check_network(network, trt)
    specs = _check_inputs(network, inputs)
    config = builder.create_builder_config()
    apply_build_options(options, config, trt)
    if options.profiling_verbosity is None:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the plan is logged only at DETAILED
    _add_profile(builder, network, config, specs)
    if options.timing_cache_path is not None:
        _load_timing_cache(config, options.timing_cache_path)
    logger = getattr(builder, "logger", None)
    since = len(getattr(logger, "messages", []))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise _build_failure(network, logger, since)
    if options.timing_cache_path is not None:
        _save_timing_cache(config, options.timing_cache_path)
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


def _check_network(network: Any, trt: Any) -> None:
    """Refuse what TensorRT would refuse later with a vaguer message: no strong typing, no outputs."""
    if not _is_strongly_typed(network, trt):
        raise EngineBuildError(
            "The network is not STRONGLY_TYPED. Create it with "
            "builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)); "
            "INT8 comes from explicit Q/DQ layers, there are no INT8/FP16 builder flags."
        )
    if network.num_outputs == 0:
        raise EngineBuildError("The network has no outputs; mark them with network.mark_output(tensor).")


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


def network_io_metadata(network: Any, inputs: Sequence[InputSpec]) -> dict[str, Any]:
    """The ``inputs``/``outputs``/``num_layers`` part of the sidecar, read from the network itself."""
    specs = {s.name: s for s in inputs}
    ins = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        spec = specs.get(tensor.name) or InputSpec(tensor.name, tuple(tensor.shape), torch_dtype(tensor.dtype))
        ins.append(spec.to_dict())
    outs = [
        {"name": t.name, "dtype": trt_dtype_name(t.dtype), "shape": [int(d) for d in t.shape]}
        for t in (network.get_output(i) for i in range(network.num_outputs))
    ]
    return {"inputs": ins, "outputs": outs, "num_layers": int(network.num_layers)}


def _producer() -> dict[str, str]:
    try:
        version = _pkg_metadata.version("fx2trt-pipeline")
    except _pkg_metadata.PackageNotFoundError:
        version = "unknown"
    return {"fx2trt_pipeline": version, "torch": torch.__version__}


def save_engine(
    engine_bytes: bytes, path: str | Path, metadata: Mapping[str, Any] | None = None, plan: EnginePlan | None = None
) -> EngineArtifact:
    """Write an engine and its ``<path>.json`` sidecar (and ``<path>.layers.json`` plan) atomically.

    Integrity and library fields (size, sha256, header, library version, timestamp) are computed from
    ``engine_bytes``; ``metadata`` adds the rest (see :func:`network_io_metadata`). Both files are fully
    written to temporary files before either replaces an existing one, so a failure leaves no partial
    file; the bytes are checked to be an engine of the library in use before anything is written.

    Raises:
        EngineBuildError: ``engine_bytes`` is not an engine of the library in use, or writing failed.

    Example:
        >>> from fx2trt_pipeline import trt_api
        >>> trt = trt_api.get_trt()
        >>> builder = create_builder()
        >>> network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        >>> x = network.add_input("x", trt.float32, (1, 4))
        >>> network.mark_output(network.add_activation(x, trt.ActivationType.RELU).get_output(0))
        >>> data = engine_bytes_from_network(builder, network, [InputSpec("x", (1, 4))])
        >>> art = save_engine(data, "out/model.plan", {"quant_state_hash": "sha256:..."})
        >>> art.metadata_path.name, art.metadata["quant_state_hash"]
        ('model.plan.json', 'sha256:...')
    """
    path = Path(path)
    data = bytes(engine_bytes)
    try:
        check_engine_header(data, "The bytes given to save_engine")
    except EngineLoadError as exc:
        raise EngineBuildError(str(exc)) from None
    extra = dict(metadata or {})
    if plan is not None:
        extra["plan"] = {"file": plan_path(path).name, "source": plan.source, **plan.summary()}
    meta = engine_metadata(data, {"producer": _producer(), **extra})
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"  # serialise first: a TypeError writes nothing
    plan_text = json.dumps(plan.to_dict(), indent=1) + "\n" if plan is not None else ""
    try:
        with atomic_open(path) as engine_file, atomic_open(sidecar_path(path)) as meta_file:
            engine_file.write(data)
            meta_file.write(text.encode("utf-8"))
            if plan is not None:
                with atomic_open(plan_path(path)) as plan_file:
                    plan_file.write(plan_text.encode("utf-8"))
    except OSError as exc:
        raise EngineBuildError(f"Could not write engine {path} and its sidecar: {exc}") from exc
    return EngineArtifact.from_metadata(path, meta)


def _quant_state_hash(qgm: torch.fx.GraphModule, given: str | None) -> tuple[str, str]:
    # Prefer the quantizer's own digest (config, placement, amax): it names the quantized model the way
    # save_quant_state does; a hand-made graph falls back to its buffers (scales and int8 weights).
    if given is not None:
        return given, "caller"
    try:
        from fx2trt_pipeline.quantize.state import get_quant_state

        return "sha256:" + get_quant_state(qgm).digest(), "QuantState.digest"
    except (ImportError, ConfigError):  # no quantizer state attached to this graph
        return hash_quant_state(qgm.state_dict()), "state_dict"


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

    inputs = as_input_specs(qgm, inputs)  # example tensors become static specs named after the placeholders
    options = options if options is not None else BuildOptions()
    data, meta, plan = _timed_engine(qgm, inputs, options, output_names)
    state_hash, source = _quant_state_hash(qgm, quant_state_hash)
    meta.update({"quant_state_hash": state_hash, "quant_state_hash_source": source, "build_options": options.to_dict()})
    return save_engine(data, path, meta, plan)


def plan_at_opt_shape(
    qgm: torch.fx.GraphModule,
    inputs: Sequence[InputSpec],
    options: BuildOptions | None = None,
    output_names: Sequence[str] | None = None,
) -> EnginePlan | None:
    """TensorRT's plan of ``qgm`` built with every input static at its profile's opt shape.

    A dynamic-shape plan logs every dynamic dim as -1, also those that fold the batch into another dim (a
    transformer's linears over batch x tokens show ``(-1, 768)``), so no single batch resolves its bytes and MACs.
    The same graph built at the opt shape gives exact dims; on TensorRT-RTX, whose kernels are compiled per shape
    at run time, that is also the plan of an engine call at the opt shape.
    """
    from fx2trt_pipeline.network.network import network_from_graph_module

    static = [InputSpec(s.name, s.example_shape(), s.dtype) for s in inputs]
    builder, network, ctx = network_from_graph_module(
        qgm, static, builder=create_builder(), output_names=list(output_names) if output_names is not None else None
    )
    _, plan = engine_and_plan_from_network(builder, network, static, options)
    del ctx
    if plan is None:
        return None
    shapes = [list(s.example_shape()) for s in inputs]
    note = f"dims at the optimization profile's opt shape {shapes}, from a build at that shape"
    return replace(plan, notes=(*plan.notes, note))


def _timed_engine(
    qgm: torch.fx.GraphModule, inputs: Sequence[InputSpec], options: BuildOptions, output_names: Sequence[str] | None
) -> tuple[bytes, dict[str, Any], EnginePlan | None]:
    """Convert and build ``qgm``; the engine bytes, the sidecar's network I/O and timing fields, the plan."""
    from fx2trt_pipeline.network.network import network_from_graph_module  # heavy: converters register on import

    start = time.perf_counter()
    # Our builder, so that a refused build quotes TensorRT's own messages (see make_logger).
    builder, network, ctx = network_from_graph_module(
        qgm,
        inputs,
        builder=create_builder(),
        output_names=list(output_names) if output_names is not None else None,
    )
    network_seconds = time.perf_counter() - start
    start = time.perf_counter()
    data, plan = engine_and_plan_from_network(builder, network, inputs, options)
    build_seconds = time.perf_counter() - start
    meta = network_io_metadata(network, inputs)
    del ctx  # the converter context keeps weight arrays alive until the build has copied them
    meta["build"] = {
        "network_seconds": round(network_seconds, 4),
        "build_seconds": round(build_seconds, 4),
        "engine_bytes": len(data),
        "library": f"{trt_api.library_label()} ({trt_api.build_library_reason()})",
    }
    if plan is not None and any(spec.is_dynamic for spec in inputs):
        plan = plan_at_opt_shape(qgm, inputs, options, output_names)
    return data, meta, plan
