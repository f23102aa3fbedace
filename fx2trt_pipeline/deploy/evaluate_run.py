"""The validate step of ``fx2trt build`` and ``fx2trt validate RUN_DIR``: one function for both.

::

    EngineSide (inputs, network, engine file, ONNX file, sidecar) -> validate.runner_set (availability, runners)
    RunConfig [evaluation] + dataset -> EvalData (task, decoder, limits, torchrun shard)
    fp32 + simulated + engine side -> validate.evaluation.evaluate_backends -> Evaluation (gated)

Example:
    >>> ev = evaluate_run(RunModels(model, qgm), side, EvalRequest(cfg, dataset))   # doctest: +SKIP
    >>> ev.passed, ev.gate_lines                                                        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.deploy.config import RunConfig
from fx2trt_pipeline.deploy.sources import resolve_callable, task_of
from fx2trt_pipeline.errors import ConfigError
from fx2trt_pipeline.validate.backends import select_backends
from fx2trt_pipeline.validate.eval_data import split_alternate
from fx2trt_pipeline.validate.evaluation import EvalData, Shard, evaluate_backends, output_table
from fx2trt_pipeline.validate.results import Evaluation
from fx2trt_pipeline.validate.runner_set import EngineSide, RunModels, availability, runner_set


@dataclass
class EvalRequest:
    """The run's configuration, its evaluation dataset (``None``: none given) and the backend asked for."""

    config: RunConfig
    dataset: Any = None
    backend: str = "auto"
    fallback: torch.Tensor | None = None  # inputs to compare outputs on when there is no evaluation data
    progress: Callable[[str], None] | None = None
    held_out: bool = False  # report on the odd-numbered images: an automatic choice was made on the others


def decode_fn_for(config: RunConfig, model: Any, task: str) -> Callable[[Any], Any] | None:
    """The detector decoder: ``[model] decode`` from the config, CenterNet's own, or an error."""
    if task != "detection":
        return None
    if config.model.decode:
        return resolve_callable(config.model.decode, "Detector decode function")
    from fx2trt_pipeline.models.centernet import CenterNet

    if isinstance(model, CenterNet):
        from fx2trt_pipeline.models.centernet import centernet_decode

        return centernet_decode
    raise ConfigError(
        "Detection mAP needs a decoder for this model's outputs: set [model] decode = "
        "'package.module:function' (outputs -> boxes, scores, classes), or task = 'none'"
    )


def eval_data_for(request: EvalRequest, model: Any, input_name: str) -> EvalData:
    """The :class:`EvalData` of a run: its evaluation set (sharded under torchrun) or the fallback batch."""
    spec = request.config.evaluation
    if spec is None or request.dataset is None:
        if request.fallback is None:
            raise ConfigError("No evaluation data and no inputs to compare outputs on.")
        return EvalData("none", batches=[(request.fallback, None)], input_name=input_name)
    task = task_of(spec, request.dataset)
    data = EvalData(
        task,
        dataset=request.dataset,
        input_name=input_name,
        decode_fn=decode_fn_for(request.config, model, task),
        max_images=spec.max_images,
        batch_size=int(spec.batch_size),
        shard=Shard.current(),
        output=spec.output_index,
    )
    return split_alternate(data)[1] if request.held_out else data


def evaluate_run(models: RunModels, side: EngineSide, request: EvalRequest) -> Evaluation:
    """Score FP32, simulated INT8 and every engine-side backend asked for; the gated :class:`Evaluation`.

    Raises:
        BackendUnavailableError: the requested backend cannot run here.
        ConfigError: bad evaluation settings (e.g. detection without a decoder).
    """
    plan = select_backends(availability(side), request.backend)
    runners = runner_set(models, side, plan)
    data = eval_data_for(request, models.model, side.input_name)
    say = request.progress or (lambda line: None)
    note = ""
    if request.held_out:
        total = eval_data_for(dataclasses.replace(request, held_out=False), models.model, side.input_name).count()
        note = (
            f"reported on the {data.count()} odd-numbered of {total} evaluation images; the other "
            f"{total - data.count()} chose the quantization"
        )
        say(note)
    skipped = "".join(f"; {key} skipped: {why}" for key, why in plan.skipped.items())
    say(f"task: {data.task}; engine side: {', '.join(plan.names) or 'none'}{skipped}")
    evaluation = evaluate_backends(runners, data, plan, request.config.gate, request.progress)
    evaluation.data_note = note
    table = output_table(evaluation)
    for line in [*table.splitlines(), *(f"WARNING {w}" for w in evaluation.warnings)]:
        say(line)
    return evaluation


__all__ = ["EngineSide", "EvalRequest", "RunModels", "decode_fn_for", "eval_data_for", "evaluate_run"]
