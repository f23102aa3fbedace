"""TensorRT Python API surfaces: datacenter TensorRT's published one, TensorRT 11's, and the installed library's.

A surface (format in scripts/trt_api_surface.py) lists a library's module names, classes with their bases,
enum members, property types and method signatures. Three are checked against the package's calls:

* ``tensorrt`` 10.13: tests/engine/data/tensorrt-10.13.0.35-api.json, read from the ``tensorrt-stubs`` wheel;
* ``tensorrt`` 11: the same less the Python APIs TensorRT 11 removed (:data:`REMOVED_IN_TRT11`, from NVIDIA's
  "Migrating from TensorRT 10.x to 11.x" Python API reference);
* ``tensorrt_rtx``: introspected from the installed bindings (pybind11 docstrings carry the signatures).
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

DATACENTER_SURFACE = Path(__file__).with_name("data") / "tensorrt-10.13.0.35-api.json"

#: Python APIs removed in TensorRT 11 (docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
#: tensorrt-10x-to-11x-python-api-reference.html): weak typing and implicit quantization are gone.
REMOVED_IN_TRT11 = frozenset(
    {
        "BuilderFlag.FP16",
        "BuilderFlag.INT8",
        "BuilderFlag.FP8",
        "BuilderFlag.BF16",
        "BuilderFlag.INT4",
        "BuilderFlag.FP4",
        "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
        "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
        "BuilderFlag.DIRECT_IO",
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        "IBuilderConfig.int8_calibrator",
        "IBuilderConfig.set_calibration_profile",
        "IBuilderConfig.get_calibration_profile",
        "IBuilderConfig.set_quantization_flag",
        "IBuilderConfig.get_quantization_flag",
        "IBuilderConfig.quantization_flags",
        "IBuilderConfig.clear_quantization_flag",
        "ICudaEngine.device_memory_size",
        "Builder.platform_has_fast_fp16",
        "Builder.platform_has_fast_int8",
        "IAlgorithm",
        "IAlgorithmContext",
        "IAlgorithmIOInfo",
        "IAlgorithmSelector",
        "IAlgorithmVariant",
        "IInt8Calibrator",
        "IInt8EntropyCalibrator",
        "IInt8EntropyCalibrator2",
        "IInt8LegacyCalibrator",
        "IInt8MinMaxCalibrator",
        "CalibrationAlgoType",
    }
)


def datacenter_surface() -> dict[str, Any]:
    """Datacenter TensorRT 10.13's surface (committed; regenerate with scripts/trt_api_surface.py)."""
    return json.loads(DATACENTER_SURFACE.read_text())


def trt11_surface(trt10: dict[str, Any]) -> dict[str, Any]:
    """``trt10`` less :data:`REMOVED_IN_TRT11`."""
    out = copy.deepcopy(trt10)
    out["version"] = "11 (10.13 less the documented removals)"
    for name in REMOVED_IN_TRT11:
        owner, _, member = name.rpartition(".")
        if owner:
            out["classes"][owner]["members"].pop(member, None)
        else:
            out["classes"].pop(name, None)
            out["module"].pop(name, None)
    return out


# -- the installed library, read from its pybind11 docstrings ---------------------------------------------


def _split_params(text: str) -> list[str]:
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>" and not (ch == ">" and text[i - 1 : i] == "-"):
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _short_type(text: str) -> str | None:
    text = text.strip()
    text = re.sub(r"^typing\.Optional\[(.*)\]$", r"\1", text)
    text = re.sub(r"\s*\|\s*None$", "", text)
    return text.split(".")[-1] if re.fullmatch(r"[\w.]+", text) else None


