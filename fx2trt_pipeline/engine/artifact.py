"""Engine artifacts: the serialized engine, its ``<engine>.json`` metadata sidecar, and load checks.

An engine file alone says little and fails late: TensorRT refuses a truncated or foreign plan only
inside ``deserialize_cuda_engine``, with a terse log line, and only on a GPU. So every engine is
written with a sidecar (see :func:`engine_metadata` for its fields) and :func:`load_engine_bytes`
checks, before any deserialization, that the file is complete and unchanged (size, sha256), that it
was built by the library in use (name and exact version), and that its header says the same.

Engine header (TensorRT-RTX 1.7.1, measured on plans built here; ``Runtime.engine_header_size`` = 64)::

    offset  size  content
    0       4     magic b"vtrt"
    8       4     u32 = 2 in every plan built here (layout revision, not checked)
    16      8     u64 little-endian: total plan size in bytes (catches truncation without a sidecar)
    24      4     u8 major, minor, patch, build of the library that built it (1, 7, 1, 116); the
                  runtime itself reports this field when versions differ
    28      4     magic b"vtrt" again (start of the engine section)
    32      4     u32 bit mask of target compute capabilities in ComputeCapability enum order:
                  bit 0 SM75, 1 SM80, 2 SM86, 3 SM89, 4 SM120, 5 SM121; bit 6 is set by default
                  builds (0x7e) and by no single target: NVIDIA documents default engines as running
                  on "8.0, 8.6, 8.9, 12.0 and later", so it is recorded as "later".

Datacenter TensorRT plans use another magic and layout that cannot be measured here; for them the
header is recorded but only the sidecar checks apply.

Example:
    >>> from fx2trt_pipeline.engine.artifact import load_engine_bytes
    >>> data, meta = load_engine_bytes("model.plan")   # doctest: +SKIP
    >>> meta["library"], meta["inputs"][0]["name"]     # doctest: +SKIP
    ({'name': 'tensorrt_rtx', 'version': '1.7.1.116'}, 'images')
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.engine.compatibility import GpuInfo, compatibility_fields, engine_library
from fx2trt_pipeline.errors import EngineLoadError
from fx2trt_pipeline.network.inputs import InputSpec

#: Bump when a field changes meaning; readers refuse sidecars with a newer version.
METADATA_FORMAT_VERSION = 1
RTX_MAGIC = b"vtrt"
RTX_HEADER_SIZE = 64
#: Bit i of the header's target mask -> compute capability (TensorRT-RTX 1.7 enum order).
RTX_CC_BITS = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121", "later")

PathLike = Union[str, Path]


def sidecar_path(engine_path: PathLike) -> Path:
    """The metadata file of an engine: ``model.plan`` -> ``model.plan.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


