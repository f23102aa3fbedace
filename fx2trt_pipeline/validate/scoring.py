"""Score one runner on evaluation data: task metric, class output, agreement with FP32 (one scorer for all).

::

    score_runner(runner, EvalData) -> Scored   COCO mAP (detection, metrics.evaluate_detector) | top-1/top-5 of
                                               the class output (classification); the outputs of the first items
                                               are kept so the parity batch is not run again
    agreement_metrics(fp32, test)              agree_top1 / agree_top5 and output cosine of the class output
    CandidateScorer(model, data)(candidate)    what the calibrator search and mixed precision rank candidates by

The class output is :attr:`EvalData.output` (index in output order, or name): MTCNN's RNet puts its box
regression first and its face probabilities second, so ``output=1`` scores the classes.

Example:
    >>> from fx2trt_pipeline.validate.runners import TorchRunner
    >>> x, y = torch.eye(3), torch.tensor([0, 1, 1])
    >>> runner = TorchRunner(torch.nn.Identity(), ["x"], ["y"])
    >>> score_runner(runner, EvalData("classification", batches=[(x, y)], input_name="x")).metrics
    {'num_samples': 3.0, 'top1': 0.6666666865348816}
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.compare import Tolerance, compare_outputs
from fx2trt_pipeline.validate.eval_data import EvalData
from fx2trt_pipeline.validate.metrics import agreement, evaluate_detector, output_cosine, topk_accuracy
from fx2trt_pipeline.validate.runners import Runner, TorchRunner


@dataclass
class Scored:
    """One runner's metrics; for classifiers its class output on every item (for agreement with FP32); the
    outputs of its first items (``first``: the parity batch, when scoring covered it)."""

    metrics: dict[str, float]
    logits: torch.Tensor | None = None
    seconds: float = 0.0
    first: dict[str, torch.Tensor] | None = None


def class_output(outputs: Mapping[str, torch.Tensor], selector: int | str = 0) -> torch.Tensor:
    """The output holding the class scores: by index in output order or by name (CPU float32).

    Raises:
        ConfigError: no such output (the message lists the outputs with their shapes).

    Example:
        >>> class_output({"boxes": torch.zeros(2, 4), "probs": torch.ones(2, 2)}, 1).shape
        torch.Size([2, 2])
    """
    names = list(outputs)
    key: str | None
    if isinstance(selector, str) and not selector.isdigit():
        key = selector if selector in outputs else None
    else:
        index = int(selector)
        key = names[index] if 0 <= index < len(names) else None
    if key is None:
        listed = ", ".join(f"{i}: {n} {tuple(outputs[n].shape)}" for i, n in enumerate(names))
        raise ConfigError(
            f"--output-index {selector}: the model has {len(names)} outputs ({listed}); give the index or name "
            "of the one holding the class scores"
        )
    return torch.as_tensor(outputs[key]).detach().float().cpu()


class _FirstItems:
    """Keeps the outputs of the first ``limit`` items a runner produces (the parity batch)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts = limit, []

    def add(self, outputs: Mapping[str, torch.Tensor]) -> None:
        kept = sum(int(next(iter(p.values())).shape[0]) for p in self.parts) if self.parts else 0
        if kept < self.limit and outputs:
            self.parts.append({k: v.detach()[: self.limit - kept].cpu() for k, v in outputs.items()})

    def outputs(self) -> dict[str, torch.Tensor] | None:
        if not self.parts:
            return None
        out = {k: torch.cat([p[k] for p in self.parts]) for k in self.parts[0]}
        return out if int(next(iter(out.values())).shape[0]) == self.limit else None


def _score_detection(runner: Runner, data: EvalData, keep: _FirstItems) -> Scored:
    def model_fn(x: torch.Tensor) -> Any:
        out = runner.run({data.input_name: x})
        keep.add(out)
        return out

    metrics = evaluate_detector(
        model_fn, data.dataset, data.decode_fn, data.batch_size, data.max_images, shard=data.shard
    )
    return Scored(metrics)


def _score_outputs(runner: Runner, data: EvalData, keep: _FirstItems) -> Scored:
    parts = []
    for x, y in data.local_batches():
        out = runner.run({data.input_name: x})
        keep.add(out)
        parts.append((class_output(out, data.output), y))
    gathered = [p for part in data.shard.gather(parts) for p in part]
    logits = torch.cat([p[0] for p in gathered]).flatten(1)
    metrics = {"num_samples": float(logits.shape[0])}
    labels = [p[1] for p in gathered]
    if data.task == "classification" and labels and all(y is not None for y in labels):
        ks = tuple(k for k in (1, 5) if k <= logits.shape[1]) or (1,)
        metrics.update(topk_accuracy(logits, torch.cat(labels), ks))
    return Scored(metrics, logits)


