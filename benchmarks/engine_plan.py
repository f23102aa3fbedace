"""TensorRT's plans of the torchvision zoo and the demo detector: INT8, FP16 and placement by plan cost, per batch.

For each model (random weights with BN statistics from data, as benchmarks/coverage.py; the demo detector with
its shipped weights): quantize once (mse calibrator, one random batch of 2), then per batch convert, build a
static-shape engine with TensorRT-RTX and read its plan from the build log. Three plans per batch:

* ``int8``: every quantizable layer INT8 by TensorRT's rules, float parts float32 (``ftp.quantize_model``'s model);
* ``fp16``: the same model with no Q/DQ at all, in float16 (``float_reference``, as ``fx2trt build`` compares);
* ``chosen``: placement by plan cost with float16 float parts (``place_by_plan_cost``, as ``fx2trt build
  --float-dtype float16 --placement plan-cost``): the layers whose INT8 form TensorRT's plans say cost more stay
  in float16, verified on rebuilt plans. Its figures are those of the candidate the search chose.

Why a static build per batch (as ``build_engine`` records its plan at the opt shape): in a dynamic plan TensorRT
logs a gemm over flattened tokens as ``(-1, 768)``, where -1 is batch x 197 tokens (ViT), batch x H x W (Swin,
ConvNeXt's pointwise linears); taking every -1 as the batch made those layers' MACs and bytes 197x to 3136x too
small (per item at 224 px: ViT-B/16 0.24 instead of 16.9 INT8 GMAC, Swin-T 0.05 instead of 4.2, ConvNeXt-T 0.64
instead of 4.8). A static plan has only concrete dims. For convolutional models
the two agree (measured: resnet18 and mobilenet_v2, opt batch 1 and 8 plan the same layers, dtypes and bytes).
A static plan may differ by batch (Swin-T at 224 px: 137 engine layers at batch 1, 132 at batch 8).

Columns per plan: engine layers (kernels; tensorless stream markers and host shape calls not counted), MB per
item (inputs + outputs + constants of every layer / batch), convs and matmuls computing in INT8 and in float (and
for INT8 their GMAC per item). A second table gives each plan's estimated µs per item on the default GPUs: an
estimate from TensorRT's plan (a roofline on datasheet peaks, ``fx2trt_pipeline.plan.cost``), not a measurement.
Then one line per model and batch: the layers plan cost keeps INT8 and the score of every candidate it tried
(its estimate over the lower of its all-INT8 and FP16 ones, worst GPU). A plan that fails (e.g. a random-weight
model with a scale float16 cannot hold) is the row's note; the other plans of the row stay. Another plan per
model is one more entry in ``PLANS`` and one more ``plan_columns(key)`` in the printed columns.

    python benchmarks/engine_plan.py                                  # the zoo and the demo detector, 224 px
    python benchmarks/engine_plan.py --models resnet18,demo_detector --batches 1,8 --size 224

The plan is TensorRT-RTX's ahead-of-time plan from a CPU-only build ("legacy CPU-only mode"): a build on an RTX
GPU may plan differently; it is no timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from coverage import CLASSIFICATION, SEGMENTATION  # benchmarks/coverage.py: the zoo it covers

import fx2trt_pipeline as ftp
from fx2trt_pipeline.deploy.plan_step import BuildContext, float_reference, place_by_plan_cost
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
from fx2trt_pipeline.engine.engine_plan import FLOAT_DTYPES, EnginePlan
from fx2trt_pipeline.network.network import network_from_graph_module
from fx2trt_pipeline.plan.cost import ESTIMATE_LABEL, estimates
from fx2trt_pipeline.plan.gpus import DEFAULT_GPUS
from fx2trt_pipeline.quantize.api import prepared_info

DETECTOR = "demo_detector"
ZOO = [*CLASSIFICATION, *SEGMENTATION, DETECTOR]
#: Architectures with a size of their own whatever ``--size`` says: the demo detector reads 1x96x96 MNIST scenes.
FIXED_SIZES = {DETECTOR: 96}


@dataclass(frozen=True)
class Case:
    """One calibrated model ready to build: its name, prepared (calibrated) and reference-quantized graphs."""

    name: str
    prepared: torch.fx.GraphModule  # calibrated: every other placement is converted from its statistics
    qgm: torch.fx.GraphModule
    sample_shape: tuple[int, ...]  # one item's input shape
    seconds: float  # model + quantize

    def spec(self, batch: int) -> ftp.InputSpec:
        return ftp.InputSpec("x", (batch, *self.sample_shape))

    @property
    def config(self) -> ftp.QuantConfig:
        return prepared_info(self.prepared).config


def make_model(name: str, size: int) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The model in eval mode and its per-item input shape; zoo models as benchmarks/coverage.py makes them."""
    import torchvision

    if name == DETECTOR:
        from fx2trt_pipeline.models.centernet import load_demo_detector

        return load_demo_detector(), (1, FIXED_SIZES[DETECTOR], FIXED_SIZES[DETECTOR])
    if name in SEGMENTATION:
        model = getattr(torchvision.models.segmentation, name)(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False
        )
    elif name == "vit_b_16":
        model = torchvision.models.vit_b_16(weights=None, image_size=size)
    elif name in ("googlenet", "inception_v3"):
        model = getattr(torchvision.models, name)(weights=None, aux_logits=False, init_weights=True)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():  # real-ish BN statistics: a freshly initialised BN folds to an all-zero bias
        for _ in range(3):
            model(torch.randn(2, 3, size, size, generator=gen))
    return model.eval(), (3, size, size)


