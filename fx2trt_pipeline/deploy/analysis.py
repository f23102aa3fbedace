"""The facts the report shows, as JSON-friendly dicts: per-layer error, histograms, float layers, figures.

Each function reads one source (the quantized GraphModule, its :class:`QuantState`, the built network)
and returns plain data, so the manifest records it and the report renders it without the model.

Example:
    >>> rows = layer_errors(model, qgm, (x,))                 # doctest: +SKIP
    >>> hists = worst_layer_histograms(qgm, rows, count=6)    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fx2trt_pipeline.capture.functional_layers import is_functional_layer
from fx2trt_pipeline.deploy.charts import display_bins
from fx2trt_pipeline.deploy.graph_svg import WEIGHTED_MODULES, node_kind, op_label
from fx2trt_pipeline.quantize import qdq_ops
from fx2trt_pipeline.quantize.op_rules import rule_for_node
from fx2trt_pipeline.quantize.placement import float_reason
from fx2trt_pipeline.quantize.state import QuantState, get_quant_state
from fx2trt_pipeline.validate.quant_error import quant_error_table


def _num(value: float | None) -> float | None:
    # JSON has no NaN/Infinity in strict parsers: +inf SQNR (an exact layer) is stored as a large number.
    if value is None or math.isnan(value):
        return None
    return 999.0 if math.isinf(value) and value > 0 else float(value)


def group_of_layer(state: QuantState) -> dict[str, str]:
    """Layer (consumer node name) -> the scale group of its quantized activation input."""
    out: dict[str, str] = {}
    for point in state.placement.points.values():
        for consumer, _ in point.uses:
            out.setdefault(consumer, point.group)
    return out


def layer_errors(model: nn.Module, qgm: GraphModule, inputs: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """Per quantized layer: SQNR of the layer alone, accumulated up to it, and of its weights (graph order).

    Uses :func:`fx2trt_pipeline.validate.quant_error.quant_error_table` (values captured with a
    ``torch.fx.Interpreter``), on one batch.
    """
    groups = group_of_layer(get_quant_state(qgm))
    rows = []
    for r in quant_error_table(model, qgm, tuple(inputs)):
        rows.append(
            {
                "layer": r.layer,
                "op": r.op,
                "alone_sqnr_db": _num(r.activation_sqnr_db),
                "alone_cosine": _num(r.activation_cosine),
                "accumulated_sqnr_db": _num(r.accumulated_sqnr_db),
                "weight_sqnr_db": _num(r.weight_sqnr_db),
                "group": groups.get(r.layer),
            }
        )
    return rows


def worst_first(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by ascending layer-alone SQNR (missing values last)."""
    return sorted(
        rows,
        key=lambda r: (
            r["alone_sqnr_db"] is None,
            r["alone_sqnr_db"] or 0.0,
            r["accumulated_sqnr_db"] or 0.0,
        ),
    )


def worst_layer_histograms(qgm: GraphModule, rows: Sequence[dict[str, Any]], count: int = 6) -> list[dict[str, Any]]:
    """|x| histograms of the input scale groups of the ``count`` worst layers, with their thresholds.

    Each entry: layer, group, calibrator, ``counts`` (about 96 display bins over ``[0, max |x|]``),
    ``bin_width``, ``amax`` (largest |x| seen), ``threshold`` (the calibrated amax: scale * 127),
    ``clipped`` (share of values above the threshold).
    """
    state = get_quant_state(qgm)
    if not state.stats:
        return []
    out, seen = [], set()
    for row in worst_first(rows):
        group = row.get("group")
        if group is None or group in seen or group not in state.stats or group not in state.amax:
            continue
        seen.add(group)
        stats, threshold = state.stats[group], float(state.amax[group])
        hist = stats.hist.tolist()
        if stats.count == 0 or stats.bin_width == 0.0:
            continue
        above = sum(c for k, c in enumerate(hist) if k * stats.bin_width >= threshold)
        counts, width = display_bins(hist, stats.bin_width, max(stats.amax, threshold))
        info = state.placement.groups.get(group)
        out.append(
            {
                "layer": row["layer"],
                "group": group,
                "calibrator": info.calibrator if info else "",
                "percentile": info.percentile if info else None,
                "counts": counts,
                "bin_width": width,
                "amax": float(stats.amax),
                "threshold": threshold,
                "clipped": above / stats.count,
                "alone_sqnr_db": row["alone_sqnr_db"],
            }
        )
        if len(out) >= count:
            break
    return out