def _signatures(name: str, doc: str | None) -> tuple[str | None, list[list[list[Any]]]]:
    """Return type and signatures of a pybind11 function from its docstring (``name(self: X, a: T = 1) -> R``)."""
    found = re.findall(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> (.+)$", doc or "", re.MULTILINE)
    found = [f for f in found if f[0] != "*args, **kwargs"] or found
    signatures, returns = [], None
    for params, ret in found:
        listed = []
        for param in _split_params(params):
            pname = param.split(":")[0].split("=")[0].strip()
            listed.append(["*" if pname.startswith("*") else pname, "=" not in param and not pname.startswith("*")])
        if listed and listed[0][0] in ("self", "arg0") and ("self" in params or name == "__init__"):
            listed = listed[1:]
        signatures.append(listed)
        returns = returns or _short_type(ret)
    return returns, signatures


def _live_class(cls: type, qual: str, out: dict[str, Any], module: ModuleType) -> None:
    members: dict[str, Any] = {}
    for name in list(vars(cls)):
        if name.startswith("_") and name != "__init__":
            continue
        value = inspect.getattr_static(cls, name)
        if isinstance(value, property):
            members[name] = {"type": _signatures("", "(" + (value.fget.__doc__ or "").split("(", 1)[-1])[0]}
        elif inspect.isclass(value):
            members[name] = {"type": f"{qual}.{name}"}
            _live_class(value, f"{qual}.{name}", out, module)
        elif isinstance(value, cls):  # an enum member
            members[name] = {"type": qual}
        elif callable(value) or isinstance(value, (staticmethod, classmethod)):
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            ret, sigs = _signatures(name, func.__doc__)
            members[name] = {"type": ret, "signatures": sigs or [[["*", False]]]}
        else:
            members[name] = {"type": type(value).__name__}
    bases = [b.__name__ for b in cls.__bases__ if getattr(b, "__module__", "").startswith(module.__name__)]
    out[qual] = {"bases": bases, "enum": hasattr(cls, "__members__"), "members": members}


def live_surface(module: ModuleType, library: str) -> dict[str, Any]:
    """The surface of an imported library module (its classes introspected, signatures from docstrings)."""
    names: dict[str, str] = {}
    classes: dict[str, Any] = {}
    for name in dir(module):
        if name.startswith("_") and name != "__version__":
            continue
        value = getattr(module, name)
        if inspect.isclass(value):
            names[name] = "class"
            _live_class(value, name, classes, module)
        elif callable(value):
            names[name] = _signatures(name, value.__doc__)[0] or "function"
        else:
            names[name] = type(value).__name__
    return {"library": library, "version": str(module.__version__), "module": names, "classes": classes}


# -- lookups ------------------------------------------------------------------------------------------------


def member(surface: dict[str, Any], cls: str, name: str) -> dict[str, Any] | None:
    """``cls.name`` in the surface, searching base classes; ``None`` when absent."""
    seen: list[str] = [cls]
    while seen:
        current = seen.pop(0)
        entry = surface["classes"].get(current)
        if entry is None:
            continue
        if name in entry["members"]:
            return entry["members"][name]
        seen.extend(entry["bases"])
    return None


def accepts(signatures: list[list[list[Any]]], positional: int, keywords: tuple[str, ...]) -> bool:
    """Whether some signature takes ``positional`` arguments then ``keywords``."""
    for params in signatures:
        if any(p[0] == "*" for p in params):
            return True
        names = [p[0] for p in params]
        if positional > len(params) or any(k not in names[positional:] for k in keywords):
            continue
        if all(not required or i < positional or name in keywords for i, (name, required) in enumerate(params)):
            return True
    return False


def merged(*surfaces: dict[str, Any]) -> dict[str, Any]:
    """One surface with every name of ``surfaces`` (for typing the package's code, not for checking it)."""
    out: dict[str, Any] = {"library": "+".join(s["library"] for s in surfaces), "module": {}, "classes": {}}
    for surface in surfaces:
        out["module"].update(surface["module"])
        for name, cls in surface["classes"].items():
            entry = out["classes"].setdefault(name, {"bases": list(cls["bases"]), "enum": cls["enum"], "members": {}})
            for member_name, value in cls["members"].items():
                entry["members"].setdefault(member_name, value)
    return out


def exists(surface: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The entry of ``Class.member`` or of a module name (``{}`` for one without details); ``None`` when absent."""
    owner, _, attr = name.rpartition(".")
    if not owner:
        return {} if name in surface["module"] else None
    if owner not in surface["classes"] and owner.split(".")[0] not in surface["module"]:
        return None
    return member(surface, owner, attr)
