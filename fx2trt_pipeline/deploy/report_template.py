# ruff: noqa: E501  (an HTML template: its lines follow the markup, not Python's width)
"""The HTML template of ``report.html`` (Jinja2, autoescaped), kept as a module so it installs with the code.

Everything is inline: CSS here, charts as SVG strings from :mod:`fx2trt_pipeline.deploy.charts`.
No scripts and no external resources, so the page opens offline and from a CI artifact store.
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ name }} · fx2trt INT8 build report</title>
<style>
:root { --ink:#212529; --muted:#6c757d; --line:#dee2e6; --bg:#f4f5f7; --card:#fff; --ok:#2f9e44; --bad:#e03131;
        --warn:#f08c00; --accent:#3b5bdb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial,
       sans-serif; }
main { max-width:1120px; margin:0 auto; padding:24px 20px 48px; }
header { display:flex; align-items:center; gap:16px; flex-wrap:wrap; margin-bottom:18px; }
header h1 { font-size:24px; margin:0; }
header .sub { color:var(--muted); width:100%; margin-top:-8px; }
.badge { display:inline-block; padding:3px 12px; border-radius:999px; font-weight:700; font-size:13px; color:#fff; }
.badge.pass { background:var(--ok); } .badge.fail { background:var(--bad); }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(160px, 1fr)); gap:12px; margin-bottom:18px; }
.tile { background:var(--card); border-radius:10px; padding:12px 14px; box-shadow:0 1px 2px rgba(0,0,0,.07); }
.tile .k { color:var(--muted); font-size:12.5px; font-weight:600; }
.tile .v { font-size:22px; font-weight:700; margin-top:2px; white-space:nowrap; }
.tile .d { color:var(--muted); font-size:12px; }
.tile .v.long { font-size:18px; padding-top:3px; }
section { background:var(--card); border-radius:10px; padding:16px 20px; margin-bottom:16px; overflow-x:auto;
          box-shadow:0 1px 2px rgba(0,0,0,.07); }
section h2 { font-size:17px; margin:0 0 4px; }
section p.lead { color:var(--muted); margin:0 0 12px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
td { overflow-wrap:anywhere; }
th { color:var(--muted); font-weight:600; font-size:12px; background:#f8f9fa; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.num { white-space:nowrap; }
tr.skipped td { color:var(--muted); }
tr.failed td { background:#fff5f5; }
tr.chosen td { background:#ebfbee; font-weight:600; }
.gate { list-style:none; padding:0; margin:12px 0 0; }
.gate li { padding:6px 10px; border-radius:6px; margin-bottom:6px; font-family:ui-monospace, Menlo, monospace;
           font-size:12.5px; word-break:break-word; }
.gate li.pass { background:#ebfbee; border-left:4px solid var(--ok); }
.gate li.fail { background:#fff5f5; border-left:4px solid var(--bad); }
.hists { display:grid; grid-template-columns:repeat(auto-fill, minmax(420px, 1fr)); gap:12px; }
.hist { border:1px solid var(--line); border-radius:8px; padding:8px 8px 4px; }
.hist .cap { color:var(--muted); font-size:12px; margin:2px 4px 4px; }
.two { display:grid; grid-template-columns:1fr 1fr; gap:16px; align-items:start; }
@media (max-width: 820px) { .two { grid-template-columns:1fr; } }
details summary { cursor:pointer; color:var(--accent); margin:8px 0; }
.graph { overflow:auto; max-height:780px; border:1px solid var(--line); border-radius:8px; }
.muted { color:var(--muted); } .bad { color:var(--bad); font-weight:600; } code { font-size:12.5px; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
</style>
</head>
<body><main>
<header>
  <h1>{{ name }} <span class="muted" style="font-weight:400">INT8 engine</span></h1>
  <span class="badge {{ 'pass' if passed else 'fail' }}">{{ 'GATE PASSED' if passed else 'GATE FAILED' }}</span>
  <div class="sub">{{ created }} · {{ versions.tensorrt_library }} · torch {{ versions.torch }} ·
    fx2trt-pipeline {{ versions.fx2trt_pipeline }}</div>
  {% if deployment_target %}<div class="sub" id="deployment-target">{{ deployment_target }}</div>{% endif %}
</header>

<div class="tiles">
{% for t in tiles %}  <div class="tile"><div class="k">{{ t.k }}</div><div class="v{{ ' long' if t.v | length > 9 else '' }}">{{ t.v }}</div><div class="d">{{ t.d }}</div></div>
{% endfor %}</div>

<section id="accuracy">
  <h2>Accuracy</h2>
  <p class="lead">{{ accuracy_lead }}</p>
  <table>
    <tr><th>backend</th><th>runs on</th>{% for m in metric_cols %}<th class="num">{{ m }}</th>{% endfor %}
        <th class="num">Δ {{ primary or 'metric' }} vs FP32</th><th class="num">cosine vs FP32</th>
        <th class="num">cosine vs simulated</th><th class="num">SQNR vs FP32</th><th class="num">images</th>
        <th class="num">seconds</th><th>status</th></tr>
    {% for r in rows %}<tr class="{{ r.status }}">
      <td><b>{{ r.label }}</b>{% if r.key == engine_backend %} <span class="muted">(engine)</span>{% endif %}</td>
      <td>{{ r.runs_on }}</td>
      {% for m in metric_cols %}<td class="num">{{ r.metric_text[m] }}</td>{% endfor %}
      <td class="num">{{ r.delta }}</td><td class="num">{{ r.cos_fp32 }}</td><td class="num">{{ r.cos }}</td>
      <td class="num">{{ r.sqnr }}</td><td class="num">{{ r.images }}</td>
      <td class="num">{{ r.seconds }}</td><td>{{ r.status_text }}</td></tr>
    {% endfor %}
  </table>
  <p class="muted">agree_top1 / agree_top5: share of images whose FP32 top-1 class is the backend's top-1 / among
    its top 5 (no labels needed); cosine vs FP32 over every evaluated output{% if labels %}; labels: {{ labels }}{% endif %}{% if preprocess %}; preprocessing: {{ preprocess }}{% endif %}.
    Output parity (cosine vs simulated, SQNR) on {{ parity_images }} images.</p>
  {% if output_rows %}<h3>Output parity</h3>
  <p class="muted">Every output of every INT8 backend on {{ parity_images }} images: cosine and largest absolute
    error vs the FP32 model and vs the simulated INT8 model.</p>
  <table><tr><th>backend</th><th>output</th><th>shape</th><th class="num">cosine vs FP32</th>
    <th class="num">max abs vs FP32</th><th class="num">cosine vs simulated</th><th class="num">max abs vs simulated</th></tr>
  {% for o in output_rows %}<tr><td>{{ o.backend }}</td><td>{{ o.name }}</td><td>{{ o.shape }}</td>
    <td class="num">{{ o.cos_fp32 }}</td><td class="num">{{ o.abs_fp32 }}</td><td class="num">{{ o.cos_sim }}</td>
    <td class="num">{{ o.abs_sim }}</td></tr>
  {% endfor %}</table>{% endif %}
  {% for w in warnings %}<p class="fail">WARNING {{ w }}</p>{% endfor %}
  <ul class="gate">{% for g in gate %}<li class="{{ g.cls }}">{{ g.text }}</li>{% endfor %}</ul>
</section>

{% if search %}<section id="calibrators">
  <h2>Calibrator search</h2>
  {% if search.note %}<p class="lead">Ranked by {{ search.order }}; {{ search.note }}.</p>{% endif %}
  <p class="lead">Every calibrator derived from the one calibration pass (no extra forward passes) and scored on the
    evaluation images with the simulated INT8 model (by {{ search.metric }}; agreement with FP32 when the images carry
    no labels); the best is kept, ties broken by agreement with FP32, then output cosine with FP32, then the simpler
    calibrator. It was chosen on the images it is reported on: confirm it on a held-out split before quoting the number.</p>
  <table><tr><th>calibrator</th><th class="num">{{ search.metric }}</th><th class="num">Δ vs FP32 (points)</th>
    <th class="num">agree_top1</th><th class="num">cosine vs FP32</th><th class="num">seconds</th><th></th></tr>
  {% if search.fp32 is not none %}<tr><td>FP32</td><td class="num">{{ search.fp32 }}</td><td></td><td></td><td></td><td></td><td></td></tr>{% endif %}
  {% for r in search.rows %}<tr class="{{ 'chosen' if r.chosen else '' }}"><td>{{ r.label }}</td><td class="num">{{ r.value }}</td>
    <td class="num">{{ r.delta }}</td><td class="num">{{ r.agree }}</td><td class="num">{{ r.cosine }}</td>
    <td class="num">{{ r.seconds }}</td><td>{{ '← chosen' if r.chosen else '' }}</td></tr>{% endfor %}
  </table>
</section>{% endif %}

<section id="layers">
  <h2>Per-layer quantization error</h2>
  <p class="lead">SQNR of each quantized layer run alone (float inputs through its own Q/DQ, INT8 weights) against
    the FP32 layer, worst first; {{ layer_count }} layers on {{ layer_batch }} calibration images (chart and table).
    Red &lt; 10 dB, orange &lt; 20 dB, yellow &lt; 30 dB, green above.</p>
  {% if layers_error %}<p class="muted">Per-layer analysis unavailable: {{ layers_error }}</p>{% endif %}
  {{ sqnr_chart | safe }}
  {% if layer_rows %}<details><summary>All {{ layer_rows | length }} layers</summary>
  <table><tr><th>layer</th><th>op</th><th class="num">alone SQNR dB</th><th class="num">accumulated SQNR dB</th>
    <th class="num">weight SQNR dB</th><th>scale group</th></tr>
  {% for l in layer_rows %}<tr><td><span class="dot" style="background:{{ l.color }}"></span>{{ l.layer }}</td>
    <td>{{ l.op }}</td><td class="num">{{ l.alone }}</td><td class="num">{{ l.accum }}</td><td class="num">{{ l.weight }}</td>
    <td><code>{{ l.group }}</code></td></tr>{% endfor %}
  </table></details>{% endif %}
</section>

<section id="histograms">
  <h2>Activations of the worst layers</h2>
  <p class="lead">Histogram of |x| seen during calibration (all {{ calib_images }} calibration images) at each
    layer's quantized input (log counts). The red
    line is the calibrated threshold (scale = threshold / 127); values in the shaded region saturate to ±127.
    The dashed line is the largest |x| seen.</p>
  {% if hists %}<div class="hists">{% for h in hists %}<div class="hist">{{ h.svg | safe }}
    <div class="cap">{{ h.caption }}</div></div>{% endfor %}</div>
  {% else %}<p class="muted">No statistics recorded.</p>{% endif %}
</section>

<div class="two">
<section id="float">
  <h2>Layers kept in float</h2>
  {% if kept %}<p class="lead">Quantizable layers that run in floating point in the engine.</p>
  <table><tr><th>layer</th><th>op</th><th>why</th></tr>
  {% for k in kept %}<tr><td>{{ k.layer }}</td><td>{{ k.op }}</td><td>{{ k.reason }}</td></tr>{% endfor %}</table>
  {% elif plan %}<p class="lead">None: {{ plan.audit_summary }}.</p>
  {% else %}<p class="lead">None in the graph: every conv, deconv, linear, matmul and avg-pool is quantized
    (no TensorRT plan was recorded to confirm what the engine runs).</p>{% endif %}
</section>
<section id="model">
  <h2>Model and quantization scheme</h2>
  <table>{% for k, v in model_rows %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
</section>
</div>

{% if plan %}<section id="plan">
  <h2>TensorRT plan</h2>
  <p class="lead">What TensorRT will run, read from {{ plan.source }} ({{ plan.library }}; <a href="{{ plan.file }}">{{ plan.file }}</a>):
    {{ plan.engine_layers }} engine layers, {{ "%.1f" | format(plan.mb_per_item) }} MB moved per item at batch {{ plan.batch }}
    (inputs + outputs + constants of every engine layer); {{ plan.int8 }} convs and matmuls run INT8, {{ plan.float }} in float.
    {% for k, v in plan.gmacs.items() %}{{ k }}: {{ "%.2f" | format(v) }} GMAC per item. {% endfor %}</p>
  <p class="{{ 'muted' if plan.audit_passed else 'bad' }}">{{ plan.audit_summary }}</p>
  {% for line in plan.audit_lines %}<p class="bad">{{ line }}</p>{% endfor %}
  {% for n in plan.audit_notes %}<p class="muted">{{ n }}</p>{% endfor %}
  <p class="muted">Placement lint (TensorRT's documented Q/DQ rules, checked on the network before the build):
    {% if not plan.lint %}no findings.{% endif %}</p>
  {% if plan.lint %}<ul>{% for line in plan.lint %}<li><code>{{ line }}</code></li>{% endfor %}</ul>{% endif %}
  {% if plan.plan_rows %}
  <table><tr><th>plan</th><th class="num">engine layers</th><th class="num">MB / item</th><th class="num">GMAC / item</th>
    {% for g in plan.gpus %}<th class="num">{{ g }} µs</th>{% endfor %}</tr>
  {% for r in plan.plan_rows %}<tr><td>{{ r.name }}</td><td class="num">{{ r.layers }}</td>
    <td class="num">{{ "%.1f" | format(r.mb) }}</td><td class="num">{{ "%.2f" | format(r.gmac) }}</td>
    {% for v in r.us %}<td class="num">{{ "%.0f" | format(v) }}</td>{% endfor %}</tr>{% endfor %}</table>
  <p class="muted">Times are an {{ plan.estimate_label }}.
    {% if plan.slower_on %}<span class="bad">The engine is estimated slower than FP16 on {{ plan.slower_on | join(", ") }}.</span>{% endif %}</p>
  {% endif %}
  {% if plan.candidates %}<p class="lead">Placement by plan cost (chosen: {{ plan.chosen }}), each candidate rebuilt and
    estimated on its own plan:</p>
  <table><tr><th>candidate</th><th class="num">INT8 layers</th>{% for g in plan.gpus %}<th class="num">{{ g }} µs</th>{% endfor %}
    <th class="num">x faster extreme</th></tr>
  {% for c in plan.candidates %}<tr><td>{{ c.label }}</td><td class="num">{{ c.int8 }}</td>
    {% for v in c.us %}<td class="num">{{ "%.0f" | format(v) }}</td>{% endfor %}<td class="num">{{ "%.2f" | format(c.score) }}</td></tr>{% endfor %}</table>
  {% endif %}
  {{ plan.strip | safe }}
  <p class="muted">Bytes per engine layer along the network, coloured by the dtype it computes in (convs and matmuls)
    or writes. {% for n in plan.notes %}{{ n }}. {% endfor %}</p>
  <p class="muted">The heaviest engine layers, per engine call at batch {{ plan.batch }}:</p>
  <table><tr><th>engine layer</th><th>type</th><th>dtypes in → out</th><th class="num">MB</th>
    <th class="num">MMAC</th><th>FX nodes</th></tr>
  {% for r in plan.heavy %}<tr><td><code>{{ r.name }}</code></td><td>{{ r.type }}</td><td>{{ r.dtypes }}</td>
    <td class="num">{{ "%.2f" | format(r.mb) }}</td><td class="num">{{ "%.1f" | format(r.mmacs) }}</td>
    <td>{{ r.nodes }}</td></tr>{% endfor %}</table>
</section>{% endif %}

<section id="build">
  <h2>Build</h2>
  <div class="two">
    <table>{% for k, v in build_rows %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
    <table><tr><th>TensorRT layer type</th><th class="num">count</th></tr>
      {% for k, v in layer_types %}<tr><td>{{ k }}</td><td class="num">{{ v }}</td></tr>{% endfor %}</table>
  </div>
  <h2 style="margin-top:16px">Step times</h2>
  {{ steps_chart | safe }}
</section>

<section id="artifacts">
  <h2>Artifacts</h2>
  <table><tr><th>file</th><th class="num">size</th><th>sha256</th></tr>
  {% for a in artifacts %}<tr><td><a href="{{ a.path }}">{{ a.path }}</a></td><td class="num">{{ a.size }}</td>
    <td><code>{{ a.sha }}</code></td></tr>{% endfor %}</table>
</section>

<section id="graph">
  <h2>Quantized graph</h2>
  <p class="lead">Green: INT8 layers; orange: weighted layers kept in float; thick green edges carry INT8 tensors
    (a Q/DQ pair). Also in <a href="graph.svg">graph.svg</a> and <a href="graph.dot">graph.dot</a>.</p>
  <details><summary>Show the graph</summary><div class="graph">{{ graph_svg | safe }}</div></details>
</section>
<footer>Generated by <code>fx2trt build</code>. Reproduce the gate with <code>fx2trt validate {{ output_hint }}</code>.</footer>
</main></body>
</html>
"""
