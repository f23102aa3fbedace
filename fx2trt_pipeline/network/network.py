"""GraphModule -> strongly typed TensorRT INetworkDefinition.

::

    find_unsupported(gm)          one pass, every node without a converter (or refused) -> rows
    network_from_graph_module()   raise UnsupportedOpsError(rows) before any TensorRT object exists,
                                  then inputs (dynamic dims -1) -> converters in graph order -> outputs

Example:
    >>> import torch
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> from fx2trt_pipeline.network.network import network_from_graph_module
    >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()))
    >>> builder, network, ctx = network_from_graph_module(gm, [InputSpec("x", (1, 3, 16, 16))])
    >>> [network.get_layer(i).name for i in range(network.num_layers)]
    ['_0', '_1']
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.node import map_aggregate

from fx2trt_pipeline import trt_api
from fx2trt_pipeline.errors import ConfigError, ConversionError, UnsupportedOpsError, node_location
from fx2trt_pipeline.network.context import ConversionContext, ConversionOptions
from fx2trt_pipeline.network.inputs import InputSpec, as_input_specs
from fx2trt_pipeline.network.layer_builders import identity
from fx2trt_pipeline.trt_types import make_logger

#: One row of :func:`find_unsupported`: (node name, target, reason, source line).
UnsupportedRow = tuple[str, str, str, str]


def _registry() -> Any:
    # Imported lazily: the converter families import fx2trt_pipeline.network builders themselves.
    from fx2trt_pipeline.converters import REGISTRY

    return REGISTRY


def _target_text(node: Node) -> str:
    from fx2trt_pipeline.converters.registry import describe_key, key_of

    key = key_of(node)
    if key is None:
        return str(node.target)
    text = describe_key(key)
    if "." not in text and callable(key) and getattr(key, "__module__", None):
        text = f"{key.__module__}.{text}"  # a torch.fx.wrap-ed helper: say which library it comes from
    return text


def find_unsupported(gm: GraphModule) -> list[UnsupportedRow]:
    """Every node no converter accepts, in graph order, with the reason and its source line.

    Example:
        >>> import torch
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Mish()))
        >>> [row[0] for row in find_unsupported(gm)]
        ['_1']
    """
    registry = _registry()
    rows: list[UnsupportedRow] = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        entry = registry.lookup(node)
        if entry is None:
            reason = "no converter registered for this target"
        elif entry.can_convert is None:
            continue
        else:
            try:
                reason = entry.can_convert(node)
            except Exception as exc:  # a check that crashes is a refusal we can still report
                reason = f"check failed: {exc.__class__.__name__}: {exc}"
            if reason is None:
                continue
        rows.append((node.name, _target_text(node), reason, node_location(node)))
    return rows


def _is_inplace(ctx: ConversionContext, node: Node) -> bool:
    """True when eager torch would mutate ``node.args[0]`` (``relu_``, ``+=``, ``inplace=True``)."""
    if not node.args or not isinstance(node.args[0], Node):
        return False
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv):
            return True
        return bool(node.kwargs.get("inplace", False)) or (name.endswith("_") and not name.endswith("__"))
    if node.op == "call_module":
        return bool(getattr(ctx.module(node), "inplace", False))
    return False


def _convert_node(ctx: ConversionContext, node: Node, registry: Any) -> None:
    def value(arg: Any) -> Any:
        return ctx.values[arg] if isinstance(arg, Node) else arg

    if node.op == "get_attr":
        attr: Any = ctx.gm
        for part in str(node.target).split("."):
            attr = getattr(attr, part)
        ctx.remember_get_attr(node, attr)
        ctx.values[node] = attr
        return
    entry = registry.lookup(node)
    args = map_aggregate(node.args, value)
    kwargs = map_aggregate(node.kwargs, value)
    ctx.values[node] = entry.fn(ctx, node, args, kwargs)
    if _is_inplace(ctx, node):
        # Later users of the mutated tensor must see the new value, as in eager torch.
        ctx.values[node.args[0]] = ctx.values[node]


def _add_inputs(ctx: ConversionContext, gm: GraphModule, inputs: Sequence[InputSpec]) -> None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(inputs):
        raise ConfigError(
            f"The graph has {len(placeholders)} input(s) {[p.name for p in placeholders]} but "
            f"{len(inputs)} InputSpec(s) were given; pass one InputSpec per forward() argument"
        )
    for node, spec in zip(placeholders, inputs):
        tensor = ctx.network.add_input(spec.name, ctx.trt_dtype(spec.dtype), tuple(spec.shape))
        if tensor is None:
            raise ConversionError(
                f"TensorRT refused input {spec.name!r} {spec.shape}: " + "; ".join(ctx.recorded_errors[-3:])
            )
        ctx.values[node] = tensor


def _mark_outputs(ctx: ConversionContext, gm: GraphModule, output_names: Sequence[str] | None) -> None:
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    leaves: list[Any] = []
    map_aggregate(out_node.args[0], lambda a: leaves.append(a))
    if output_names is not None and len(output_names) != len(leaves):
        raise ConfigError(f"{len(output_names)} output name(s) given for {len(leaves)} graph output(s)")
    seen: set[str] = set()
    for i, leaf in enumerate(leaves):
        name = output_names[i] if output_names is not None else f"output{i}"
        tensor = ctx.values.get(leaf) if isinstance(leaf, Node) else None
        if tensor is None or not hasattr(tensor, "is_network_input"):
            raise ConversionError(
                f"Graph output {i} ({leaf}) is not a tensor computed by the network; "
                "only tensor outputs can become engine outputs"
            )
        if tensor.is_network_input or tensor.is_network_output or tensor.name in seen:
            # An output must be a distinct tensor: give inputs / repeated outputs their own copy.
            tensor = identity(ctx, ctx.name(out_node, f"identity{i}"), tensor)
        seen.add(tensor.name)
        tensor.name = name
        ctx.network.mark_output(tensor)


def network_from_graph_module(
    gm: GraphModule,
    inputs: Sequence[InputSpec | torch.Tensor],
    *,
    builder: Any | None = None,
    output_names: Sequence[str] | None = None,
) -> tuple[Any, Any, ConversionContext]:
    """Convert a (quantized) GraphModule into a strongly typed TensorRT network.

    Args:
        gm: the GraphModule (reference-quantized, float, or a torch.ao reference graph).
        inputs: one InputSpec per ``forward`` argument, in order; dynamic dims are ``-1`` and the
            builder config needs an optimization profile from the specs' min/opt/max shapes. Example
            tensors are accepted too (static shapes, named after the placeholders).
        builder: a ``trt.Builder`` to create the network with; a new one (with a logger that records
            errors for our messages) when ``None``.
        output_names: network output names in graph-output order (default ``output0, output1, ...``).

    Returns:
        ``(builder, network, ctx)``; ``ctx`` keeps the weights alive: hold it until the engine is built.

    Raises:
        UnsupportedOpsError: nodes without an accepting converter, all listed, before TensorRT is touched.
        ConversionError: a converter failed on a node (message includes ``node.format_node()``).
        ConfigError: inputs or output names do not match the graph.

    Example:
        >>> import torch
        >>> from fx2trt_pipeline.network.inputs import InputSpec
        >>> gm = torch.fx.symbolic_trace(torch.nn.Flatten())
        >>> spec = InputSpec.dynamic_batch("x", (4, 2), min_batch=1, opt_batch=2, max_batch=8)
        >>> _, network, _ = network_from_graph_module(gm, [spec])
        >>> network.get_output(0).name, tuple(network.get_output(0).shape)
        ('output0', (-1, 8))
    """
    rows = find_unsupported(gm)
    if rows:
        raise UnsupportedOpsError(rows)
    inputs = as_input_specs(gm, inputs)
    trt = trt_api.get_trt()
    errors: list[str] = []
    logger = None
    if builder is None:
        logger = make_logger("ERROR", error_sink=errors)
        builder = trt.Builder(logger)
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flag)
    options = ConversionOptions(output_names=tuple(output_names) if output_names is not None else None)
    ctx = ConversionContext(trt=trt, network=network, gm=gm, options=options, recorded_errors=errors, logger=logger)
    _add_inputs(ctx, gm, inputs)
    registry = _registry()
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        try:
            _convert_node(ctx, node, registry)
        except Exception as exc:  # converter bugs and TensorRT binding errors get the node too
            raise _wrap(exc, node) from exc
    _mark_outputs(ctx, gm, options.output_names)
    return builder, network, ctx


def _wrap(exc: Exception, node: Node) -> ConversionError:
    where = node_location(node)
    message = (
        f"Converting node {node.name!r} failed: {exc.__class__.__name__}: {exc}\n"
        f"  node: {node.format_node()}"
        + (f"\n  source: {where}" if where else "")
        + "\nRemedy: keep this layer out of the converted graph (QuantConfig.skip), rewrite it with "
        "supported ops, or report the failure with this message."
    )
    wrapped = ConversionError(message)
    wrapped.node_name = node.name  # type: ignore[attr-defined]
    return wrapped
