"""Region-by-region runs of engine-side backends, for tie-aware parity (:mod:`.tie_parity`).

A *region* is the part of the network between activation quantize layers. Each backend here runs the
whole network once with every quantize output replaced by the simulated model's int8 value, so each
region computes from the reference int8 inputs, and returns what each quantize layer computed itself
before the replacement. A flip found at one quantize layer is then that region's own doing, not an
upstream flip carried along.

* :class:`ExecutorRegions`: the network executor (``INetworkDefinition``); quantize layers are
  matched to the simulated model's quantize nodes by name (converters name layers after FX nodes).
* :class:`OnnxRuntimeRegions`: a QDQ ONNX model in ONNX Runtime; each matched QuantizeLinear output
  becomes a graph output and a graph input of the same name feeds its consumers. QuantizeLinear nodes
  are matched to quantize nodes in graph order, checking their scale values. A float16 model runs with
  its float16 roundings made explicit (:func:`explicit_float16_rounding`), because ONNX Runtime's CPU
  provider would otherwise drop them.

Example:
    >>> regions = ExecutorRegions(network)                       # doctest: +SKIP
    >>> run = regions.run_regions({"x": x}, reference)           # doctest: +SKIP
    >>> sorted(run.own)[:2], run.missing                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline.executor.network_executor import NetworkExecutor

#: ONNX Runtime graph optimization levels by name. "disabled" and "basic" keep QDQ semantics (basic only
#: folds constants and drops redundant nodes); "all" lets ONNX Runtime fuse QDQ groups into QLinearConv
#: and similar kernels with their own integer rounding, which is what a deployment gets.
ORT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class QuantizePoint:
    """One activation quantize node of the simulated model: its name and its per-tensor scale."""

    name: str
    scale: float


@dataclass
class RegionRun:
    """What a backend computed with reference int8 values fed at every matched quantize point.

    Attributes:
        own: int8 output each matched quantize layer computed itself, by quantize node name.
        outputs: the network outputs (graph order), computed from reference int8 inputs.
        missing: quantize nodes of the simulated model the backend has no quantize layer for.
    """

    own: dict[str, torch.Tensor]
    outputs: list[torch.Tensor]
    missing: list[str] = field(default_factory=list)


class ExecutorRegions:
    """Region runs and free runs of an ``INetworkDefinition`` in the network executor.

    Args:
        network: the network (or a :class:`NetworkExecutor` over it).
        name: label in reports.
    """

    def __init__(self, network: Any, name: str = "network_executor") -> None:
        self.executor = network if isinstance(network, NetworkExecutor) else NetworkExecutor(network)
        self.name = name
        self.input_names = self.executor.input_names
        self.output_names = self.executor.output_names

    def run(self, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The network outputs (graph order) of a plain run."""
        outputs, _ = self.executor.run(feeds)
        return [outputs[n] for n in self.executor.output_names]

    def run_regions(
        self, feeds: Mapping[str, torch.Tensor], points: list[QuantizePoint], reference: Mapping[str, torch.Tensor]
    ) -> RegionRun:
        """One run with every matched quantize layer's output replaced by ``reference[name]``."""
        layer_names = {name for name, _ in self.executor.layers}
        tensor_of = {self.executor.layer_outputs(p.name)[0]: p.name for p in points if p.name in layer_names}
        own: dict[str, torch.Tensor] = {}

        def substitute(tensor: str, value: torch.Tensor) -> torch.Tensor | None:
            point = tensor_of.get(tensor)
            if point is None:
                return None
            own[point] = value
            return reference[point].to(value.device)

        outputs, _ = self.executor.run(feeds, substitute=substitute)
        missing = [p.name for p in points if p.name not in layer_names]
        return RegionRun(own, [outputs[n] for n in self.executor.output_names], missing)


