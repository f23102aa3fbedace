"""``report.html``: one self-contained page rendered from a run manifest (``fx2trt_run.json``).

::

    manifest (model summary, evaluation rows + gate lines, per-layer SQNR, histograms, float layers,
              engine metadata, network figures, step times, artifacts) + graph.svg
        -> view data (numbers formatted here) -> Jinja2 template (report_template.TEMPLATE) -> HTML

The page has no scripts and no external resources: CSS is inline, charts are inline SVG.

Example:
    >>> import json
    >>> manifest = json.load(open("out/demo/fx2trt_run.json"))                    # doctest: +SKIP
    >>> html = render_report(manifest, open("out/demo/graph.svg").read())          # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jinja2

from fx2trt_pipeline.deploy.charts import Histogram, histogram, optional_float, sqnr_bars, sqnr_color, step_bars
from fx2trt_pipeline.deploy.plan_view import plan_float_rows, plan_view
from fx2trt_pipeline.deploy.report_template import TEMPLATE
from fx2trt_pipeline.engine.compatibility import deployment_target

#: Layers shown in the SQNR chart (worst first); the table below it lists all of them.
CHART_LAYERS = 20
METRIC_COLUMNS = ("mAP", "AP50", "top1", "top5", "agree_top1", "agree_top5")


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    return f"{n:.2f} GB"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{1000 * value:.0f} ms" if value < 1.0 else f"{value:.1f} s"


def _pts(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "∞" if value >= 999.0 else f"{value:.1f}"


def _accuracy_rows(evaluation: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    rows = evaluation.get("rows", [])
    cols = [m for m in METRIC_COLUMNS if any(m in r.get("metrics", {}) for r in rows)]
    primary = evaluation.get("metric")
    fp32 = next((r["metrics"].get(primary) for r in rows if r["key"] == "fp32"), None) if primary else None
    out = []
    for r in rows:
        value = r["metrics"].get(primary) if primary else None
        delta = "-" if value is None or fp32 is None or r["key"] == "fp32" else f"{100 * (value - fp32):+.2f}"
        status = {"ok": "ok", "failed": "FAIL: " + r.get("note", ""), "skipped": r.get("note", "skipped")}
        out.append(
            {
                **r,
                "metric_text": {m: _pts(r["metrics"].get(m)) for m in cols},
                "delta": delta,
                "cos": "-" if r.get("cosine_vs_simulated") is None else f"{r['cosine_vs_simulated']:.6f}",
                "cos_fp32": "-" if r.get("cosine_vs_fp32") is None else f"{r['cosine_vs_fp32']:.6f}",
                "images": r.get("images") or "-",
                "sqnr": _db(r.get("sqnr_vs_fp32")) + (" dB" if r.get("sqnr_vs_fp32") is not None else ""),
                "seconds": f"{r['seconds']:.1f}" if r.get("status") != "skipped" else "-",
                "status_text": status.get(r.get("status", "ok"), r.get("status", "")),
            }
        )
    return cols, out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _output_rows(evaluation: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every output of every INT8 row vs FP32 and vs the simulated model (the parity batch)."""
    return [
        {
            "backend": r["key"],
            "name": o["name"],
            "shape": "x".join(str(d) for d in o["shape"]),
            "cos_fp32": _num(o.get("cosine_vs_fp32"), ".6f"),
            "abs_fp32": _num(o.get("max_abs_vs_fp32"), ".3g"),
            "cos_sim": _num(o.get("cosine_vs_simulated"), ".6f"),
            "abs_sim": _num(o.get("max_abs_vs_simulated"), ".3g"),
        }
        for r in evaluation.get("rows", [])
        if r.get("status") != "skipped"
        for o in r.get("outputs", [])
    ]