def make_case(name: str, size: int) -> Case:
    start = time.perf_counter()
    torch.manual_seed(0)
    model, shape = make_model(name, size)
    gen = torch.Generator().manual_seed(2)
    # Random data: the plan depends on where Q/DQ sit, not on the scales calibration picks.
    x = torch.rand(2, *shape, generator=gen) if name == DETECTOR else torch.randn(2, *shape, generator=gen)
    # ftp.quantize_model's three steps, keeping the calibrated module: FP16 and placements are converted from it.
    prepared = ftp.prepare(model, (x,), ftp.QuantConfig(show_progress=False))
    ftp.calibrate(prepared, [x])
    return Case(name, prepared, ftp.convert(prepared), shape, time.perf_counter() - start)


@dataclass(frozen=True)
class PlanResult:
    """What one plan column group shows: TensorRT's plan summary, estimates per GPU and, for a placement, its record.

    ``seconds`` is GPU name -> estimated seconds per item (an estimate from TensorRT's plan, not a measurement).
    """

    summary: dict[str, Any]
    seconds: dict[str, float]
    placement: dict[str, Any] | None = None

    @classmethod
    def of(cls, plan: EnginePlan) -> PlanResult:
        return cls(plan.summary(), estimates(plan, DEFAULT_GPUS))


def int8_plan(case: Case, batch: int) -> PlanResult:
    """The plan of our strongly typed INT8 network (Q/DQ as ``ftp.quantize_model`` placed them) at a static batch."""
    spec = case.spec(batch)
    builder, network, _ctx = network_from_graph_module(case.qgm, [spec], builder=create_builder())
    _, plan = engine_and_plan_from_network(builder, network, [spec])
    if plan is None:
        raise RuntimeError("the build logged no plan")
    return PlanResult.of(plan)


def fp16_plan(case: Case, batch: int) -> PlanResult:
    """The plan of the same model with no Q/DQ, float16 throughout (what ``fx2trt build`` compares against)."""
    model = float_reference(case.prepared, case.config, "float16")
    return PlanResult.of(BuildContext([case.spec(batch)]).plan(model))


def chosen_plan(case: Case, batch: int) -> PlanResult:
    """Placement by plan cost with float16 float parts, on the default GPUs: the candidate the search chose.

    Raises:
        ConfigError: a scale float16 cannot hold (the INT8 model with float16 float parts is refused).
    """
    config = dataclasses.replace(case.config, float_dtype="float16")
    qgm = ftp.convert(case.prepared, config)
    nodes = list(ftp.get_quant_state(qgm).placement.weights)
    _, _, record, _ = place_by_plan_cost(case.prepared, qgm, config, BuildContext([case.spec(batch)]), nodes)
    chosen = next(c for c in record["candidates"] if c["label"] == record["chosen"])
    return PlanResult(chosen["summary"], chosen["seconds"], record)


