"""A Triton Inference Server model repository: ``<repo>/<model>/config.pbtxt`` + ``1/model.plan``.

How the engine's optimization profile maps onto Triton's batching::

    every input and output has a dynamic leading dim, profile min batch 1, max batch B
        -> max_batch_size: B, dims without the batch dim (other dynamic dims -1),
           dynamic_batching { preferred_batch_size: [opt batch] }
    anything else (static shapes, min batch > 1, a static output batch dim)
        -> max_batch_size: 0 (Triton batching off), full dims with -1 for every dynamic dim

Triton's TensorRT backend sends any batch from 1 to ``max_batch_size``, so batching is declared only
when the profile covers exactly that range. The plan must be deserialised by the same TensorRT
library (and version) that built it: the config's comment states the engine's deployment target
(:func:`~fx2trt_pipeline.engine.compatibility.deployment_target`). Triton's standard ``tensorrt_plan``
backend links datacenter TensorRT, so it serves TensorRT plans only; a TensorRT-RTX plan needs a server
built on TensorRT-RTX.

Example:
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> meta = {"inputs": [InputSpec.dynamic_batch("images", (3, 8, 8), 1, 4, 16).to_dict()],
    ...         "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}]}
    >>> cfg = triton_model_config("resnet", meta)
    >>> cfg["max_batch_size"], cfg["input"][0]["dims"]
    (16, [3, 8, 8])
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fx2trt_pipeline.atomic_io import atomic_write_bytes, atomic_write_text
from fx2trt_pipeline.engine.compatibility import deployment_target
from fx2trt_pipeline.errors import ConfigError

#: Engine tensor dtypes (as in the sidecar) -> Triton data types.
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}


class _Enum(str):
    """A protobuf enum value: written without quotes."""


def triton_model_name(name: str) -> str:
    """A directory-safe Triton model name (letters, digits, ``_``, ``-``, ``.``).

    Example:
        >>> triton_model_name("demo detector/v2")
        'demo_detector_v2'
    """
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")
    if not clean:
        raise ConfigError(f"Model name {name!r} has no usable characters for a Triton model directory")
    return clean


def _dtype(value: str, tensor: str) -> str:
    key = str(value).replace("torch.", "")
    if key not in TRITON_DTYPES:
        raise ConfigError(
            f"Tensor {tensor!r} has dtype {value!r}, which Triton cannot serve; supported: {sorted(TRITON_DTYPES)}"
        )
    return _Enum(TRITON_DTYPES[key])


def _batching(inputs: list[Mapping[str, Any]], outputs: list[Mapping[str, Any]]) -> tuple[int, int] | None:
    """``(max batch, opt batch)`` when Triton may batch along dim 0, else ``None`` (see module docstring)."""
    if not inputs:
        return None
    max_batches, opt_batches = [], []
    for spec in inputs:
        shape = list(spec["shape"])
        if not shape or shape[0] != -1 or spec.get("min_shape") is None:
            return None
        if int(spec["min_shape"][0]) != 1:
            return None
        max_batches.append(int(spec["max_shape"][0]))
        opt_batches.append(int(spec["opt_shape"][0]))
    if any(not out["shape"] or int(out["shape"][0]) != -1 for out in outputs):
        return None
    max_batch = min(max_batches)
    return max_batch, min(min(opt_batches), max_batch)


def triton_model_config(
    name: str, metadata: Mapping[str, Any], max_queue_delay_microseconds: int = 100, instance_count: int = 1
) -> dict[str, Any]:
    """The model configuration (as a dict mirroring ``config.pbtxt``) for an engine's sidecar metadata.

    Args:
        name: Triton model name (also the directory name).
        metadata: the engine sidecar (``inputs`` with profiles, ``outputs`` with shapes and dtypes).
        max_queue_delay_microseconds: how long Triton may wait to form a batch.
        instance_count: engine instances per GPU.

    Raises:
        ConfigError: a tensor dtype Triton cannot serve, or metadata without inputs/outputs.
    """
    inputs, outputs = list(metadata.get("inputs", [])), list(metadata.get("outputs", []))
    if not inputs or not outputs:
        raise ConfigError("The engine metadata lists no inputs or outputs; cannot write a Triton config")
    batching = _batching(inputs, outputs)
    skip = 1 if batching else 0

    def tensor(entry: Mapping[str, Any]) -> dict[str, Any]:
        dims = [int(d) for d in list(entry["shape"])[skip:]]
        return {
            "name": entry["name"],
            "data_type": _dtype(entry.get("dtype", "float32"), entry["name"]),
            "dims": dims,
        }

    config: dict[str, Any] = {
        "name": triton_model_name(name),
        "platform": "tensorrt_plan",
        "max_batch_size": batching[0] if batching else 0,
        "input": [tensor(e) for e in inputs],
        "output": [tensor(e) for e in outputs],
        "instance_group": [{"count": int(instance_count), "kind": _Enum("KIND_GPU")}],
    }
    if batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": sorted({batching[1], batching[0]}),
            "max_queue_delay_microseconds": int(max_queue_delay_microseconds),
        }
    return config


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, _Enum)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render(obj: Mapping[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for key, value in obj.items():
        if isinstance(value, Mapping):
            lines += [f"{pad}{key} {{", *_render(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines += [
                    f"{pad}  {{",
                    *_render(item, indent + 2),
                    f"{pad}  }}" + ("," if i < len(value) - 1 else ""),
                ]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def render_pbtxt(config: Mapping[str, Any], comment: str = "") -> str:
    """Protobuf text format of a model configuration dict (``#`` comment lines first).

    Example:
        >>> print(render_pbtxt({"name": "m", "max_batch_size": 0, "input": [{"name": "x", "dims": [2]}]}))
        name: "m"
        max_batch_size: 0
        input [
          {
            name: "x"
            dims: [ 2 ]
          }
        ]
        <BLANKLINE>
    """
    head = [f"# {line}" for line in comment.splitlines()]
    return "\n".join(head + _render(config, 0)) + "\n"


def write_triton_repository(
    repo: Path,
    name: str,
    engine_bytes: bytes,
    metadata: Mapping[str, Any],
    max_queue_delay_microseconds: int = 100,
    instance_count: int = 1,
) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.plan`` atomically; returns the dir.

    Example:
        >>> model_dir = write_triton_repository(Path("out/triton"), "r18", plan, meta)  # doctest: +SKIP
        >>> # tritonserver --model-repository out/triton
    """
    config = triton_model_config(name, metadata, max_queue_delay_microseconds, instance_count)
    model_dir = Path(repo) / config["name"]
    # The deployment target, wrapped: standard Triton (tensorrt_plan) serves datacenter TensorRT plans only.
    comment = "Generated by fx2trt-pipeline.\n" + textwrap.fill(deployment_target(metadata), 100)
    atomic_write_bytes(model_dir / "1" / "model.plan", engine_bytes)
    atomic_write_text(model_dir / "config.pbtxt", render_pbtxt(config, comment))
    return model_dir


__all__ = [
    "TRITON_DTYPES",
    "render_pbtxt",
    "triton_model_config",
    "triton_model_name",
    "write_triton_repository",
]