@dataclass(frozen=True)
class EngineHeader:
    """What the first bytes of a TensorRT-RTX plan say (see the module docstring for the layout)."""

    magic: bytes
    plan_size: int
    version: str
    compute_capability_mask: int

    @property
    def compute_capabilities(self) -> list[str]:
        """Targets decoded from the mask, e.g. ``['SM80', 'SM86', 'SM89', 'SM120', 'SM121', 'later']``."""
        names = [name for bit, name in enumerate(RTX_CC_BITS) if self.compute_capability_mask >> bit & 1]
        unknown = self.compute_capability_mask >> len(RTX_CC_BITS)
        return names + ([f"unknown-bits-0x{unknown << len(RTX_CC_BITS):x}"] if unknown else [])

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the sidecar."""
        return {
            "magic": self.magic.decode("latin-1"),
            "plan_size": self.plan_size,
            "version": self.version,
            "compute_capability_mask": self.compute_capability_mask,
        }


def parse_rtx_header(data: bytes) -> EngineHeader | None:
    """Decode a TensorRT-RTX plan header; ``None`` when ``data`` does not start with one.

    Example:
        >>> parse_rtx_header(b"not an engine") is None
        True
    """
    if len(data) < RTX_HEADER_SIZE or data[:4] != RTX_MAGIC or data[28:32] != RTX_MAGIC:
        return None
    (plan_size,) = struct.unpack_from("<Q", data, 16)
    version = ".".join(str(b) for b in data[24:28])
    (mask,) = struct.unpack_from("<I", data, 32)
    return EngineHeader(RTX_MAGIC, int(plan_size), version, int(mask))


def check_engine_header(
    data: bytes, where: str, library: str | None = None, version: str | None = None
) -> EngineHeader | None:
    """Verify that ``data`` is a complete plan of the given library version (default: the one in use).

    Returns the parsed header for TensorRT-RTX, ``None`` for datacenter TensorRT (layout unknown here).

    Raises:
        EngineLoadError: wrong magic (not a TensorRT-RTX engine), size field disagreeing with the data
            (truncated or padded), or a version field naming another library version.
    """
    library = library or trt_api.library_name()
    version = version or trt_api.library_version()
    if library != "tensorrt_rtx":
        return None
    header = parse_rtx_header(data)
    if header is None:
        raise EngineLoadError(
            f"{where} is not a TensorRT-RTX engine: its first bytes are {data[:8]!r}, expected "
            f"the magic {RTX_MAGIC!r} (at offsets 0 and 28). Rebuild the engine with "
            "fx2trt_pipeline.engine.build_engine."
        )
    if header.plan_size != len(data):
        raise EngineLoadError(
            f"{where} is truncated or padded: its header says {header.plan_size} bytes, the "
            f"file has {len(data)}. Rebuild the engine."
        )
    wanted = ".".join(version.split(".")[:4])
    if header.version != wanted:
        raise EngineLoadError(
            f"{where} was built by TensorRT-RTX {header.version} (engine header), but "
            f"TensorRT-RTX {version} is in use; engines only load in the exact version that "
            "built them. Rebuild the engine or install the matching version."
        )
    return header


# -- quantization state hash -----------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    # Tensors go in by dtype, shape and a digest of their bytes, not as nested lists: exact, and cheap
    # for the megabytes of a real model's weights.
    if isinstance(value, torch.Tensor) and value.is_quantized:
        # torch.ao qint8 tensors: the int values plus the parameters that give them meaning.
        per_tensor = value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)
        params = (
            [value.q_scale(), value.q_zero_point()]
            if per_tensor
            else [value.q_per_channel_scales(), value.q_per_channel_zero_points(), value.q_per_channel_axis()]
        )
        return {
            "__quantized__": str(value.dtype),
            "int_repr": _canonical(value.int_repr()),
            "qscheme": str(value.qscheme()),
            "params": _canonical(params),
        }
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        raw = value.view(torch.uint8) if value.dim() else value.reshape(1).view(torch.uint8)
        digest = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
        return {"__tensor__": str(value.dtype), "shape": list(value.shape), "sha256": digest}
    if isinstance(value, np.ndarray):
        return _canonical(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)  # repr round-trips exactly; json would too, but NaN/inf would not be JSON
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (torch.dtype, torch.device, torch.qscheme, Path)):  # qscheme: torch.ao reference modules
        return str(value)
    raise TypeError(f"hash_quant_state cannot hash a {type(value).__name__}: {value!r}")


def hash_quant_state(state: Mapping[str, Any]) -> str:
    """A stable digest of a quantization state (scales, int8 weights, config) for engine metadata.

    Keys are sorted and tensors are hashed by dtype, shape and bytes, so the digest changes exactly
    when some value changes, and is the same across processes and machines.

    Example:
        >>> import torch
        >>> h = hash_quant_state({"conv1_input_scale": torch.tensor(0.02), "axis": 0})
        >>> same = hash_quant_state({"axis": 0, "conv1_input_scale": torch.tensor(0.02)})
        >>> h.startswith("sha256:"), h == same
        (True, True)
    """
    text = json.dumps(_canonical(dict(state)), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- metadata and artifact -------------------------------------------------------------------------


def engine_metadata(engine_bytes: bytes, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar content for ``engine_bytes``: integrity and library fields computed here, plus ``extra``.

    ``compatibility`` (see :mod:`fx2trt_pipeline.engine.compatibility`) records the library, the hardware
    compatibility level, the GPU of the building process (``None`` without one) and the compute
    capabilities the engine runs on; ``Engine.load`` and the validator check it before deserializing.
    ``extra`` carries what only the builder knows: ``inputs`` (``InputSpec.to_dict`` each), ``outputs``
    (name, dtype, shape), ``num_layers``, ``quant_state_hash``, ``build_options``, ``build`` timings.
    Fields computed here always win over ``extra``, so a caller cannot record a wrong checksum.
    """
    data = bytes(engine_bytes)
    library, version = trt_api.library_name(), trt_api.library_version()
    header = parse_rtx_header(data) if library == "tensorrt_rtx" else None
    meta: dict[str, Any] = {
        "inputs": [],
        "outputs": [],
        "num_layers": None,
        "quant_state_hash": None,
        "build_options": {},
        "target_compute_capabilities": None,
    }
    meta.update(dict(extra or {}))
    meta.update(
        {
            "format_version": METADATA_FORMAT_VERSION,
            "library": {"name": library, "version": version},
            "library_choice": trt_api.build_library_reason(),
            "engine": {
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "header": header.to_dict() if header else {"first_bytes_hex": data[:32].hex()},
            },
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
    )
    if header is not None:  # what the engine really targets, not what was asked for
        meta["target_compute_capabilities"] = header.compute_capabilities
    level = (meta.get("build_options") or {}).get("hardware_compatibility_level")
    meta["compatibility"] = compatibility_fields(
        library, version, meta["target_compute_capabilities"], level, GpuInfo.of()
    )
    return meta


@dataclass
class EngineArtifact:
    """An engine file and its metadata sidecar, as written by ``build_engine`` / ``save_engine``.

    Example:
        >>> art = EngineArtifact.open("model.plan")   # doctest: +SKIP
        >>> art.size_bytes, art.input_specs[0].shape   # doctest: +SKIP
        (271084, (-1, 3, 224, 224))
    """

    engine_path: Path
    metadata_path: Path
    size_bytes: int
    sha256: str
    metadata: dict[str, Any] = field(repr=False)

    @classmethod
    def from_metadata(cls, engine_path: PathLike, metadata: Mapping[str, Any]) -> EngineArtifact:
        """Wrap an engine path and its (already verified) metadata."""
        engine = metadata["engine"]
        return cls(
            Path(engine_path),
            sidecar_path(engine_path),
            int(engine["size_bytes"]),
            str(engine["sha256"]),
            dict(metadata),
        )

    @classmethod
    def open(cls, engine_path: PathLike) -> EngineArtifact:
        """Verify an existing engine with :func:`load_engine_bytes` and wrap it."""
        _, metadata = load_engine_bytes(engine_path)
        return cls.from_metadata(engine_path, metadata)

    @property
    def input_specs(self) -> list[InputSpec]:
        """The network inputs, profiles included."""
        return [InputSpec.from_dict(d) for d in self.metadata.get("inputs", [])]

    @property
    def output_names(self) -> list[str]:
        """Names of the engine outputs, in network order."""
        return [o["name"] for o in self.metadata.get("outputs", [])]

    @property
    def build_seconds(self) -> float | None:
        """Seconds ``build_serialized_network`` took (``None`` when not recorded)."""
        return self.metadata.get("build", {}).get("build_seconds")


def _read_sidecar(engine: Path) -> dict[str, Any]:
    meta_path = sidecar_path(engine)
    if not meta_path.is_file():
        raise EngineLoadError(
            f"Engine {engine} has no metadata sidecar {meta_path.name} next to it, so it cannot "
            "be checked before loading. Rebuild it with fx2trt_pipeline.engine.build_engine "
            "(which writes both files), or save it with save_engine."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineLoadError(
            f"Metadata sidecar {meta_path} is unreadable or not JSON ({exc}); it was probably "
            "cut short or edited. Rebuild the engine."
        ) from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("engine"), dict) or "library" not in meta:
        raise EngineLoadError(
            f"Metadata sidecar {meta_path} lacks the 'engine'/'library' sections; it is not an "
            "fx2trt-pipeline sidecar. Rebuild the engine."
        )
    fmt = meta.get("format_version")
    if not isinstance(fmt, int) or fmt > METADATA_FORMAT_VERSION:
        raise EngineLoadError(
            f"Metadata sidecar {meta_path} has format_version {fmt!r}; this fx2trt-pipeline "
            f"reads up to {METADATA_FORMAT_VERSION}. Upgrade fx2trt-pipeline or rebuild."
        )
    return meta


def load_engine_bytes(path: PathLike) -> tuple[bytes, dict[str, Any]]:
    """Read an engine and its sidecar, checking everything that can be checked without a GPU.

    Checks, in order: the engine file exists; the sidecar exists, parses and has a known format; the
    file size and sha256 equal the recorded ones; the recorded library is installed here in the recorded
    version (:func:`engine_library`); and (TensorRT-RTX) the engine header's magic, size and version agree.

    Args:
        path: the engine file (its sidecar is ``<path>.json``).

    Returns:
        ``(engine_bytes, metadata)``, ready for ``Runtime.deserialize_cuda_engine``.

    Raises:
        EngineLoadError: naming the file and what to do (usually: rebuild the engine).

    Example:
        >>> data, meta = load_engine_bytes("resnet18_int8.plan")   # doctest: +SKIP
        >>> len(data) == meta["engine"]["size_bytes"]   # doctest: +SKIP
        True
    """
    engine = Path(path)
    if not engine.is_file():
        raise EngineLoadError(
            f"Engine file {engine} does not exist (or is not a file). Build it with "
            "fx2trt_pipeline.engine.build_engine or check the path."
        )
    meta = _read_sidecar(engine)
    data = engine.read_bytes()
    recorded = meta["engine"]
    if len(data) != recorded.get("size_bytes"):
        raise EngineLoadError(
            f"Engine file {engine} has {len(data)} bytes but its sidecar records "
            f"{recorded.get('size_bytes')}: the file is truncated or was replaced. Rebuild the "
            "engine (or copy both files again)."
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != recorded.get("sha256"):
        raise EngineLoadError(
            f"Engine file {engine} is corrupt: its sha256 is {digest}, the sidecar records "
            f"{recorded.get('sha256')}. Rebuild the engine (or copy both files again)."
        )
    name, version = engine_library(meta, f"Engine file {engine}")
    check_engine_header(data, f"Engine file {engine}", name, version)
    return data, meta