def ort_session(model: str | Path | bytes, level: str) -> Any:
    """An ONNX Runtime CPU session at graph optimization ``level`` (one of :data:`ORT_LEVELS`)."""
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[level])
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _run_session(session: Any, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    arrays = {i.name: feeds[i.name].detach().cpu().numpy() for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return {n: torch.from_numpy(v) for n, v in zip(names, session.run(None, arrays))}


def explicit_float16_rounding(model: Any) -> bool:
    """Rewrite a float16 ModelProto in place so that ONNX Runtime's CPU provider rounds where the model says.

    That provider has no float16 kernel for most ops (Add, Conv, ReduceMean...): it runs them in float32
    between Cast nodes it inserts, then cancels an inserted cast against the model's adjacent one, so a
    ``Cast(to=float16)`` followed by such an op, or such an op followed by ``Cast(to=float)``, loses its round
    to float16 (measured, onnxruntime 1.32: ``Cast16 -> Add -> Cast32`` returns the unrounded float32 sum).
    The rewrite states float16 the way TensorRT, the simulated model and the network executor compute it:
    every float16 tensor becomes float32 holding float16 values (initializers and constants converted
    exactly), and every node output that was float16 is followed by ``Cast(to=float16) -> Cast(to=float)``,
    a pair of the model's own that ONNX Runtime keeps. Each op then computes in float32 from float16 inputs
    and rounds its output once to float16.

    Returns:
        Whether the model had float16 tensors (False: left unchanged).
    """
    onnx = importlib.import_module("onnx")
    numpy_helper = importlib.import_module("onnx.numpy_helper")
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    graph = model.graph
    typed = onnx.shape_inference.infer_shapes(model).graph
    values = (*typed.value_info, *typed.input, *typed.output)
    rounded = {v.name for v in values if v.type.tensor_type.elem_type == half}
    constants = [i for i in graph.initializer if i.data_type == half]
    if not rounded and not constants:
        return False
    for init in constants:  # float16 values, exact in float32
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float32"), init.name))
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == half:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float32")))
            continue  # exact float16 values: nothing to round
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == half:
                attr.i = single
        for i, out in enumerate(node.output):
            if out in rounded:
                node.output[i] = f"{out}__unrounded"
                nodes.append(onnx.helper.make_node("Cast", [node.output[i]], [f"{out}__float16"], to=half))
                nodes.append(onnx.helper.make_node("Cast", [f"{out}__float16"], [out], to=single))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # float16 types no longer hold; ONNX Runtime infers the rest
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type = single
    return True


def _match_quantize_nodes(model: Any, points: list[QuantizePoint]) -> tuple[dict[str, Any], list[str]]:
    """``({quantize node name: QuantizeLinear NodeProto}, missing names)``.

    In graph order, by scale value: the exporter renames values and merges equal scale initializers,
    so names do not survive, but the order of the quantize calls does. A point whose scale differs from
    the next QuantizeLinear's is missing (a dropped Q/DQ pair, or a changed scale); matching resumes
    with the following point.
    """
    numpy_helper = importlib.import_module("onnx.numpy_helper")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = [
        n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 1 and n.input[1] in inits and inits[n.input[1]].size == 1
    ]
    matched, missing, cursor = {}, [], 0
    for point in points:
        if cursor < len(nodes) and float(inits[nodes[cursor].input[1]].reshape(())) == point.scale:
            matched[point.name] = nodes[cursor]
            cursor += 1
        else:
            missing.append(point.name)
    return matched, missing


class OnnxRuntimeRegions:
    """Region runs and free runs of a QDQ ONNX model in ONNX Runtime.

    Args:
        model: path of the ``.onnx`` file.
        level: graph optimization level of both sessions (:data:`ORT_LEVELS`); parity uses
            "disabled" or "basic", which keep QDQ semantics.
        name: label in reports.
        float16_rounding: run a float16 model with its roundings made explicit
            (:func:`explicit_float16_rounding`); False runs the file as a deployment would.
    """

    def __init__(
        self, model: str | Path, level: str = "disabled", name: str = "onnxruntime", float16_rounding: bool = True
    ) -> None:
        self.path, self.level, self.name = Path(model), level, name
        self.float16_rounding = float16_rounding
        self._proto = importlib.import_module("onnx").load(str(self.path))
        if float16_rounding:
            explicit_float16_rounding(self._proto)
        graph = self._proto.graph
        constants = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = [o.name for o in graph.output]
        self._session: Any = None  # made on the first plain run: region runs use a session of their own

    @property
    def session(self) -> Any:
        """The ONNX Runtime session of the (rounding-explicit) model, made on first use."""
        if self._session is None:
            self._session = ort_session(self._proto.SerializeToString(), self.level)
        return self._session

    def _model(self) -> Any:
        model = type(self._proto)()
        model.CopyFrom(self._proto)  # the cut below must not change the model itself
        return model

    def run(self, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The network outputs (graph order) of a plain run."""
        values = _run_session(self.session, feeds)
        return [values[n] for n in self.output_names]

    def run_regions(
        self, feeds: Mapping[str, torch.Tensor], points: list[QuantizePoint], reference: Mapping[str, torch.Tensor]
    ) -> RegionRun:
        """One run of a cut model: matched QuantizeLinear outputs exposed, reference int8 fed in their place."""
        onnx = importlib.import_module("onnx")
        model = self._model()
        matched, missing = _match_quantize_nodes(model, points)
        own_names = {}
        for point, node in matched.items():
            value = node.output[0]
            own_names[point] = f"{value}__own"
            node.output[0] = own_names[point]
            model.graph.output.append(onnx.helper.make_tensor_value_info(own_names[point], onnx.TensorProto.INT8, None))
            model.graph.input.append(onnx.helper.make_tensor_value_info(value, onnx.TensorProto.INT8, None))
        session = ort_session(model.SerializeToString(), self.level)
        all_feeds = dict(feeds)
        for point, node in matched.items():
            all_feeds[own_names[point][: -len("__own")]] = reference[point]
        values = _run_session(session, all_feeds)
        own = {point: values[name] for point, name in own_names.items()}
        return RegionRun(own, [values[n] for n in self.output_names], missing)
