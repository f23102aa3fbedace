"""TensorRT's INT8 plan of the torchvision zoo and the demo detector: layers, bytes and MACs per item, per batch.

For each model (random weights with BN statistics from data, as benchmarks/coverage.py; the demo detector with
its shipped weights): quantize once (mse calibrator, one random batch of 2), then per batch convert, build a
static-shape engine with TensorRT-RTX and read its plan from the build log.

Why a static build per batch (as ``build_engine`` records its plan at the opt shape): in a dynamic plan TensorRT
logs a gemm over flattened tokens as ``(-1, 768)``, where -1 is batch x 197 tokens (ViT), batch x H x W (Swin,
ConvNeXt's pointwise linears); taking every -1 as the batch made those layers' MACs and bytes 197x to 3136x too
small (per item at 224 px: ViT-B/16 0.24 instead of 16.9 INT8 GMAC, Swin-T 0.05 instead of 4.2, ConvNeXt-T 0.64
instead of 4.8). A static plan has only concrete dims. For convolutional models
the two agree (measured: resnet18 and mobilenet_v2, opt batch 1 and 8 plan the same layers, dtypes and bytes).
A static plan may differ by batch (Swin-T at 224 px: 137 engine layers at batch 1, 132 at batch 8).

Columns per plan: engine layers (kernels; tensorless stream markers and host shape calls not counted), MB per
item (inputs + outputs + constants of every layer / batch), convs and matmuls computing in INT8 and in float, and
their GMAC per item. Another plan per model (an FP16 network, a chosen placement) is one more entry in ``PLANS``
and one more ``plan_columns(key)`` in the printed columns.

    python benchmarks/engine_plan.py                                  # the zoo and the demo detector, 224 px
    python benchmarks/engine_plan.py --models resnet18,demo_detector --batches 1,8 --size 224

The plan is TensorRT-RTX's ahead-of-time plan from a CPU-only build ("legacy CPU-only mode"): a build on an RTX
GPU may plan differently; it is no timing.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import fx2trt_pipeline as ftp
from fx2trt_pipeline.engine.engine_builder import create_builder, engine_and_plan_from_network
from fx2trt_pipeline.engine.engine_plan import FLOAT_DTYPES, EnginePlan
from fx2trt_pipeline.network.network import network_from_graph_module

from coverage import CLASSIFICATION, SEGMENTATION  # benchmarks/coverage.py: the zoo it covers

DETECTOR = "demo_detector"
ZOO = [*CLASSIFICATION, *SEGMENTATION, DETECTOR]
#: Architectures with a size of their own whatever ``--size`` says: the demo detector reads 1x96x96 MNIST scenes.
FIXED_SIZES = {DETECTOR: 96}


@dataclass(frozen=True)
class Case:
    """One quantized model ready to build: its name, reference-quantized graph and input spec."""

    name: str
    qgm: torch.fx.GraphModule
    sample_shape: tuple[int, ...]  # one item's input shape
    seconds: float  # model + quantize

    def spec(self, batch: int) -> ftp.InputSpec:
        return ftp.InputSpec("x", (batch, *self.sample_shape))


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
    qgm = ftp.quantize(model, [x], example_inputs=(x,), config=ftp.QuantConfig(show_progress=False))
    return Case(name, qgm, shape, time.perf_counter() - start)


def int8_plan(case: Case, batch: int) -> EnginePlan:
    """The plan of our strongly typed INT8 network (Q/DQ as ``ftp.quantize`` placed them) at a static batch."""
    spec = case.spec(batch)
    builder, network, _ctx = network_from_graph_module(case.qgm, [spec], builder=create_builder())
    _, plan = engine_and_plan_from_network(builder, network, [spec])
    if plan is None:
        raise RuntimeError("the build logged no plan")
    return plan


#: The plans built per model, by column prefix; an FP16 plan or a chosen placement is one more entry.
PLANS: dict[str, Callable[[Case, int], EnginePlan]] = {"int8": int8_plan}


def plan_figures(plan: EnginePlan, key: str) -> dict[str, Any]:
    """One plan's figures at its batch, keyed ``<key>.<figure>``."""
    s = plan.summary()
    macs = s["macs_per_item_by_dtype"]
    return {
        f"{key}.layers": s["engine_layers"],
        f"{key}.mb_per_item": s["bytes_per_item"] / 1e6,
        f"{key}.int8_compute": s["int8_compute_layers"],
        f"{key}.float_compute": s["float_compute_layers"],
        f"{key}.int8_gmac": macs.get("Int8", 0) / 1e9,
        f"{key}.float_gmac": sum(macs.get(d, 0) for d in FLOAT_DTYPES) / 1e9,
    }


def rows(
    models: Iterable[str],
    batches: Sequence[int],
    size: int,
    plans: dict[str, Callable[[Case, int], EnginePlan]] = PLANS,
) -> Iterator[dict[str, Any]]:
    """One row per (model, batch): model, batch, input size and every plan's figures; a failure is a row too."""
    for name in models:
        start = time.perf_counter()
        try:
            case = make_case(name, size)
            built = {batch: {key: make(case, batch) for key, make in plans.items()} for batch in batches}
        except Exception as exc:  # one model's failure does not stop the table
            yield {"model": name, "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"}
            continue
        seconds = time.perf_counter() - start
        print(f"# {name}: {seconds:.1f} s (model, quantize {case.seconds:.1f} s, builds)", file=sys.stderr, flush=True)
        for batch in batches:
            row: dict[str, Any] = {"model": name, "batch": batch, "size": case.sample_shape[-1]}
            for key, plan in built[batch].items():
                row.update(plan_figures(plan, key))
            yield row


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = ""


BASE_COLUMNS = [Column("model", "model"), Column("size", "px"), Column("batch", "batch")]


def plan_columns(key: str, label: str = "") -> list[Column]:
    """The printed columns of one plan (``label`` prefixes the headers when several plans share a table)."""
    p = f"{label} " if label else ""
    return [
        Column(f"{key}.layers", f"{p}engine layers"),
        Column(f"{key}.mb_per_item", f"{p}MB / item", ".1f"),
        Column(f"{key}.int8_compute", f"{p}INT8 compute layers"),
        Column(f"{key}.float_compute", f"{p}float compute layers"),
        Column(f"{key}.int8_gmac", f"{p}INT8 GMAC / item", ".3f"),
        Column(f"{key}.float_gmac", f"{p}float GMAC / item", ".3f"),
    ]


def print_table(table_rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> None:
    """A Markdown table, each row printed as it comes (a zoo run takes minutes)."""
    print("| " + " | ".join(c.header for c in columns) + " |")
    print("|" + "---|" * len(columns), flush=True)
    for row in table_rows:
        if "error" in row:
            print(f"| {row['model']} | {row['error']} |" + " |" * (len(columns) - 2), flush=True)
            continue
        cells = [format(row[c.key], c.fmt) if c.key in row else "-" for c in columns]
        print("| " + " | ".join(cells) + " |", flush=True)


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
    print_table(rows(args.models.split(","), batches, args.size), BASE_COLUMNS + plan_columns("int8"))
    print(f"\n{len(args.models.split(','))} models in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
