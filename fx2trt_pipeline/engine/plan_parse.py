"""Read TensorRT's engine plan from what TensorRT prints: the builder's log or the engine inspector's JSON.

* **Builder log** (any machine, TensorRT-RTX included): with ``profiling_verbosity = DETAILED`` and a logger
  that keeps VERBOSE messages, the build logs one message that starts with ``Layers:`` and lists each engine
  layer as ``Name: ..., LayerType: ..., Inputs: [ { Name: ..., Dimensions: [...], ..., Datatype: Int8,
  Format: ... }], Constants: [...], Outputs: [...], TacticName: ..., StreamId: 0, Metadata: ...``.
  On TensorRT-RTX this is the ahead-of-time plan (kernels are compiled on the GPU at run time).
* **Inspector JSON** (where the engine deserializes: a GPU host, datacenter TensorRT included):
  ``engine.create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)`` gives
  ``{"Layers": [{"Name", "LayerType", "Inputs": [{"Name", "Dimensions", "Format/Datatype"}], "Outputs",
  "Weights": {"Type", "Count"}, "Bias", "TacticName", ...}]}``.

Example:
    >>> text = ("Layers:\\nName: conv_U1_myl0_1, LayerType: correlation, Inputs: [ { Name: x, Dimensions: [-1,8,4,4], "
    ...         "Strides: [128,1,32,8], StrideOrder: [3,0,2,1], Datatype: Int8, Format: (NHWC) Channel major }], "
    ...         "Constants: [], Outputs: [ { Name: y, Dimensions: [-1,8,4,4], Strides: [128,1,32,8], "
    ...         "StrideOrder: [3,0,2,1], Datatype: Float, Format: (NHWC) Channel major format }], TacticName: t, "
    ...         "StreamId: 0, Metadata: ")
    >>> plan = plan_from_build_log([("VERBOSE", text)], batch=4)
    >>> plan.layers[0].type, plan.layers[0].inputs[0].shape(plan.batch), plan.layers[0].outputs[0].dtype
    ('correlation', (4, 8, 4, 4), 'Float')
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fx2trt_pipeline.engine.engine_plan import EnginePlan, PlanLayer, PlanTensor
from fx2trt_pipeline.errors import EngineBuildError

LOG_NOTE = (
    "TensorRT-RTX ahead-of-time plan from the builder's log: layer types, dtypes and bytes as TensorRT planned "
    "them; kernels are compiled on the GPU at run time, so it is no timing"
)
INSPECTOR_NOTE = "the engine's own layer information (IEngineInspector)"

_SECTIONS = ("Inputs", "Constants", "Outputs")
_TENSOR = re.compile(
    r"\{\s*Name:\s*(?P<name>.*?),\s*Dimensions:\s*\[(?P<dims>[^\]]*)\]"
    r"(?:,\s*Strides:\s*\[[^\]]*\])?(?:,\s*StrideOrder:\s*\[[^\]]*\])?"
    r",\s*Datatype:\s*(?P<dtype>\w+)(?:,\s*Format:\s*(?P<format>[^}]*?))?\s*\}"
)
#: Inspector "Format/Datatype" strings name the dtype in capitals; the log's spelling is the plan's.
_FORMAT_DTYPES = (
    ("FP32", "Float"),
    ("FLOAT", "Float"),
    ("FP16", "Half"),
    ("HALF", "Half"),
    ("BF16", "BFloat16"),
    ("UINT8", "UInt8"),  # before INT8, which it contains
    ("INT8", "Int8"),
    ("FP8", "FP8"),
    ("INT32", "Int32"),
    ("INT64", "Int64"),
    ("BOOL", "Bool"),
)


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.replace(" ", "").split(",") if d)


def _section(line: str, key: str, next_key: str) -> str:
    start = line.find(f" {key}: [")
    end = line.find(f"], {next_key}:", start)
    if start < 0 or end < 0:
        return ""
    return line[start + len(key) + 4 : end + 1]


def parse_layer_line(line: str) -> PlanLayer:
    """One ``Name: ..., LayerType: ...`` line of the builder log as a :class:`PlanLayer`.

    Raises:
        EngineBuildError: the line does not have TensorRT's layer-line shape.
    """
    head = re.match(r"Name:\s*(?P<name>.*?),\s*LayerType:\s*(?P<type>[^,]+),", line)
    if head is None:
        raise EngineBuildError(f"Cannot read this engine layer line of TensorRT's log: {line[:200]!r}")
    parts = {}
    for key, next_key in zip(_SECTIONS, (*_SECTIONS[1:], "TacticName")):
        parts[key] = tuple(
            PlanTensor(m["name"].strip(), _dims(m["dims"]), m["dtype"], (m["format"] or "").strip())
            for m in _TENSOR.finditer(_section(line, key, next_key))
        )
    tactic = re.search(r"TacticName:\s*([^,]*)", line)
    return PlanLayer(
        head["name"].strip(),
        head["type"].strip(),
        parts["Inputs"],
        parts["Outputs"],
        parts["Constants"],
        tactic.group(1).strip() if tactic else "",
    )


def layers_message(messages: Iterable[tuple[str, str]]) -> str | None:
    """The builder's ``Layers:`` message (the last one, when several engines were built), or None."""
    found = None
    for _, msg in messages:
        if msg.startswith("Layers:"):
            found = msg
    return found