def _batch_sizes(data: EvalData) -> list[int]:
    """The batch sizes ``runner.run`` gets while scoring ``data`` on this rank."""
    if data.task == "detection":
        n, size = len(data.indices()), int(data.batch_size)
        return sorted({min(n, size), n % size} - {0})
    return sorted({int(x.shape[0]) for x, _ in data.local_batches()})


def score_runner(runner: Runner, data: EvalData, parity_items: int = 0) -> Scored:
    """Score one runner on ``data`` (collective under torchrun: every rank calls it).

    A runner with ``warm_up(batch_sizes)`` (an engine) first runs every batch size it will see, so the
    seconds recorded exclude just-in-time compilation. ``parity_items``: keep the outputs of the first that
    many items in :attr:`Scored.first` (one process only: they are the parity batch).

    Example:
        >>> from fx2trt_pipeline.validate.runners import TorchRunner
        >>> x, y = torch.eye(3), torch.tensor([0, 1, 1])
        >>> scored = score_runner(TorchRunner(torch.nn.Identity(), ["x"], ["y"]),
        ...                       EvalData("classification", batches=[(x, y)], input_name="x"), parity_items=2)
        >>> scored.first["y"].shape
        torch.Size([2, 3])
    """
    warm_up = getattr(runner, "warm_up", None)
    if callable(warm_up):  # every batch shape compiles (TensorRT-RTX JIT) before the clock starts
        warm_up(_batch_sizes(data))
    keep = _FirstItems(parity_items if data.shard.world == 1 else 0)
    start = time.perf_counter()
    scored = _score_detection(runner, data, keep) if data.task == "detection" else _score_outputs(runner, data, keep)
    scored.seconds = round(time.perf_counter() - start, 3)
    scored.first = keep.outputs() if parity_items else None
    return scored


def agreement_metrics(reference: Scored, test: Scored) -> dict[str, float]:
    """Agreement of ``test`` with the FP32 ``reference`` (class outputs), plus their output cosine.

    Empty for outputs that are not ``(N, classes)`` scores (e.g. detector heads).
    """
    if reference.logits is None or test.logits is None or reference.logits.shape != test.logits.shape:
        return {}
    if reference.logits.ndim != 2 or reference.logits.shape[1] < 2:
        return {}
    return {**agreement(reference.logits, test.logits), "cosine_fp32": output_cosine(reference.logits, test.logits)}


class CandidateScorer:
    """``scorer(candidate) -> metrics``: task metrics, agreement with the FP32 model and output cosine.

    The calibrator search and mixed precision score candidates with it. ``cosine_fp32`` is taken over the class
    output of every item for classifiers, over every output of the parity batch otherwise; ``fp32_metrics`` are
    the FP32 model's own scores; :attr:`classifies` says whether agreement can be measured.

    Example:
        >>> x = torch.randn(8, 4)
        >>> fp32 = torch.nn.Linear(4, 3).eval()
        >>> scorer = CandidateScorer(fp32, EvalData("none", batches=[(x, None)], input_name="x"))
        >>> scorer(fp32)["agree_top1"], round(scorer(fp32)["cosine_fp32"], 6), scorer.classifies
        (1.0, 1.0, True)
    """

    def __init__(self, model: torch.nn.Module, data: EvalData) -> None:
        self.data = data
        self.reference = score_runner(TorchRunner(model, [data.input_name], None, name="fp32"), data)
        self.feeds = data.parity_feeds()
        self.reference_out = TorchRunner(model, [data.input_name], None).run(self.feeds)

    @property
    def fp32_metrics(self) -> dict[str, float]:
        """The FP32 model's own metrics."""
        return dict(self.reference.metrics)

    @property
    def classifies(self) -> bool:
        """The class output is ``(N, classes)`` scores: agreement with FP32 is measured."""
        logits = self.reference.logits
        return logits is not None and logits.ndim == 2 and logits.shape[1] >= 2

    def __call__(self, candidate: torch.nn.Module) -> dict[str, float]:
        runner = TorchRunner(candidate, [self.data.input_name], None, name="candidate")
        scored = score_runner(runner, self.data)
        metrics = {**scored.metrics, **agreement_metrics(self.reference, scored)}
        if "cosine_fp32" not in metrics:
            stats = compare_outputs(self.reference_out, runner.run(self.feeds), Tolerance(min_cosine=None))
            metrics["cosine_fp32"] = min((s.cosine for s in stats.outputs), default=0.0)
        return metrics


__all__ = ["CandidateScorer", "Scored", "agreement_metrics", "class_output", "score_runner"]