def kept_in_float(qgm: GraphModule) -> list[dict[str, str]]:
    """Layers TensorRT could run in INT8 but this model keeps in float, with the reason.

    Weighted layers (conv / deconv / linear) left as modules, functional convs / linears whose weight stays
    float, and avg-pool / matmul without Q/DQ on their inputs. Adds are not listed: an add without Q/DQ is
    the intended conv + add fusion.
    """
    state = get_quant_state(qgm)
    config = state.config
    modules = dict(qgm.named_modules())
    out = []
    for node in qgm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        # a functional conv whose weight stays float reads a quantized input: float_reason says it is float
        reason = float_reason(node, modules, config)
        if node_kind(qgm, node) == "int8" and not (reason and is_functional_layer(node)):
            continue
        rule = rule_for_node(node, modules)
        weighted = node.op == "call_module" and isinstance(modules.get(str(node.target)), WEIGHTED_MODULES)
        if rule is None or (rule.kind not in ("avgpool", "matmul") and not weighted and not is_functional_layer(node)):
            continue
        reason = reason or "no quantizable input (placement rules)"
        out.append({"layer": node.name, "op": op_label(qgm, node), "reason": reason})
    return out


def algorithms_run(state: Any) -> dict[str, Any]:
    """Which post-training algorithms ran and on how much of the model (for the build report)."""
    cfg = state.config
    return {
        "equalization": {"on": cfg.equalization, "pairs": len(state.equalized)},
        "bias_correction": {"on": cfg.bias_correction, "layers": len(state.edits.biases)},
        "adaround": {
            "on": cfg.adaround,
            "layers": len(state.edits.rounding),
            "iterations": cfg.adaround_iterations if cfg.adaround else None,
            "batches": cfg.adaround_batches if cfg.adaround else None,
        },
        "auto_per_group": {"on": bool(state.chosen), "chosen": dict(Counter(state.chosen.values()))},
    }


def model_summary(model: nn.Module, qgm: GraphModule) -> dict[str, Any]:
    """Architecture, size and quantization scheme of the model."""
    state = get_quant_state(qgm)
    cfg = state.config
    calibrators = Counter(g.calibrator for g in state.placement.groups.values())
    return {
        "class": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "graph_nodes": len(qgm.graph.nodes),
        "scale_groups": len(state.placement.groups),
        "qdq_pairs": sum(qdq_ops.is_quantize(n) for n in qgm.graph.nodes),
        "int8_weight_layers": len(state.placement.weights),
        "calibrator": cfg.calibrator,
        "percentile": cfg.percentile if cfg.calibrator == "percentile" else None,
        "calibrators_used": dict(calibrators),
        "algorithms": algorithms_run(state),
        "scheme": {
            "activations": "INT8 symmetric per-tensor, zero point 0, range [-128, 127]",
            "weights": ("INT8 symmetric per-channel" if cfg.per_channel_weights else "INT8 symmetric per-tensor")
            + ", narrow range [-127, 127]",
            "rounding": "half to even (TensorRT)",
            "deconv_weight_axis": cfg.deconv_weight_axis,
            "quantized_ops": list(cfg.quantize_ops),
            "skip": list(cfg.skip),
        },
        "state_digest": state.digest(),
    }


def network_figures(network: Any) -> dict[str, Any]:
    """Layer counts of the built TensorRT network, by LayerType (Q/DQ layers counted too)."""
    types = Counter(network.get_layer(i).type.name for i in range(network.num_layers))
    return {
        "layers": int(network.num_layers),
        "by_type": dict(types.most_common()),
        "quantize_layers": types.get("QUANTIZE", 0),
        "dequantize_layers": types.get("DEQUANTIZE", 0),
    }


__all__ = [
    "group_of_layer",
    "kept_in_float",
    "layer_errors",
    "model_summary",
    "network_figures",
    "worst_first",
    "worst_layer_histograms",
]
