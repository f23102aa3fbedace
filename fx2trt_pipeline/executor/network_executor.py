"""Execute a TensorRT ``INetworkDefinition`` layer by layer in torch, on CPU or CUDA.

The executor reads the network only (never the FX graph the converters started from), so running
it next to the simulated INT8 GraphModule is an independent check of the converters: it computes
exactly what the network says, with TensorRT's documented semantics (Q/DQ round half to even and
saturate to [-128, 127], per-channel ``axis``, padding modes, resize coordinate transformations).
INT8 convolutions, deconvolutions and matrix multiplies sum int8 x int8 exactly and apply a float32
epilogue, like TensorRT (:mod:`fx2trt_pipeline.executor.executor_int8`); other layers run in float32,
where a different summation order than TensorRT's can move a value by an ulp. Float16 tensors (a network
built with float16 float parts) are read as float32, each layer computes in float32, and every output is
rounded once to the dtype the network declares for it: the rounding comes from the network's tensor
dtypes alone, never from a build setting.
No GPU or engine is needed, which is how parity is proven on machines where TensorRT-RTX engines
cannot run.

Every layer's declared static output shape and dtype (TensorRT's own inference) is checked
against what the executor computed, so a misunderstanding of a layer's semantics surfaces as an
error naming the layer instead of a silently different number.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> from fx2trt_pipeline.network.network import network_from_graph_module
    >>> _, network, ctx = network_from_graph_module(qgm, [InputSpec("x", (2, 3, 16, 16))])
    >>> from fx2trt_pipeline.executor.network_executor import NetworkExecutor
    >>> executor = NetworkExecutor(network)
    >>> outputs, captured = executor.run({"x": x}, capture="all")
    >>> torch.equal(outputs[network.get_output(0).name], qgm(x)), len(captured) == network.num_layers
    (True, True)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError, ConversionError, Fx2TrtError, InternalError
from fx2trt_pipeline.executor import (  # noqa: F401  (register handlers)
    executor_layers,
    executor_shape_ops,
    executor_tensor_ops,
)
from fx2trt_pipeline.executor.executor_common import (
    LayerHandler,
    lookup_handler,
    supported_layer_types,
)
from fx2trt_pipeline.executor.executor_int8 import with_integer_arithmetic
from fx2trt_pipeline.trt_types import torch_dtype

Capture = Iterable[str] | str
#: ``substitute(tensor name, computed value) -> replacement or None`` (see :meth:`NetworkExecutor.run`).
Substitute = Callable[[str, torch.Tensor], torch.Tensor | None]


@dataclass
class _Step:
    """One layer, cast to its concrete class, with everything ``run`` needs precomputed."""

    layer: Any
    name: str
    type_name: str
    handler: LayerHandler
    inputs: list[str | None]
    outputs: list[str]
    out_dtypes: list[torch.dtype]
    out_shapes: list[tuple[int, ...]]
    frees: list[str]


class NetworkExecutor:
    """Runs an ``INetworkDefinition`` in torch (see module docstring).

    Args:
        network: a TensorRT network (built with the TensorRT API, by our converters or parsed from
            ONNX). It is read, never modified, and must stay alive while the executor is used.

    Raises:
        ConversionError: the network has layers the executor does not implement (all listed).
    """

    def __init__(self, network: Any) -> None:
        self.network = network
        self.input_names = [network.get_input(i).name for i in range(network.num_inputs)]
        self.output_names = [network.get_output(i).name for i in range(network.num_outputs)]
        self._input_specs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
        self._steps = self._prepare(network)
        self._tensor_names = {n for s in self._steps for n in s.outputs} | set(self.input_names)
        self._constants: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def num_layers(self) -> int:
        """Number of layers in the network."""
        return len(self._steps)

    @property
    def layers(self) -> list[tuple[str, str]]:
        """``(layer name, LayerType name)`` for every layer, in network order."""
        return [(s.name, s.type_name) for s in self._steps]

    def layer_outputs(self, name: str) -> list[str]:
        """Names of the output tensors of the layer called ``name``."""
        for s in self._steps:
            if s.name == name:
                return list(s.outputs)
        raise ConfigError(f"The network has no layer named {name!r}")

    def _prepare(self, network: Any) -> list[_Step]:
        trt = trt_api.get_trt()
        steps: list[_Step] = []
        missing: list[str] = []
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            # Read the LayerType before casting: on IActivationLayer / IPoolingLayer `type` then
            # means the activation / pooling kind.
            type_name = layer.type.name
            handler = lookup_handler(type_name)
            if handler is None:
                missing.append(f"  - {layer.name!r} (LayerType.{type_name})")
                continue
            layer.__class__ = getattr(trt, handler.class_name)
            inputs = [t.name if t is not None else None for t in (layer.get_input(j) for j in range(layer.num_inputs))]
            outs = [layer.get_output(j) for j in range(layer.num_outputs)]
            steps.append(
                _Step(
                    layer,
                    layer.name,
                    type_name,
                    handler,
                    inputs,
                    [t.name for t in outs],
                    [torch_dtype(t.dtype) for t in outs],
                    [tuple(t.shape) for t in outs],
                    [],
                )
            )
        if missing:
            raise ConversionError(
                f"The network executor does not implement {len(missing)} layer(s):\n"
                + "\n".join(missing)
                + f"\nImplemented layer types: {', '.join(supported_layer_types())}."
            )
        steps = with_integer_arithmetic(self._topological(steps))
        self._plan_frees(steps)
        return steps

    def _topological(self, steps: list[_Step]) -> list[_Step]:
        # get_layer() is insertion order, which need not be execution order (a kernel can be
        # set_input() from a layer added later). Kahn's algorithm, stable w.r.t. insertion order.
        producer = {t: i for i, s in enumerate(steps) for t in s.outputs}
        deps = [{producer[n] for n in s.inputs if n is not None and n in producer} for s in steps]
        users: dict[int, list[int]] = {}
        for i, d in enumerate(deps):
            for j in d:
                users.setdefault(j, []).append(i)
        pending = [len(d) for d in deps]
        ready = [i for i, n in enumerate(pending) if n == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for u in users.get(i, []):
                pending[u] -= 1
                if pending[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(steps):
            stuck = [steps[i].name for i in range(len(steps)) if pending[i] > 0]
            raise ConversionError(f"The network has a cycle (loops are not supported by the executor): {stuck[:5]}")
        return [steps[i] for i in order]

    def _plan_frees(self, steps: list[_Step]) -> None:
        # Drop each intermediate tensor after its last reader, so whole models run in little memory.
        last_use: dict[str, int] = {}
        for i, s in enumerate(steps):
            for name in s.inputs:
                if name is not None:
                    last_use[name] = i
        keep = set(self.output_names)
        for name, i in last_use.items():
            if name not in keep:
                steps[i].frees.append(name)

    def _resolve_capture(self, capture: Capture) -> dict[str, tuple[str, list[str]]]:
        """``{key: (layer name or "", tensor names)}``; a layer name captures its output(s)."""
        by_layer = {s.name: s for s in self._steps}
        if isinstance(capture, str):
            if capture != "all":
                raise ConfigError(f"capture must be 'all' or an iterable of layer/tensor names, got {capture!r}")
            names: list[str] = list(by_layer)
        else:
            names = list(capture)
        plan: dict[str, tuple[str, list[str]]] = {}
        unknown = []
        for name in names:
            if name in by_layer:
                plan[name] = (name, by_layer[name].outputs)
            elif name in self._tensor_names:
                plan[name] = ("", [name])
            else:
                unknown.append(name)
        if unknown:
            raise ConfigError(
                f"capture names not in the network (neither layer nor tensor names): {unknown[:10]}"
                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            )
        return plan

    def _bind_feeds(self, feeds: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.device]:
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self._input_specs]
        if missing or extra:
            raise ConfigError(
                f"Feeds do not match the network inputs {self.input_names}: missing {missing}, unexpected {extra}"
            )
        env: dict[str, torch.Tensor] = {}
        devices = {feeds[n].device for n in self.input_names}
        if len(devices) > 1:
            raise ConfigError(f"All feeds must be on one device, got {sorted(map(str, devices))}")
        for name in self.input_names:
            spec, value = self._input_specs[name], feeds[name]
            declared = tuple(spec.shape)
            if len(declared) != value.dim() or any(d >= 0 and d != v for d, v in zip(declared, value.shape)):
                raise ConfigError(
                    f"Feed {name!r} has shape {tuple(value.shape)}; the network input is {declared} (-1 = dynamic)"
                )
            dtype = torch_dtype(spec.dtype)
            if value.dtype != dtype and not (value.is_floating_point() and dtype.is_floating_point):
                raise ConfigError(f"Feed {name!r} is {value.dtype}; the network input is {dtype}")
            env[name] = value.to(dtype)
        device = next(iter(devices)) if devices else torch.device("cpu")
        return env, device

    def _run_step(self, step: _Step, env: dict[str, torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        cache_key = (step.name, str(device))
        if step.type_name == "CONSTANT" and cache_key in self._constants:
            return [self._constants[cache_key]]
        # float16 tensors are read exactly as float32: every layer computes in float32 and its outputs are
        # rounded once to the dtypes TensorRT declares for them (below), the rule docs/float16.md states.
        inputs = [
            env[n].float() if n is not None and env[n].dtype == torch.float16 else (env[n] if n is not None else None)
            for n in step.inputs
        ]
        try:
            result = step.handler.fn(step.layer, inputs)
        except Fx2TrtError:
            raise
        except Exception as exc:
            shapes = [tuple(t.shape) if t is not None else None for t in inputs]
            raise ConversionError(
                f"Layer {step.name!r} (LayerType.{step.type_name}) failed in the network "
                f"executor on inputs of shapes {shapes}: {exc.__class__.__name__}: {exc}"
            ) from exc
        outs = [result] if isinstance(result, torch.Tensor) else list(result)
        outs = [t.to(device=device, dtype=dt) for t, dt in zip(outs, step.out_dtypes)]
        for t, declared, tname in zip(outs, step.out_shapes, step.outputs):
            if len(declared) != t.dim() or any(d >= 0 and d != v for d, v in zip(declared, t.shape)):
                raise InternalError(
                    f"Network executor: layer {step.name!r} (LayerType.{step.type_name}) computed "
                    f"{tname!r} with shape {tuple(t.shape)}, but TensorRT declares {declared}"
                )
        if step.type_name == "CONSTANT":
            self._constants[cache_key] = outs[0]
        return outs

    def run(
        self, feeds: Mapping[str, torch.Tensor], capture: Capture = (), substitute: Substitute | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Execute the network.

        Args:
            feeds: one tensor per network input, by name, all on one device; the shapes of dynamic
                dims come from here.
            capture: layer or tensor names whose values to return, or ``"all"`` for every layer.
                A layer name captures its first output under the layer name and any further outputs
                as ``"<layer>:<i>"``.
            substitute: called as ``substitute(tensor name, computed value)`` for every tensor a
                layer computes; a tensor it returns replaces the value for the rest of the run
                (``None`` keeps it). Region-by-region parity feeds reference values this way.

        Returns:
            ``(outputs, captured)``: network outputs by tensor name, captured values by the
            requested name.

        Raises:
            ConfigError: feeds or capture names do not match the network.
            ConversionError: a layer cannot be computed (names the layer and its type).

        Example:
            >>> import torch, fx2trt_pipeline as ftp
            >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
            >>> x = torch.randn(2, 3, 16, 16)
            >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
            >>> from fx2trt_pipeline.network.inputs import InputSpec
            >>> from fx2trt_pipeline.network.network import network_from_graph_module
            >>> _, network, ctx = network_from_graph_module(qgm, [InputSpec("x", (2, 3, 16, 16))])
            >>> outs, cap = NetworkExecutor(network).run({"x": x}, capture=["_0"])
            >>> tuple(cap["_0"].shape)
            (2, 8, 14, 14)
        """
        plan = self._resolve_capture(capture)
        wanted = {t for _, tensors in plan.values() for t in tensors}
        env, device = self._bind_feeds(feeds)
        kept: dict[str, torch.Tensor] = {n: env[n] for n in wanted if n in env}
        with torch.no_grad():
            for step in self._steps:
                for tname, value in zip(step.outputs, self._run_step(step, env, device)):
                    replaced = substitute(tname, value) if substitute is not None else None
                    env[tname] = value = replaced if replaced is not None else value
                    if tname in wanted:
                        kept[tname] = value
                for name in step.frees:
                    env.pop(name, None)
        outputs = {name: env[name] for name in self.output_names}
        captured: dict[str, torch.Tensor] = {}
        for key, (layer_name, tensors) in plan.items():
            captured[key] = kept[tensors[0]]
            for j, tname in enumerate(tensors[1:], start=1):
                captured[f"{key}:{j}"] = kept[tname]
        return outputs, captured