#: The plans built per model, by column prefix, in build order; another plan is one more entry.
PLANS: dict[str, Callable[[Case, int], PlanResult]] = {"int8": int8_plan, "fp16": fp16_plan, "chosen": chosen_plan}
#: How the printed headers name each plan.
LABELS = {"int8": "INT8", "fp16": "FP16", "chosen": "chosen"}


def plan_figures(result: PlanResult, key: str) -> dict[str, Any]:
    """One plan's figures at its batch, keyed ``<key>.<figure>``; estimates keyed ``<key>.us.<GPU>``."""
    s = result.summary
    macs = s["macs_per_item_by_dtype"]
    return {
        f"{key}.layers": s["engine_layers"],
        f"{key}.mb_per_item": s["bytes_per_item"] / 1e6,
        f"{key}.int8_compute": s["int8_compute_layers"],
        f"{key}.float_compute": s["float_compute_layers"],
        f"{key}.compute": f"{s['int8_compute_layers']}/{s['float_compute_layers']}",
        f"{key}.int8_gmac": macs.get("Int8", 0) / 1e9,
        f"{key}.float_gmac": sum(macs.get(d, 0) for d in FLOAT_DTYPES) / 1e9,
        **{f"{key}.us.{gpu}": seconds * 1e6 for gpu, seconds in result.seconds.items()},
    }


def _error(exc: Exception) -> str:
    return f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200].strip()}"


@dataclass
class Row:
    """One (model, batch): every plan's figures, the placement record, the notes of plans that failed."""

    figures: dict[str, Any]
    placement: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def rows(
    models: Iterable[str],
    batches: Sequence[int],
    size: int,
    plans: dict[str, Callable[[Case, int], PlanResult]] = PLANS,
) -> Iterator[Row]:
    """One row per (model, batch): model, batch, input size and every plan's figures; a failure is a row note."""
    for name in models:
        start = time.perf_counter()
        try:
            case = make_case(name, size)
        except Exception as exc:  # one model's failure does not stop the table
            yield Row({"model": name}, notes=[_error(exc)])
            continue
        built: dict[int, Row] = {}
        for batch in batches:
            row = built[batch] = Row({"model": name, "batch": batch, "size": case.sample_shape[-1]})
            for key, make in plans.items():
                try:  # one plan's failure (a float16 scale check) leaves the others in the row
                    result = make(case, batch)
                except Exception as exc:
                    row.notes.append(f"{LABELS.get(key, key)}: {_error(exc)}")
                    continue
                row.figures.update(plan_figures(result, key))
                row.placement = result.placement or row.placement
        seconds = time.perf_counter() - start
        print(f"# {name}: {seconds:.1f} s (model, quantize {case.seconds:.1f} s, builds)", file=sys.stderr, flush=True)
        yield from built.values()


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = ""


BASE_COLUMNS = [Column("model", "model"), Column("size", "px"), Column("batch", "batch")]


def plan_columns(key: str, label: str = "", gmac: bool = True) -> list[Column]:
    """The printed columns of one plan (``label`` prefixes the headers when several plans share a table)."""
    p = f"{label} " if label else ""
    if not gmac:  # the compact form: INT8/float compute layers in one cell
        return [
            Column(f"{key}.layers", f"{p}engine layers"),
            Column(f"{key}.mb_per_item", f"{p}MB / item", ".1f"),
            Column(f"{key}.compute", f"{p}INT8/float compute layers"),
        ]
    return [
        Column(f"{key}.layers", f"{p}engine layers"),
        Column(f"{key}.mb_per_item", f"{p}MB / item", ".1f"),
        Column(f"{key}.int8_compute", f"{p}INT8 compute layers"),
        Column(f"{key}.float_compute", f"{p}float compute layers"),
        Column(f"{key}.int8_gmac", f"{p}INT8 GMAC / item", ".3f"),
        Column(f"{key}.float_gmac", f"{p}float GMAC / item", ".3f"),
    ]


def estimate_columns(keys: Sequence[str], gpus: Sequence[str] = DEFAULT_GPUS) -> list[Column]:
    """Estimated µs per item, per GPU then per plan (estimates from TensorRT's plan, not measurements)."""
    return [Column(f"{key}.us.{gpu}", f"{gpu} {LABELS.get(key, key)} est. µs", ".1f") for gpu in gpus for key in keys]


