"""Every TensorRT call the package makes exists, with a matching signature, in each library it claims.

``trt_api`` serves datacenter TensorRT (what H100, A100, L4, T4 and Jetson users run, and what cannot be
installed here) and TensorRT-RTX (what CI builds with). The package's uses are read from its source
(tests/engine/api_usage.py) and checked against three surfaces (tests/engine/api_surface.py): datacenter
TensorRT 10.13 as published in ``tensorrt-stubs``, TensorRT 11 (10.13 less its documented removals), and the
installed TensorRT-RTX. A name that one library lacks must be declared in ``trt_api.ONLY_IN`` for the other;
the declaration must be true and used. Renaming a call, an enum member or dropping an argument fails here
(``test_a_renamed_call_or_member_fails``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fx2trt_pipeline import trt_api, trt_types
from fx2trt_pipeline.engine import options, runtime_config
from tests.engine.api_surface import accepts, datacenter_surface, exists, live_surface, merged, trt11_surface
from tests.engine.api_usage import ROOT, Collector, Use

pytestmark = pytest.mark.skipif(
    not trt_api.is_available("tensorrt_rtx"), reason="needs TensorRT-RTX (pip install 'fx2trt-pipeline[rtx]')"
)


def _handler_classes() -> list[str]:
    import fx2trt_pipeline.executor.network_executor  # noqa: F401  (registers every handler)
    from fx2trt_pipeline.executor.executor_common import _HANDLERS

    return sorted({h.class_name for h in _HANDLERS.values()})


#: getattr(<trt class>, <name>) sites whose names no constant in the source gives: (file, class) -> (where the
#: names come from, or None when they are the user's and checked against the enum at run time).
KNOWN_DYNAMIC: dict[tuple[str, str], Callable[[], list[str]] | None] = {
    ("fx2trt_pipeline/engine/options.py", "ProfilingVerbosity"): lambda: list(options._PROFILING_VERBOSITY),
    ("fx2trt_pipeline/engine/options.py", "ComputeCapability"): None,  # checked against __members__ first
    ("fx2trt_pipeline/engine/options.py", "HardwareCompatibilityLevel"): None,  # looked up with a default
    ("fx2trt_pipeline/engine/runtime_config.py", "DynamicShapesKernelSpecializationStrategy"): lambda: [
        s.upper() for s in runtime_config._STRATEGIES
    ],
    ("fx2trt_pipeline/executor/network_executor.py", ""): _handler_classes,
    ("fx2trt_pipeline/trt_types.py", "DataType"): lambda: sorted(trt_types.TORCH_TO_TRT.values()),
    ("fx2trt_pipeline/trt_types.py", "ILogger.Severity"): lambda: sorted(trt_types._PY_LEVELS),
}
#: Probed names that are the package's own, not TensorRT's.
OURS = {"ILogger.messages": "CapturingLogger (trt_types.make_logger) keeps messages; probed on any logger"}
#: Uses the collector must find: if it stops seeing these, it has gone blind, not the package conformant.
SENTINELS = {
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "Builder.create_network",
    "Builder.build_serialized_network",
    "INetworkDefinition.add_quantize",
    "INetworkDefinition.add_dequantize",
    "INetworkDefinition.add_constant",
    "IDequantizeLayer.axis",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.create_execution_context",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.infer_shapes",
    "IExecutionContext.execute_async_v3",
    "OnnxParser.parse_from_file",
    "ActivationType.RELU",
}


@pytest.fixture(scope="module")
def surfaces() -> dict[str, dict[str, Any]]:
    """The surfaces checked, by label."""
    trt10 = datacenter_surface()
    found = {
        "tensorrt 10.13": trt10,
        "tensorrt 11": trt11_surface(trt10),
        "tensorrt_rtx": live_surface(trt_api.get_trt("tensorrt_rtx"), "tensorrt_rtx"),
    }
    if trt_api.is_available("tensorrt"):  # a machine that has it: the installed one too
        found["tensorrt (installed)"] = live_surface(trt_api.get_trt("tensorrt"), "tensorrt")
    return found


@pytest.fixture(scope="module")
def collected(surfaces: dict[str, dict[str, Any]]) -> Collector:
    """The package's uses, typed with every library's names."""
    return Collector(merged(*surfaces.values())).collect()


def _uses(collector: Collector) -> list[Use]:
    extra = []
    for site in collector.dynamic:
        file = site.where.split(":")[0]
        names = KNOWN_DYNAMIC.get((file, site.owner))
        for name in names() if names is not None and site.unresolved else []:
            extra.append(Use(f"{site.owner}.{name}" if site.owner else name, site.where))
    return collector.uses + extra


def _library(label: str) -> str:
    return label.split()[0]


def problems(uses: list[Use], surface: dict[str, Any], library: str) -> list[str]:
    """What in ``uses`` the surface of ``library`` lacks or cannot be called with."""
    others = {n for lib, names in trt_api.ONLY_IN.items() if lib != library for n in names}
    found = []
    for use in uses:
        entry = exists(surface, use.name)
        if entry is None:
            declared = use.name in others or use.name.rpartition(".")[0] in others  # or a member of such a class
            if declared or (use.probed and use.name in OURS):
                continue
            found.append(f"{use.where}: {use.name} does not exist")
        elif use.call is not None and "signatures" in entry and not accepts(entry["signatures"], *use.call):
            positional, keywords = use.call
            found.append(
                f"{use.where}: {use.name}({positional} positional, keywords {list(keywords)}) matches none of "
                f"{entry['signatures']}"
            )
    return sorted(set(found))


@pytest.mark.parametrize("label", ["tensorrt 10.13", "tensorrt 11", "tensorrt_rtx", "tensorrt (installed)"])
def test_every_call_exists_with_a_matching_signature(
    label: str, surfaces: dict[str, dict[str, Any]], collected: Collector
) -> None:
    if label not in surfaces:
        pytest.skip("datacenter TensorRT is not installed here (its published API is checked above)")
    found = problems(_uses(collected), surfaces[label], _library(label))
    assert not found, f"{label} ({surfaces[label]['version']}):\n  " + "\n  ".join(found)


def test_the_collector_sees_the_calls_that_matter(collected: Collector) -> None:
    names = {u.name for u in collected.uses}
    assert SENTINELS <= names, f"the collector no longer sees {sorted(SENTINELS - names)}"
    assert len(names) > 150


def test_library_only_names_are_declared_true_and_used(
    surfaces: dict[str, dict[str, Any]], collected: Collector
) -> None:
    used = {u.name for u in _uses(collected)}
    own = {
        "tensorrt": [surfaces["tensorrt 10.13"], surfaces["tensorrt 11"]],
        "tensorrt_rtx": [surfaces["tensorrt_rtx"]],
    }
    for library, names in trt_api.ONLY_IN.items():
        other = "tensorrt" if library == "tensorrt_rtx" else "tensorrt_rtx"
        for name in sorted(names):
            assert name in used, f"ONLY_IN[{library!r}] lists {name}, which the package no longer uses"
            assert all(exists(s, name) is not None for s in own[library]), f"{library} has no {name}"
            assert all(exists(s, name) is None for s in own[other]), f"{other} has {name} too: not {library}-only"


def test_dynamic_lookups_are_resolved_or_known(collected: Collector) -> None:
    unresolved = {
        (site.where.split(":")[0], site.owner): site.unresolved for site in collected.dynamic if site.unresolved
    }
    assert set(unresolved) == set(KNOWN_DYNAMIC), (
        f"getattr sites nobody can resolve: {sorted(set(unresolved) - set(KNOWN_DYNAMIC))}; known ones gone: "
        f"{sorted(set(KNOWN_DYNAMIC) - set(unresolved))}"
    )
    resolved = {site.owner: site.names for site in collected.dynamic if not site.unresolved}
    assert {"RELU", "SIGMOID", "GELU_ERF"} <= resolved["ActivationType"] and resolved["PoolingType"] == {
        "MAX",
        "AVERAGE",
    }


@pytest.mark.parametrize(
    "old, new, message",
    [
        (".add_quantize(", ".add_quantise(", "INetworkDefinition.add_quantise does not exist"),
        ("STRONGLY_TYPED)", "STRONGLY_TYPE)", "NetworkDefinitionCreationFlag.STRONGLY_TYPE does not exist"),
        (
            "(x, scale_tensor, trt.int8)",
            "(x)",
            "INetworkDefinition.add_quantize(1 positional, keywords []) matches none",
        ),
    ],
)
def test_a_renamed_call_or_member_fails(old: str, new: str, message: str, surfaces: dict[str, dict[str, Any]]) -> None:
    source = """
from fx2trt_pipeline import trt_api

def quantize_input(builder, scale_tensor):
    trt = trt_api.get_trt()
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = network.add_input("x", trt.float32, (1, 3))
    return network.add_quantize(x, scale_tensor, trt.int8)
"""
    assert old in source
    surface = surfaces["tensorrt 10.13"]
    sources = {"fx2trt_pipeline/engine/example.py": source}
    assert problems(Collector(surface, sources).collect().uses, surface, "tensorrt") == []
    broken = Collector(surface, {"fx2trt_pipeline/engine/example.py": source.replace(old, new)}).collect()
    found = problems(broken.uses, surface, "tensorrt")
    assert any(message in line for line in found), found
    assert str(ROOT)  # the package root the real collection reads
