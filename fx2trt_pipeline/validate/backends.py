"""Which backends stand for the engine here: one list, one selection rule, for the library and the CLI.

::

    tensorrt          the engine file, on a GPU the TensorRT library supports
    network_executor  the built network definition, executed layer by layer in torch (any machine)
    onnxruntime       the exported QDQ ONNX in ONNX Runtime

:func:`select_backends` takes what can run here (:class:`Availability`: a reason per backend that cannot)
and what was asked for. ``"auto"`` takes every backend that can run, in the order above, and the first one
stands for the engine; an explicit name that cannot run raises :class:`BackendUnavailableError` (exit
code 3) instead of quietly switching to another backend. Every runner is wrapped in a
:class:`ChunkedRunner` so no call exceeds the engine profile's largest batch.

Example:
    >>> plan = select_backends(Availability({"network_executor": None, "tensorrt": "no GPU"}))
    >>> plan.names, plan.skipped, plan.engine
    (['network_executor'], {'tensorrt': 'no GPU'}, 'network_executor')
    >>> print(plan.reason)
    the TensorRT engine cannot run here (no GPU); network_executor stands for the engine
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fx2trt_pipeline.errors import BackendUnavailableError, ConfigError
from fx2trt_pipeline.validate.runners import Runner

#: Engine-side backends, in the order "auto" prefers them (the first that runs stands for the engine).
ENGINE_BACKENDS = ("tensorrt", "network_executor", "onnxruntime")

#: How each backend is labelled in tables and the report: (label, what runs it).
BACKEND_LABELS = {
    "fp32": ("FP32", "PyTorch (float model)"),
    "simulated": ("INT8 simulated", "PyTorch (reference Q/DQ GraphModule)"),
    "tensorrt": ("INT8 TensorRT engine", "TensorRT runtime on GPU"),
    "network_executor": ("INT8 TensorRT network", "network executor (the built network definition, CPU)"),
    "onnxruntime": ("INT8 QDQ ONNX", "ONNX Runtime CPU"),
}


def backend_label(key: str) -> tuple[str, str]:
    """``(label, runs on)`` of a backend; unknown keys label themselves.

    Example:
        >>> backend_label("onnxruntime")[0], backend_label("custom")
        ('INT8 QDQ ONNX', ('custom', 'custom'))
    """
    return BACKEND_LABELS.get(key, (key, key))


class ChunkedRunner:
    """Runs a runner on batches of at most ``max_batch`` (an engine profile's limit) and concatenates.

    With ``static_batch`` (an engine, network or ONNX model built for exactly ``max_batch`` items) a
    shorter last chunk is padded to ``max_batch`` by repeating its last item, and the padded rows are
    dropped from the outputs; items never see each other, so the kept rows are what a full batch gives.

    Example:
        >>> from fx2trt_pipeline.validate.runners import TorchRunner
        >>> r = ChunkedRunner(TorchRunner(torch.nn.Identity(), ["x"], ["y"]), 2)
        >>> r.run({"x": torch.arange(5.0)[:, None]})["y"].shape
        torch.Size([5, 1])
        >>> ChunkedRunner(TorchRunner(torch.nn.Identity(), ["x"], ["y"]), 4, static_batch=True).chunk_sizes([10])
        [4]
    """

    def __init__(self, runner: Runner, max_batch: int, static_batch: bool = False) -> None:
        self.runner, self.max_batch, self.name = runner, max(1, int(max_batch)), runner.name
        self.static_batch = bool(static_batch)

    @classmethod
    def for_inputs(cls, runner: Runner, inputs: Sequence[Any]) -> ChunkedRunner:
        """Chunks that every input accepts: a profile's max batch, or a static batch (then padded).

        Args:
            inputs: the model's :class:`~fx2trt_pipeline.network.inputs.InputSpec` list.
        """
        static = [int(s.shape[0]) for s in inputs if int(s.shape[0]) != -1]
        dynamic = [int(s.max_shape[0]) for s in inputs if int(s.shape[0]) == -1 and s.max_shape]
        return cls(runner, min(static + dynamic or [1]), static_batch=bool(static))

    @property
    def input_names(self) -> list[str]:
        """Input names of the wrapped runner."""
        return list(getattr(self.runner, "input_names", []))

    def chunk_sizes(self, batch_sizes: Sequence[int]) -> list[int]:
        """The batch sizes the wrapped runner sees when :meth:`run` gets batches of ``batch_sizes``."""
        sizes = set()
        for n in batch_sizes:
            if n >= self.max_batch:
                sizes.add(self.max_batch)
            if n % self.max_batch:
                sizes.add(self.max_batch if self.static_batch else n % self.max_batch)
        return sorted(sizes)

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Let the wrapped runner compile every chunk shape of ``batch_sizes`` now (e.g. before timing).

        A TensorRT-RTX engine compiles a kernel per new shape on its first call; a remainder chunk
        (50 items in chunks of 32: 32 and 18) must not compile inside a timed evaluation.
        """
        warm_up = getattr(self.runner, "warm_up", None)
        if callable(warm_up):
            warm_up(self.chunk_sizes(batch_sizes))

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs by name for the whole batch (CPU tensors).

        Raises:
            ConfigError: a padded chunk's output has no batch dimension to drop the padding from.
        """
        n = next(iter(feeds.values())).shape[0]
        parts: list[dict[str, torch.Tensor]] = []
        for start in range(0, n, self.max_batch):
            chunk = {k: v[start : start + self.max_batch] for k, v in feeds.items()}
            size = min(self.max_batch, n - start)
            if self.static_batch and size < self.max_batch:
                chunk = {
                    k: torch.cat([v, v[-1:].expand(self.max_batch - size, *v.shape[1:])]) for k, v in chunk.items()
                }
            out = {k: v.detach().float().cpu() for k, v in self.runner.run(chunk).items()}
            if self.static_batch and size < self.max_batch:
                out = {k: _unpad(k, v, size, self.max_batch, self.name) for k, v in out.items()}
            parts.append(out)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _unpad(name: str, value: torch.Tensor, size: int, batch: int, runner: str) -> torch.Tensor:
    if value.dim() == 0 or value.shape[0] != batch:
        raise ConfigError(
            f"{runner}: output {name!r} has shape {tuple(value.shape)}, not a leading batch of {batch}, so the "
            f"padding of a last partial batch ({size} items) cannot be dropped; rebuild with a dynamic batch "
            "(InputSpec.dynamic_batch) or evaluate a multiple of the batch size"
        )
    return value[:size]


@dataclass(frozen=True)
class Availability:
    """Which engine-side backends can run here: ``None`` when one can, else the reason it cannot.

    Backends missing from ``reasons`` count as unavailable ("no artifact for it").
    """

    reasons: Mapping[str, str | None] = field(default_factory=dict)

    def reason(self, name: str) -> str | None:
        """Why ``name`` cannot run (``None`` when it can)."""
        return self.reasons.get(name, "no artifact for it")


@dataclass(frozen=True)
class BackendPlan:
    """The engine-side backends to run, the ones skipped (with reasons) and why the first stands for the engine."""

    names: list[str]
    skipped: dict[str, str]
    reason: str

    @property
    def engine(self) -> str | None:
        """The backend standing for the engine (``None`` when none can run)."""
        return self.names[0] if self.names else None


def _requested(requested: str | Sequence[str]) -> list[str] | None:
    if isinstance(requested, str):
        if requested == "auto":
            return None
        requested = [requested]
    names = list(requested)
    unknown = [n for n in names if n not in ENGINE_BACKENDS]
    if unknown or not names:
        raise ConfigError(f"Unknown engine backend(s) {unknown or names}; choose from {ENGINE_BACKENDS} or 'auto'.")
    return names


def select_backends(available: Availability, requested: str | Sequence[str] = "auto") -> BackendPlan:
    """The engine-side backends to run for ``requested`` given what can run here.

    Args:
        available: a reason per backend that cannot run (``None``: it can).
        requested: ``"auto"`` (every backend that can run, in :data:`ENGINE_BACKENDS` order), one name,
            or a list of names.

    Raises:
        ConfigError: an unknown backend name.
        BackendUnavailableError: a requested backend cannot run here (its reason is in the message).

    Example:
        >>> try:
        ...     select_backends(Availability({"tensorrt": "no GPU"}), "tensorrt")
        ... except BackendUnavailableError as exc:
        ...     print(str(exc)[:60])
        Backend 'tensorrt' was requested but cannot run here: no GPU
    """
    names = _requested(requested)
    for name in names or ():
        why = available.reason(name)
        if why is not None:
            raise BackendUnavailableError(
                f"Backend {name!r} was requested but cannot run here: {why}. Ask for another backend "
                f"({', '.join(b for b in ENGINE_BACKENDS if b != name)}) or 'auto'."
            )
    if names is None:
        names = [b for b in ENGINE_BACKENDS if available.reason(b) is None]
    skipped = {b: str(available.reason(b)) for b in ENGINE_BACKENDS if b not in names and b in available.reasons}
    return BackendPlan(names, skipped, _engine_reason(names, available))


def _engine_reason(names: list[str], available: Availability) -> str:
    if not names:
        why = "; ".join(f"{b}: {available.reason(b)}" for b in ENGINE_BACKENDS)
        return f"no engine-side backend can run here ({why})"
    if names[0] == "tensorrt":
        return "the TensorRT engine ran here"
    gpu = available.reason("tensorrt")
    lead = f"the TensorRT engine cannot run here ({gpu})" if gpu is not None else "requested explicitly"
    return f"{lead}; {names[0]} stands for the engine"


__all__ = [
    "Availability",
    "BACKEND_LABELS",
    "BackendPlan",
    "ChunkedRunner",
    "ENGINE_BACKENDS",
    "backend_label",
    "select_backends",
]
