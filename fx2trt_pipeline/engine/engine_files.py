"""The engine file and its sidecar: what the sidecar records and how both are written (atomically, once).

::

    network_io_metadata(network, inputs)      inputs (with profiles), outputs, layer count: read from the network
    model_metadata(qgm, options)              the quantized model's digest and the build options
    save_engine(engine_bytes, path, metadata, plan)
        -> <path> + <path>.json (+ <path>.layers.json): integrity and library fields computed from the bytes

Example:
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> spec = InputSpec.dynamic_batch("x", (3, 8, 8), 1, 2, 4)
    >>> sorted(spec.to_dict())[:3]
    ['dtype', 'max_shape', 'min_shape']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import metadata as _pkg_metadata
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline.atomic_io import atomic_open
from fx2trt_pipeline.engine.artifact import (
    EngineArtifact,
    check_engine_header,
    engine_metadata,
    hash_quant_state,
    sidecar_path,
)
from fx2trt_pipeline.engine.engine_plan import EnginePlan, plan_path
from fx2trt_pipeline.engine.options import BuildOptions
from fx2trt_pipeline.errors import ConfigError, EngineBuildError, EngineLoadError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.trt_types import torch_dtype, trt_dtype_name


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
        >>> from fx2trt_pipeline.engine.engine_builder import create_builder, engine_bytes_from_network
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


def model_metadata(
    qgm: torch.fx.GraphModule, options: BuildOptions | None = None, quant_state_hash: str | None = None
) -> dict[str, Any]:
    """The sidecar fields that name what was built: the quantized model's digest and the build options.

    ``quant_state_hash`` ``None`` takes the quantizer's ``QuantState.digest()`` attached to ``qgm`` (config,
    placement, amax: it names the model the way ``save_quant_state`` does), or else hashes ``qgm.state_dict()``
    (scales and int8 weights) with :func:`hash_quant_state`.
    """
    if quant_state_hash is not None:
        state_hash, source = quant_state_hash, "caller"
    else:
        try:
            from fx2trt_pipeline.quantize.state import get_quant_state

            state_hash, source = "sha256:" + get_quant_state(qgm).digest(), "QuantState.digest"
        except (ImportError, ConfigError):  # no quantizer state attached to this graph
            state_hash, source = hash_quant_state(qgm.state_dict()), "state_dict"
    options = options if options is not None else BuildOptions()
    return {"quant_state_hash": state_hash, "quant_state_hash_source": source, "build_options": options.to_dict()}


__all__ = ["model_metadata", "network_io_metadata", "save_engine"]
