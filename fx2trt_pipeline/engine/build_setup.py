"""What a build checks and sets up before TensorRT builds: the network, the InputSpecs, one profile, the cache.

::

    check_network(network)              STRONGLY_TYPED, outputs marked
    check_inputs(network, inputs)       every InputSpec matches a network input (all mismatches at once)
    add_profile(...)                    one optimization profile for the dynamic inputs (trtexec --minShapes...)
    load_timing_cache / save_timing_cache   BuildOptions.timing_cache_path, round-tripped atomically

Used by :func:`fx2trt_pipeline.engine.engine_builder.engine_and_plan_from_network`.

Example:
    >>> from fx2trt_pipeline import trt_api
    >>> from fx2trt_pipeline.engine.engine_builder import create_builder
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> trt = trt_api.get_trt()
    >>> network = create_builder().create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    >>> x = network.add_input("x", trt.float32, (-1, 4))
    >>> sorted(check_inputs(network, [InputSpec.dynamic_batch("x", (4,), 1, 2, 8)]))
    ['x']
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fx2trt_pipeline.atomic_io import atomic_write_bytes
from fx2trt_pipeline.errors import EngineBuildError
from fx2trt_pipeline.network.inputs import InputSpec
from fx2trt_pipeline.trt_types import trt_dtype_name

_LOG = logging.getLogger("fx2trt_pipeline.tensorrt")


def is_strongly_typed(network: Any, trt: Any) -> bool:
    """True when ``network`` was created with the STRONGLY_TYPED flag."""
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    if hasattr(network, "get_flag"):
        return bool(network.get_flag(flag))
    return bool(int(getattr(network, "flags", 0)) & (1 << int(flag)))


def check_inputs(network: Any, inputs: Sequence[InputSpec]) -> dict[str, InputSpec]:
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


def add_profile(builder: Any, network: Any, config: Any, specs: Mapping[str, InputSpec]) -> None:
    """Add one optimization profile with the min/opt/max shapes of every dynamic input (none if all are static)."""
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


def load_timing_cache(config: Any, path: Path | None) -> None:
    """Give ``config`` the timing cache stored at ``path`` (a new one when absent or made by another TensorRT)."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    with warnings.catch_warnings():
        # TensorRT-RTX deprecates the timing cache as a no-op; the file still round-trips.
        warnings.simplefilter("ignore", DeprecationWarning)
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            _LOG.warning("Timing cache %s does not match this TensorRT version/GPU; starting a new one", path)
            config.set_timing_cache(config.create_timing_cache(b""), False)


def save_timing_cache(config: Any, path: Path) -> None:
    """Write ``config``'s timing cache to ``path`` (atomically; nothing when it is empty)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cache = config.get_timing_cache()
        blob = bytes(cache.serialize()) if cache is not None else b""
    if blob:
        atomic_write_bytes(path, blob)


def check_network(network: Any, trt: Any) -> None:
    """Refuse what TensorRT would refuse later with a vaguer message: no strong typing, no outputs."""
    if not is_strongly_typed(network, trt):
        raise EngineBuildError(
            "The network is not STRONGLY_TYPED. Create it with "
            "builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)); "
            "INT8 comes from explicit Q/DQ layers, there are no INT8/FP16 builder flags."
        )
    if network.num_outputs == 0:
        raise EngineBuildError("The network has no outputs; mark them with network.mark_output(tensor).")


__all__ = [
    "add_profile",
    "check_inputs",
    "check_network",
    "is_strongly_typed",
    "load_timing_cache",
    "save_timing_cache",
]
