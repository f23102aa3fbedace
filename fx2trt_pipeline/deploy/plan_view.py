"""The report's view of TensorRT's engine plan: totals, a strip of bytes per engine layer coloured by dtype, the
heaviest layers, and the precision audit.

Reads only the run manifest (``plan``, ``plan_audit``, ``plans``), so a report renders without the model.

Example:
    >>> layer = {"name": "conv_U1", "type": "correlation", "bytes": 4096.0, "macs": 1000, "nodes": ["conv"],
    ...          "compute": "conv", "compute_dtype": "Int8", "inputs": [{"dtype": "Int8"}],
    ...          "outputs": [{"dtype": "Float"}], "constants": []}
    >>> svg = plan_strip([("INT8", [layer])])
    >>> svg.startswith("<svg") and "conv_U1" in svg
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from fx2trt_pipeline.deploy.charts import FONT

#: Colour of an engine layer by the dtype it computes in (compute layers) or writes (others).
DTYPE_COLORS = {"Int8": "#2f9e44", "Half": "#1c7ed6", "Float": "#f08c00", "other": "#adb5bd"}
TOP_LAYERS = 12


def layer_dtype(layer: Mapping[str, Any]) -> str:
    """The dtype a layer is drawn in: a compute layer's input dtype, else its first output's dtype."""
    dtype = layer.get("compute_dtype") or next((t["dtype"] for t in layer.get("outputs", [])), None)
    return dtype if dtype in DTYPE_COLORS else "other"


def plan_strip(plans: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], width: int = 1040) -> str:
    """One row per plan: a bar per engine layer along the network, its height the layer's bytes (shared scale)."""
    row_h, label_w, gap = 70, 70, 18
    peak = max((float(layer["bytes"]) for _, layers in plans for layer in layers), default=1.0) or 1.0
    height = len(plans) * (row_h + gap) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'style="max-width:100%;height:auto" {FONT} role="img" aria-label="bytes per engine layer">'
        "<title>Bytes per engine layer, along the network</title>"
    ]
    for row, (label, layers) in enumerate(plans):
        top = row * (row_h + gap) + 4
        parts.append(f'<text x="0" y="{top + row_h / 2:.0f}">{escape(label)}</text>')
        step = (width - label_w) / max(len(layers), 1)
        for i, layer in enumerate(layers):
            h = max(1.0, row_h * float(layer["bytes"]) / peak)
            x = label_w + i * step
            tip = f"{layer['name']} ({layer['type']}, {layer_dtype(layer)}): {float(layer['bytes']) / 1e6:.2f} MB"
            parts.append(
                f'<rect x="{x:.1f}" y="{top + row_h - h:.1f}" width="{max(step - 0.5, 0.8):.1f}" height="{h:.1f}" '
                f'fill="{DTYPE_COLORS[layer_dtype(layer)]}"><title>{escape(tip)}</title></rect>'
            )
    legend_y = height - 6
    for i, (name, color) in enumerate(DTYPE_COLORS.items()):
        x = label_w + i * 110
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _dtypes(tensors: Sequence[Mapping[str, Any]]) -> str:
    return ",".join(dict.fromkeys(t["dtype"] for t in tensors)) or "-"


def plan_view(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the report's plan section shows; empty when the run recorded no plan."""
    plan = manifest.get("plan")
    if not plan:
        return {"plan": None}
    layers = plan.get("layers", [])
    summary = plan.get("summary", {})
    others = manifest.get("plans") or {}
    # the engine's own plan is "int8" (TensorRT's rules) or "chosen" (a placement) among the compared plans
    compared = [(k.upper(), p["layers"]) for k, p in others.items() if isinstance(p, dict) and p.get("layers")]
    strips = compared or [("ENGINE", layers)]
    heavy = sorted(layers, key=lambda layer: -float(layer["bytes"]))[:TOP_LAYERS]
    audit = manifest.get("plan_audit") or {}
    return {
        "plan": {
            "source": plan.get("source", ""),
            "library": plan.get("library", ""),
            "notes": plan.get("notes", []),
            "batch": plan.get("batch", 1),
            "engine_layers": summary.get("engine_layers", len(layers)),
            "mb_per_item": float(summary.get("bytes_per_item", 0.0)) / 1e6,
            "int8": summary.get("int8_compute_layers", 0),
            "float": summary.get("float_compute_layers", 0),
            "gmacs": {k: v / 1e9 for k, v in summary.get("macs_per_item_by_dtype", {}).items()},
            "strip": plan_strip(strips),
            "heavy": [
                {
                    "name": layer["name"],
                    "type": layer["type"],
                    "dtypes": f"{_dtypes(layer['inputs'])} → {_dtypes(layer['outputs'])}",
                    "mb": float(layer["bytes"]) / 1e6,
                    "mmacs": float(layer.get("macs", 0)) / 1e6,
                    "nodes": ", ".join(layer.get("nodes", [])[:3]),
                }
                for layer in heavy
            ],
            "audit_summary": audit.get("summary", ""),
            "audit_passed": audit.get("passed", True),
            "audit_lines": [line for line in audit.get("gate_lines", []) if line.startswith("FAIL")],
            "audit_notes": audit.get("notes", []),
            "file": plan.get("file", ""),
            "lint": [finding["line"] for finding in manifest.get("lint", [])],
            **_comparison(others, manifest.get("placement")),
        }
    }


def _comparison(plans: Mapping[str, Any], placement: Mapping[str, Any] | None) -> dict[str, Any]:
    """INT8 vs FP16 (vs the chosen placement): one row per plan with its estimate per GPU."""
    gpus = list(plans.get("gpus", []))
    if plans.get("fp16_error"):
        return {
            "gpus": [],
            "plan_rows": [],
            "estimate_label": f"FP16 plan not built: {plans['fp16_error']}",
            "slower_on": [],
            "candidates": [],
            "chosen": "",
        }
    rows = [
        {
            "name": key.upper(),
            "layers": plan["engine_layers"],
            "mb": float(plan["bytes_per_item"]) / 1e6,
            "gmac": sum(plan.get("macs_per_item_by_dtype", {}).values()) / 1e9,
            "us": [float(plan["estimates"][g]) * 1e6 for g in gpus],
        }
        for key, plan in plans.items()
        if isinstance(plan, dict) and "estimates" in plan
    ]
    candidates = [
        {
            "label": c["label"],
            "int8": len(c["keep_int8"]),
            "us": [float(c["seconds"][g]) * 1e6 for g in gpus],
            "score": c["score"],
        }
        for c in (placement or {}).get("candidates", [])
    ]
    return {
        "gpus": gpus,
        "plan_rows": rows,
        "estimate_label": plans.get("estimate_label", ""),
        "slower_on": list(plans.get("slower_than_fp16_on", [])),
        "candidates": candidates,
        "chosen": (placement or {}).get("chosen", ""),
    }


def plan_float_rows(manifest: Mapping[str, Any]) -> list[dict[str, str]]:
    """Conv / deconv / matmul layers the plan runs in float, with the audit's reason (for 'kept in float')."""
    audit = manifest.get("plan_audit") or {}
    return [
        {"layer": r["node"], "op": f"{r['kind']} ({r['plan_dtype'] or '?'} in the plan)", "reason": r["reason"]}
        for r in audit.get("rows", [])
        if r["verdict"] != "int8"
    ]


__all__ = ["DTYPE_COLORS", "plan_float_rows", "plan_strip", "plan_view"]