def _parity_tiles(ev: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """One tile: the lowest output cosine vs the simulated model, naming the engine-side backend it is from."""
    cos = [(r["cosine_vs_simulated"], key) for key, r in rows.items() if r.get("cosine_vs_simulated") is not None]
    if not cos:
        return []
    value, key = min(cos)
    others = [k for _, k in cos if k != key]
    return [
        {
            "k": f"Parity: {key} vs simulated",
            "v": f"{value:.6f}",
            "d": f"lowest output cosine on {ev.get('parity_images', '?')} images"
            + (f" (also checked: {', '.join(others)})" if others else ""),
        }
    ]


def _tiles(m: Mapping[str, Any]) -> list[dict[str, str]]:
    ev, engine, model = m.get("evaluation") or {}, m.get("engine", {}), m.get("model", {})
    rows = {r["key"]: r for r in ev.get("rows", [])}
    primary = ev.get("metric")
    tiles = []
    if primary and "fp32" in rows and ev.get("engine_backend") in rows:
        eng = rows[ev["engine_backend"]]["metrics"].get(primary)
        fp = rows["fp32"]["metrics"].get(primary)
        agree = rows[ev["engine_backend"]]["metrics"].get("agree_top1")
        n = ev.get("num_samples", 0)
        changed = "" if agree is None else f", {round((1 - agree) * n)} of {n} predictions changed vs FP32"
        tiles.append(
            {
                "k": f"{primary} FP32 → INT8",
                "v": f"{_pts(fp)} → {_pts(eng)}",
                "d": f"{n} images, engine side: {ev.get('engine_backend')}{changed}",
            }
        )
    tiles += _parity_tiles(ev, rows)
    build = engine.get("build", {})
    tiles.append(
        {
            "k": "Engine size",
            "v": _size(engine.get("engine", {}).get("size_bytes")),
            "d": f"{m.get('network', {}).get('layers', '?')} network layers",
        }
    )
    tiles.append(
        {
            "k": "Engine build",
            "v": _secs(build.get("build_seconds")),
            "d": f"whole run {sum(s['seconds'] for s in m.get('steps', [])):.1f} s",
        }
    )
    counts = (m.get("plan_audit") or {}).get("counts")
    if counts:  # what TensorRT's plan runs, not what the quantizer meant to quantize
        int8, where = counts["int8_in_plan"], "in TensorRT's plan"
        floats = counts["failed"] + counts["no_int8_kernel"] + counts["kept_in_float"]
    else:
        int8, floats, where = model.get("int8_weight_layers", 0), len(m.get("kept_in_float", [])), "in the graph"
    tiles.append(
        {
            "k": "INT8 / float layers",
            "v": f"{int8} / {floats}",
            "d": f"convs and matmuls {where}; {model.get('scale_groups', 0)} activation scales",
        }
    )
    pct = f" {model['percentile']}" if model.get("percentile") else ""
    tiles.append({"k": "Calibrator", "v": f"{model.get('calibrator', '?')}{pct}", "d": "per-channel weights"})
    tiles.append(
        {
            "k": "PTQ algorithms",
            "v": _algorithms_label(model.get("algorithms", {})),
            "d": "equalization, bias correction, AdaRound",
        }
    )
    return tiles


def _algorithms_label(algorithms: Mapping[str, Any]) -> str:
    """``"equalization (52 pairs), bias correction (52 layers)"`` or ``"none"``."""
    counts = {"equalization": "pairs", "bias_correction": "layers", "adaround": "layers"}
    ran = [
        f"{name.replace('_', ' ')} ({algorithms[name].get(unit, 0)} {unit})"
        for name, unit in counts.items()
        if algorithms.get(name, {}).get("on")
    ]
    return ", ".join(ran) or "none"


def _hist_views(hists: list[Mapping[str, Any]], images: int) -> list[dict[str, str]]:
    out = []
    for h in hists:
        layer = h["layer"] if len(h["layer"]) <= 32 else h["layer"][:31] + "…"
        title = f"input of {layer}"
        svg = histogram(Histogram(h["counts"], h["bin_width"], h["threshold"], h["amax"]), title=title)
        pct = f" {h['percentile']}" if h.get("calibrator") == "percentile" else ""
        out.append(
            {
                "svg": svg,
                "caption": f"input of {h['layer']} (scale group {h['group']}) · {images} calibration images · "
                f"{h.get('calibrator', '')}{pct} threshold {h['threshold']:.4g} of max {h['amax']:.4g} · "
                f"SQNR of {h['layer']} alone {_db(h.get('alone_sqnr_db'))} dB",
            }
        )
    return out


def _search_view(search: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not search:
        return None
    metric, fp32 = search["metric"], (search.get("fp32") or {}).get(search["metric"])
    rows = []
    for r in search["rows"]:
        value = r["metrics"].get(metric)
        delta = "-" if value is None or fp32 is None else f"{100 * (value - fp32):+.2f}"
        rows.append(
            {
                "label": r["label"],
                "value": _pts(value),
                "agree": _pts(r["metrics"].get("agree_top1")),
                "cosine": "-" if r["metrics"].get("cosine_fp32") is None else f"{r['metrics']['cosine_fp32']:.6f}",
                "delta": delta,
                "seconds": f"{r['seconds']:.1f}",
                "chosen": r["label"] == search["best"],
            }
        )
    order = ", then ".join(search.get("order") or [metric])
    fp32_text = None if fp32 is None else _pts(fp32)
    return {"metric": metric, "fp32": fp32_text, "rows": rows, "note": search.get("note", ""), "order": order}


def _model_rows(m: Mapping[str, Any]) -> list[tuple[str, str]]:
    model, scheme = m.get("model", {}), m.get("model", {}).get("scheme", {})
    inputs = "; ".join(
        f"{i['name']} {i['shape']} {i['dtype']}"
        + (f" (batch {i['min_shape'][0]}/{i['opt_shape'][0]}/{i['max_shape'][0]})" if i.get("min_shape") else "")
        for i in m.get("inputs", [])
    )
    outputs = "; ".join(f"{o['name']} {o['shape']}" for o in m.get("engine", {}).get("outputs", []))
    return [
        ("model", f"{m.get('config', {}).get('model', {}).get('source', '')} ({model.get('class', '')})"),
        ("parameters", f"{model.get('parameters', 0) / 1e6:.3f} M"),
        ("inputs", inputs),
        ("outputs", outputs),
        ("activations", scheme.get("activations", "")),
        ("weights", scheme.get("weights", "")),
        ("rounding", scheme.get("rounding", "")),
        ("Q/DQ pairs", str(model.get("qdq_pairs", ""))),
        ("quantized op kinds", ", ".join(scheme.get("quantized_ops", []))),
        ("skip patterns", ", ".join(scheme.get("skip", [])) or "none"),
        ("ConvTranspose weight axis", str(scheme.get("deconv_weight_axis", ""))),
        ("state digest", str(model.get("state_digest", ""))[:16] + "…"),
    ]


def _build_rows(m: Mapping[str, Any]) -> list[tuple[str, str]]:
    engine = m.get("engine", {})
    build, lib = engine.get("build", {}), engine.get("library", {})
    options = {k: v for k, v in engine.get("build_options", {}).items() if v not in (None, [], "")}
    return [
        ("library", f"{lib.get('name', '')} {lib.get('version', '')}"),
        ("targets", ", ".join(engine.get("target_compute_capabilities", [])) or "-"),
        ("network conversion", _secs(build.get("network_seconds"))),
        ("engine build", _secs(build.get("build_seconds"))),
        ("engine size", _size(engine.get("engine", {}).get("size_bytes"))),
        ("build options", ", ".join(f"{k}={v}" for k, v in options.items()) or "TensorRT defaults"),
        ("Triton model", f"triton/{m.get('triton_model', '')}"),
        ("engine sha256", str(engine.get("engine", {}).get("sha256", ""))[:16] + "…"),
    ]


def _preprocess_text(spec: Mapping[str, Any] | None) -> str:
    """``"resize 232, centre crop 224x224, mean [...], std [...], 3 channels"`` (``""`` without one)."""
    if not spec:
        return ""
    size = "x".join(str(v) for v in spec["size"]) if spec.get("size") else "image size"
    shape = f"resize {spec['resize']}, centre crop {size}" if spec.get("resize") else f"{spec.get('mode')} {size}"
    channels = f", {spec['channels']} channels" if spec.get("channels") else ""
    how = f", {spec.get('interpolation', 'bilinear')}" + (" antialiased" if spec.get("antialias", True) else "")
    weights = f" (torchvision {spec['weights']} transforms)" if spec.get("weights") else ""
    return f"{shape}{how}, mean {spec.get('mean')}, std {spec.get('std')}{channels}{weights}"


def _accuracy_view(manifest: Mapping[str, Any]) -> dict[str, Any]:
    ev = manifest.get("evaluation") or {}
    cols, rows = _accuracy_rows(ev)
    reason, engine = ev.get("engine_reason", ""), ev.get("engine_backend") or "none"
    if ev.get("metric"):
        lead = (
            f"{ev.get('task', 'none')} task on {ev.get('num_samples', 0)} evaluation images; Δ in points. "
            f"Engine side: {engine} ({reason})."
        )
    else:
        lead = (
            f"No task metric (no labels); agreement with FP32 on {ev.get('num_samples', 0)} images. "
            f"Engine side: {engine} ({reason})."
        )
    if manifest.get("eval_on_calibration"):
        lead += (
            " These are calibration images (no --eval-data): the scales were fitted to them, so the agreement is "
            "optimistic."
        )
    if ev.get("data_note"):
        lead += f" {ev['data_note'][0].upper()}{ev['data_note'][1:]}."
    return {
        "output_rows": _output_rows(ev),
        "accuracy_lead": lead,
        "metric_cols": cols,
        "rows": rows,
        "primary": ev.get("metric"),
        "engine_backend": ev.get("engine_backend"),
        "gate": [
            {"cls": "pass" if line.startswith("PASS") else "fail", "text": line} for line in ev.get("gate_lines", [])
        ],
        "parity_images": ev.get("parity_images", 0),
        "warnings": ev.get("warnings", []),
        "labels": manifest.get("labels"),
        "preprocess": _preprocess_text(manifest.get("preprocess")),
    }


def _layer_view(manifest: Mapping[str, Any]) -> dict[str, Any]:
    images = manifest.get("images") or {}
    layers = manifest.get("layers", [])
    worst = sorted(layers, key=lambda r: (r["alone_sqnr_db"] is None, r["alone_sqnr_db"] or 0.0))
    chart_rows = [(r["layer"], optional_float(r["alone_sqnr_db"]), r["op"]) for r in worst[:CHART_LAYERS]]
    return {
        "sqnr_chart": sqnr_bars(chart_rows) if chart_rows else "",
        "layer_count": len(layers),
        "layer_batch": images.get("layers", 8),
        "layers_error": manifest.get("layers_error"),
        "layer_rows": [
            {
                "layer": r["layer"],
                "op": r["op"],
                "alone": _db(r["alone_sqnr_db"]),
                "accum": _db(r["accumulated_sqnr_db"]),
                "weight": _db(r["weight_sqnr_db"]),
                "group": r.get("group") or "-",
                "color": sqnr_color(optional_float(r["alone_sqnr_db"])),
            }
            for r in worst
        ],
        "hists": _hist_views(manifest.get("histograms", []), images.get("calibration", 0)),
        "calib_images": images.get("calibration", 0),
    }


def _kept_in_float(manifest: Mapping[str, Any]) -> list[dict[str, str]]:
    """The quantizer's float layers, then every conv / matmul TensorRT's plan runs in float that it did not list."""
    rows = list(manifest.get("kept_in_float", []))
    listed = {r["layer"] for r in rows}
    return rows + [r for r in plan_float_rows(manifest) if r["layer"] not in listed]


def render_report(manifest: Mapping[str, Any], graph_svg: str = "", output_hint: str = "<output dir>") -> str:
    """The report page for a run manifest (see :mod:`fx2trt_pipeline.deploy.pipeline`).

    Args:
        manifest: the run manifest dict.
        graph_svg: the SVG drawing of the quantized graph (embedded, collapsed).
        output_hint: how the footer names the output directory.
    """
    view = {
        "name": manifest.get("config", {}).get("model", {}).get("name") or manifest.get("triton_model") or "model",
        "passed": manifest.get("passed", False),
        "deployment_target": deployment_target(manifest["engine"]) if manifest.get("engine") else "",
        "created": manifest.get("created", ""),
        "versions": manifest.get("versions", {}),
        "tiles": _tiles(manifest),
        **_accuracy_view(manifest),
        **_layer_view(manifest),
        "kept": _kept_in_float(manifest),
        **plan_view(manifest),
        "model_rows": _model_rows(manifest),
        "build_rows": _build_rows(manifest),
        "layer_types": list(manifest.get("network", {}).get("by_type", {}).items()),
        "steps_chart": step_bars([(s["name"], s["seconds"]) for s in manifest.get("steps", [])]),
        "artifacts": [
            {"path": a["path"], "size": _size(a["bytes"]), "sha": a["sha256"][:12]}
            for a in manifest.get("artifacts", [])
        ],
        "search": _search_view(manifest.get("calibrator_search")),
        "graph_svg": graph_svg,
        "output_hint": output_hint,
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    return env.from_string(TEMPLATE).render(**view)


__all__ = ["render_report"]