def plan_from_build_log(messages: Iterable[tuple[str, str]], batch: int = 1, library: str = "") -> EnginePlan:
    """The plan a TensorRT build logged; ``messages`` are ``(severity, text)`` pairs as our logger keeps them.

    Raises:
        EngineBuildError: the log has no ``Layers:`` message (the build ran without DETAILED profiling
            verbosity or the logger dropped VERBOSE messages); the message says which setting to use.
    """
    text = layers_message(messages)
    if text is None:
        raise EngineBuildError(
            "TensorRT's log has no 'Layers:' plan: build with BuildOptions(profiling_verbosity='DETAILED') and a "
            "logger that keeps VERBOSE messages (fx2trt_pipeline.trt_types.make_logger('VERBOSE'))"
        )
    layers = []
    for raw in text.splitlines()[1:]:
        line = raw.strip()
        if not line:
            break  # the layer list ends at the blank line before "I/O Tensors:"
        if line.startswith("Name:"):
            layers.append(parse_layer_line(line))
    return EnginePlan(tuple(layers), int(batch), "builder log", library, (LOG_NOTE,))


def _format_dtype(text: str) -> str:
    upper = text.upper()
    for key, name in _FORMAT_DTYPES:
        if key in upper:
            return name
    return "Float"


def _json_tensor(data: Mapping[str, Any] | str) -> PlanTensor:
    if isinstance(data, str):  # LAYER_NAMES_ONLY / minimal JSON: only names
        return PlanTensor(data, (), "Float")
    fmt = str(data.get("Format/Datatype", data.get("Format", "")))
    dtype = str(data.get("Datatype") or _format_dtype(fmt))
    return PlanTensor(
        str(data.get("Name", "")), _dims(",".join(str(d) for d in data.get("Dimensions", []))), dtype, fmt
    )


def _json_constants(layer: Mapping[str, Any]) -> tuple[PlanTensor, ...]:
    # The inspector gives weights as a type and a count; the kernel's MACs need only its element count.
    out = []
    for key in ("Weights", "Bias"):
        info = layer.get(key)
        if isinstance(info, Mapping) and int(info.get("Count", 0)) > 0:
            dtype = dict(_FORMAT_DTYPES).get(str(info.get("Type", "")).upper(), str(info.get("Type", "Float")))
            count = int(info["Count"])
            out.append(
                PlanTensor(
                    f"{layer.get('Name', '')}.{key.lower()}", (count, 1) if key == "Weights" else (count,), dtype
                )
            )
    return tuple(out)


def plan_from_inspector_json(text: str | Mapping[str, Any], batch: int = 1, library: str = "") -> EnginePlan:
    """The plan from ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    Raises:
        EngineBuildError: the JSON has no ``Layers`` list.
    """
    data = json.loads(text) if isinstance(text, str) else dict(text)
    raw = data.get("Layers")
    if not isinstance(raw, list):
        raise EngineBuildError("The engine inspector's JSON has no 'Layers' list; build with DETAILED verbosity")
    layers = []
    for item in raw:
        if isinstance(item, str):
            layers.append(PlanLayer(item, "unknown"))
            continue
        layers.append(
            PlanLayer(
                str(item.get("Name", "")),
                str(item.get("LayerType", "unknown")),
                tuple(_json_tensor(t) for t in item.get("Inputs", [])),
                tuple(_json_tensor(t) for t in item.get("Outputs", [])),
                _json_constants(item),
                str(item.get("TacticName", "")),
            )
        )
    return EnginePlan(tuple(layers), int(batch), "engine inspector", library, (INSPECTOR_NOTE,))


def opt_batch(input_specs: Sequence[Any]) -> int:
    """The batch the plan's dynamic dims resolve to: the first dynamic input's opt batch (1 if static)."""
    for spec in input_specs:
        if getattr(spec, "is_dynamic", False):
            return int(spec.opt_shape[0])
    return int(input_specs[0].shape[0]) if input_specs and input_specs[0].shape else 1


def plan_from_engine(engine_bytes: bytes, batch: int = 1) -> EnginePlan | None:
    """The plan of a serialized engine from ``IEngineInspector`` (JSON), where the engine deserializes.

    Returns ``None`` where it cannot (no GPU the library supports: ``deserialize_cuda_engine`` returns None on a
    CPU-only machine); the builder-log plan written beside the engine is then the description to use.
    """
    from fx2trt_pipeline import trt_api
    from fx2trt_pipeline.trt_types import make_logger

    trt = trt_api.get_trt()
    runtime = trt.Runtime(make_logger("ERROR"))
    engine = runtime.deserialize_cuda_engine(bytes(engine_bytes))
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return plan_from_inspector_json(text, batch, f"{trt_api.library_name()} {trt_api.library_version()}")


__all__ = [
    "layers_message",
    "opt_batch",
    "parse_layer_line",
    "plan_from_build_log",
    "plan_from_engine",
    "plan_from_inspector_json",
]
