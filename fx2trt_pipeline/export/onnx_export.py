"""Export a quantized GraphModule to QDQ ONNX (QuantizeLinear / DequantizeLinear, int8 zero point 0).

Route: the torch.export-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``) with a
``custom_translation_table`` that maps our ``fx2trt::quantize`` / ``fx2trt::dequantize`` custom ops to
``QuantizeLinear`` / ``DequantizeLinear``. Why this route: the TorchScript exporter is deprecated
(slated for removal) and its constant folding would turn ``DequantizeLinear(int8 weight)`` into a
float weight, silently dropping the weight quantization TensorRT needs; the dynamo exporter keeps
int8 weight initializers with their DequantizeLinear. The zero point is an int8 constant shaped like
the scale (ONNX requires that, and makes QuantizeLinear produce int8 rather than uint8); per-channel
Q/DQ carry ``axis``. The result is checked with ``onnx.checker`` (full check), the number of Q/DQ
nodes is verified, and the file is written atomically.

ONNX Runtime runs the model on CPU and TensorRT's ``OnnxParser`` parses and builds it, so the
exported file is both a portable artifact and a second, independent CPU reference. The file is
written at exactly the requested opset, 18 or later: the exporter writes 18 and converts upwards only
(asked for 17 it used to write 18 silently; now that is refused with the reason), the Q/DQ translation
uses the requested opset's ops, and the written version is checked.

Example:
    >>> import torch, fx2trt_pipeline as ftp
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 16, 16)
    >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    >>> from fx2trt_pipeline.export.onnx_export import export_qdq_onnx
    >>> path = export_qdq_onnx(qgm, (x,), "conv_qdq.onnx",
    ...                        input_names=["images"], output_names=["features"], dynamic_batch=True)
    >>> import onnxruntime as ort
    >>> got = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0]
    >>> float(torch.nn.functional.cosine_similarity(torch.from_numpy(got).flatten(), qgm(x).flatten(), 0)) > 0.999
    True
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fx2trt_pipeline.atomic_io import atomic_write_bytes
from fx2trt_pipeline.errors import ExportError, node_location
from fx2trt_pipeline.quantize import int8_ops, qdq_ops
from fx2trt_pipeline.quantize.float_form import float_path

#: Namespaces whose ops the ONNX exporter translates (``fx2trt`` through our translation table).
_EXPORTABLE_NAMESPACES = ("aten", "prims", "fx2trt", "quantized_decomposed")
#: The lowest opset the exporter writes: torch's dynamo exporter emits opset 18 and converts only upwards.
MIN_OPSET = 18


def _translation_table(opset: int, float16: bool = False) -> dict[Any, Any]:
    """Our Q/DQ custom ops -> QuantizeLinear / DequantizeLinear of ``opset`` (an opset-18 op would make
    the exporter write opset 18 whatever was asked).

    ``float16`` (a graph with float16 float parts): ONNX's Q/DQ take the scale's type for their float side,
    and our scales stay float32, so a quantize reads ``Cast(x, float)`` (exact) and a dequantize to float16
    is ``Cast(DequantizeLinear(q, s), float16)``: ``q * s`` in float32 rounded once, our rule exactly
    (ModelOpt's ``high_precision_dtype="fp16"`` rounds the scales to float16 instead)."""
    import numpy as np
    from onnxscript import ir

    op = getattr(importlib.import_module("onnxscript.onnx_opset"), f"opset{opset}")

    def zero_point(scale: Any) -> Any:
        # int8, shaped like the scale: ONNX requires that, and it makes QuantizeLinear produce int8.
        return op.Constant(value=ir.tensor(np.zeros(tuple(scale.shape), dtype=np.int8)))

    def quantize_linear(x: Any, scale: Any, axis: int | None = None) -> Any:
        if float16:
            x = op.Cast(x, to=ir.DataType.FLOAT)
        if axis is None:
            return op.QuantizeLinear(x, scale, zero_point(scale))
        return op.QuantizeLinear(x, scale, zero_point(scale), axis=axis)

    def dequantize_linear(q: Any, scale: Any, axis: int | None = None, out_dtype: Any = None) -> Any:
        if axis is None:
            y = op.DequantizeLinear(q, scale, zero_point(scale))
        else:
            y = op.DequantizeLinear(q, scale, zero_point(scale), axis=axis)
        # The exporter hands torch dtypes over as ONNX DataType values (ir.DataType.FLOAT16).
        half = out_dtype in (torch.float16, ir.DataType.FLOAT16)
        return op.Cast(y, to=ir.DataType.FLOAT16) if half else y

    return {qdq_ops.QUANTIZE: quantize_linear, qdq_ops.DEQUANTIZE: dequantize_linear}


def _target_label(node: torch.fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _is_torch_ao_quant(node: torch.fx.Node) -> bool:
    """``torch.quantize_per_tensor/_channel(...)`` or ``Tensor.dequantize()`` calls."""
    if node.op == "call_method":
        return node.target == "dequantize"
    return node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.quantize_per_channel)


def unexportable_nodes(gm: torch.fx.GraphModule) -> list[tuple[str, str, str, str]]:
    """``(node, target, reason, source line)`` for nodes the ONNX exporter cannot translate.

    Catches what we can know before exporting: torch.ao quantized-tensor calls and custom ops of
    namespaces without an ONNX translation. Anything else the exporter refuses is reported by
    :func:`export_qdq_onnx` with the exporter's message.
    """
    rows = []
    for node in gm.graph.nodes:
        if _is_torch_ao_quant(node):
            reason = (
                "torch.ao quantized (qint8) tensors have no ONNX translation; quantize with "
                "ftp.quantize_model(), whose Q/DQ ops export"
            )
            rows.append((node.name, _target_label(node), reason, node_location(node)))
            continue
        namespace = getattr(node.target, "namespace", None)
        if node.op == "call_function" and namespace is not None and namespace not in _EXPORTABLE_NAMESPACES:
            reason = f"custom op of namespace {namespace!r} has no ONNX translation"
            rows.append((node.name, str(node.target), reason, node_location(node)))
    return rows


def _raise_unexportable(rows: list[tuple[str, str, str, str]], detail: str = "") -> None:
    lines = [f"{len(rows)} node(s) cannot be exported to ONNX:"]
    lines += [f"  - {n} ({t}): {r}" + (f"  [{w}]" if w else "") for n, t, r, w in rows]
    if detail:
        lines.append(detail)
    raise ExportError("\n".join(lines))


@contextlib.contextmanager
def _quiet_eval(gm: torch.nn.Module) -> Iterator[None]:
    """Export in eval mode (restoring the caller's mode) without the exporter's chatter."""
    was_training = gm.training
    switch = _can_switch_mode(gm)
    if switch:
        gm.eval()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if switch:
            gm.train(was_training)


def _can_switch_mode(gm: torch.nn.Module) -> bool:
    # PT2E models (prepare_pt2e / convert_pt2e) refuse train() / eval(): their graph is already fixed.
    try:
        gm.train(gm.training)
    except NotImplementedError:
        return False
    return True


def _dynamic_shapes(gm: torch.fx.GraphModule, n_inputs: int) -> tuple[dict[int, Any], ...]:
    # One shared Dim: every input's dim 0 is the same batch. Dim.DYNAMIC (unlike a named Dim) does
    # not fail when the example batch is 1.
    del gm
    return tuple({0: torch.export.Dim.DYNAMIC} for _ in range(n_inputs))


def _count_qdq(model: Any) -> tuple[int, int]:
    ops = [n.op_type for n in model.graph.node]
    return ops.count("QuantizeLinear"), ops.count("DequantizeLinear")


@dataclass(frozen=True)
class _Naming:
    """How the exporter names and shapes the model (the keyword arguments of :func:`export_qdq_onnx`)."""

    input_names: Sequence[str] | None
    output_names: Sequence[str] | None
    dynamic_batch: bool
    opset: int


def export_qdq_onnx(
    qgm: torch.fx.GraphModule,
    example_inputs: Sequence[torch.Tensor],
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = False,
    opset: int = MIN_OPSET,
) -> Path:
    """Export a quantized GraphModule to a QDQ ONNX file that ONNX Runtime and TensorRT accept.

    Integer-arithmetic layers (:mod:`fx2trt_pipeline.quantize.int8_ops`) export as their functional
    op (Conv / ConvTranspose / Gemm between DequantizeLinear nodes), which is how ONNX states them;
    how a runtime sums them is its own business (ONNX Runtime without graph optimizations: float32).

    Args:
        qgm: the reference-quantized GraphModule (``ftp.quantize_model()``), or any exportable module.
        example_inputs: positional example inputs (CPU tensors).
        path: destination ``.onnx`` file; written atomically.
        input_names: ONNX input names (default: the GraphModule's placeholder names).
        output_names: ONNX output names (default: ``output_0, output_1, ...``).
        dynamic_batch: make dim 0 of every input (and so of the outputs) dynamic, one shared batch dim.
        opset: ONNX opset of the written model, exactly (:data:`MIN_OPSET` or later).

    Returns:
        The written path.

    Raises:
        ExportError: nodes without an ONNX translation (all named), an exporter failure, an opset
            that cannot be written, or a model that fails ``onnx.checker``.

    Example:
        >>> import torch, fx2trt_pipeline as ftp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
        >>> x = torch.randn(2, 3, 16, 16)
        >>> qgm = ftp.quantize_model(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
        >>> export_qdq_onnx(qgm, (x,), "model.onnx", input_names=["images"], output_names=["features"]).name
        'model.onnx'
    """
    opts = _Naming(input_names, output_names, dynamic_batch, opset)
    if opts.opset < MIN_OPSET:
        raise ExportError(
            f"opset {opts.opset} cannot be written: the torch.export-based ONNX exporter writes opset "
            f"{MIN_OPSET} or later (its version converter does not go lower, and ONNX's own converter "
            f"breaks ReduceMean); export with opset={MIN_OPSET}, which TensorRT's OnnxParser and ONNX "
            "Runtime read"
        )
    rows = unexportable_nodes(qgm)
    if rows:
        _raise_unexportable(rows)
    # Decided on the GraphModule as given: its float path may have no float16 dequantize left.
    float16 = any(qdq_ops.is_dequantize(n) and torch.float16 in n.args[3:4] for n in qgm.graph.nodes)
    exportable = float_path(qgm) if any(int8_ops.is_integer_op(n) for n in qgm.graph.nodes) else qgm
    model = _export_model(exportable, tuple(example_inputs), opts, float16)
    if opts.dynamic_batch:
        _name_batch_dim(model)
    if opts.output_names is None:
        for i, out in enumerate(model.graph.output):
            _rename_value(model, out.name, f"output_{i}")
    _check_model(model, qgm, opts.opset)
    return atomic_write_bytes(Path(path), model.SerializeToString())


def _export_model(
    gm: torch.fx.GraphModule, example: tuple[torch.Tensor, ...], opts: _Naming, float16: bool = False
) -> Any:
    """The exporter's ModelProto; its failures name the graph nodes the message mentions."""
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    names_in = list(opts.input_names) if opts.input_names is not None else placeholders[: len(example)]
    table = _translation_table(opts.opset, float16)
    try:
        with _quiet_eval(gm):
            program = torch.onnx.export(
                gm,
                example,
                dynamo=True,
                opset_version=opts.opset,
                input_names=names_in,
                output_names=list(opts.output_names) if opts.output_names is not None else None,
                dynamic_shapes=_dynamic_shapes(gm, len(example)) if opts.dynamic_batch else None,
                custom_translation_table=table,
                verbose=False,
                report=False,
            )
    except Exception as exc:  # the exporter raises many types; name the graph nodes it mentions
        message = f"{exc.__class__.__name__}: {exc}"
        mentioned = [
            (n.name, _target_label(n), "named in the exporter's error", node_location(n))
            for n in gm.graph.nodes
            if n.op.startswith("call") and _target_label(n) in message
        ]
        if mentioned:
            _raise_unexportable(mentioned, f"ONNX export failed: {message[:2000]}")
        raise ExportError(f"ONNX export failed: {message[:2000]}") from exc
    return program.model_proto


def _check_model(model: Any, qgm: torch.fx.GraphModule, opset: int) -> None:
    """``onnx.checker`` (full), the requested opset, and no Q/DQ node lost on the way."""
    onnx = importlib.import_module("onnx")
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(
            f"The exporter wrote opset {written} where {opset} was asked; export with opset={written} "
            "or a torch/onnxscript version that can write the requested opset"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"The exported ONNX model fails onnx.checker: {exc}") from exc
    want_q = sum(qdq_ops.is_any_quantize(n) for n in qgm.graph.nodes)
    want_dq = qdq_ops.distinct_dequantize_count(qgm)
    got_q, got_dq = _count_qdq(model)
    if got_q < want_q or got_dq < want_dq:
        raise ExportError(
            f"The exporter dropped Q/DQ nodes ({got_q}/{want_q} QuantizeLinear, {got_dq}/{want_dq} "
            "DequantizeLinear): the ONNX model would not be quantized like the GraphModule"
        )


def _rename_value(model: Any, old: str, new: str) -> None:
    """Rename a value everywhere in a ModelProto's main graph."""
    if old == new:
        return
    for node in model.graph.node:
        node.input[:] = [new if v == old else v for v in node.input]
        node.output[:] = [new if v == old else v for v in node.output]
    for value in (*model.graph.output, *model.graph.value_info):
        if value.name == old:
            value.name = new


def _name_batch_dim(model: Any) -> None:
    """Call the exporter's symbol for dim 0 of the inputs ``batch`` (it picks names like ``s77``)."""
    symbols = {
        i.type.tensor_type.shape.dim[0].dim_param
        for i in model.graph.input
        if i.type.tensor_type.shape.dim and i.type.tensor_type.shape.dim[0].dim_param
    }
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = "batch"