NOTE = Column("note", "note")


def print_table(table_rows: Iterable[Row], columns: Sequence[Column]) -> None:
    """A Markdown table, each row printed as it comes (a zoo run takes minutes); a ``note`` column shows the notes."""
    print("| " + " | ".join(c.header for c in columns) + " |")
    print("|" + "---|" * len(columns), flush=True)
    for row in table_rows:
        cells = []
        for c in columns:
            if c.key == NOTE.key:
                cells.append("; ".join(row.notes).replace("|", "/"))
            else:
                cells.append(format(row.figures[c.key], c.fmt) if c.key in row.figures else "-")
        print("| " + " | ".join(cells) + " |", flush=True)


def placement_line(row: Row, gpus: Sequence[str] = DEFAULT_GPUS) -> str:
    """Which layers plan cost keeps INT8 at this batch, the chosen candidate's score and every candidate's."""
    head = f"{row.figures['model']} batch {row.figures.get('batch', '-')}: "
    record = row.placement
    if record is None:
        return head + "no placement by plan cost (" + ("; ".join(row.notes) or "not built") + ")"
    chosen = next(c for c in record["candidates"] if c["label"] == record["chosen"])
    per_node = record["per_node"]
    rule = ", ".join(per_node["keep_int8"]) or "none"
    if per_node["unmatched"]:  # no float16 counterpart found: left INT8 by the rule
        rule += f" (+ {', '.join(per_node['unmatched'])}, no FP16 counterpart)"
    if chosen["keep_int8"]:
        kept = f"keeps {len(chosen['keep_int8'])} INT8: {', '.join(chosen['keep_int8'])}"
    elif not per_node["keep_int8"] and not per_node["unmatched"]:
        kept = "keeps none INT8: FP16 faster for every layer"
    else:
        kept = f"keeps none INT8: FP16 is faster than every placement tried (the per-layer rule kept {rule})"
    tried = ", ".join(f"{c['label']} ({len(c['keep_int8'])} INT8) x{c['score']:.3f}" for c in record["candidates"])
    checks = []
    f = row.figures
    if "fp16.mb_per_item" in f and f["chosen.mb_per_item"] > f["fp16.mb_per_item"] + 1e-9:
        checks.append("moves MORE bytes than FP16")
    have = [g for g in gpus if f"int8.us.{g}" in f and f"fp16.us.{g}" in f]
    over = [g for g in have if f[f"chosen.us.{g}"] > min(f[f"int8.us.{g}"], f[f"fp16.us.{g}"])]
    if over:
        checks.append(f"estimated above min(INT8, FP16) on {', '.join(over)}")
    return (
        f"{head}plan cost {kept}; chosen '{chosen['label']}', score x{chosen['score']:.3f}; "
        f"candidates (score = estimate / min(all INT8 with float16 parts, FP16), worst GPU): {tried}"
        + (f"; CHECK: {'; '.join(checks)}" if checks else "")
    )


def _kept(items: Iterable[Row], into: list[Row]) -> Iterator[Row]:
    """Yield ``items``, keeping each in ``into`` (the estimates and placements print after the streamed table)."""
    for item in items:
        into.append(item)
        yield item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated (default: the zoo + demo_detector)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--size", type=int, default=224, help="input height and width of the zoo models")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    batches = [int(b) for b in args.batches.split(",")]
    start = time.perf_counter()
    columns = BASE_COLUMNS + plan_columns("int8", "INT8")
    columns += [c for key in PLANS if key != "int8" for c in plan_columns(key, LABELS[key], gmac=False)]
    print("TensorRT's plans per item: INT8 (TensorRT's rules, float32 parts), FP16 (no Q/DQ), chosen (plan cost)\n")
    done: list[Row] = []
    print_table(_kept(rows(args.models.split(","), batches, args.size), done), [*columns, NOTE])
    print(f"\nEstimated µs per item ({ESTIMATE_LABEL})\n")
    print_table(done, [Column("model", "model"), Column("batch", "batch"), *estimate_columns(list(PLANS))])
    print("\nPlacement by plan cost (float16 float parts; GPUs: " + ", ".join(DEFAULT_GPUS) + ")\n")
    for row in done:
        print(f"* {placement_line(row)}")
    print(f"\n{len(args.models.split(','))} models in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
