"""``torchrun`` support for ``fx2trt validate``: one process group, one GPU per rank.

``torchrun --nproc-per-node N`` starts N copies of the command with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set, and nothing more: the program itself must join
the process group and pick its GPU, or every rank scores all the data on ``cuda:0``. :func:`torchrun_group`
does both for the length of a command:

* rank ``r`` runs on ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``), so ``Engine.load`` and every
  runner that takes the current device use that rank's GPU;
* the group uses the gloo backend: ranks only exchange predictions (Python objects, gathered once), so
  no GPU collective is needed and CPU-only ranks work too.

Outside torchrun (``WORLD_SIZE`` unset or 1) nothing happens; a group the caller already made is kept.

Example:
    >>> with torchrun_group():                  # a no-op without torchrun's variables
    ...     pass
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from fx2trt_pipeline.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise ConfigError(
            f"torchrun's {name} is {os.environ.get(name)!r}; run the command with torchrun (which sets RANK, "
            "LOCAL_RANK and WORLD_SIZE) or without those variables"
        ) from None


@contextlib.contextmanager
def torchrun_group() -> Iterator[int]:
    """Join torchrun's process group and take this rank's GPU for the ``with`` block; yields the rank.

    Raises:
        ConfigError: torchrun's variables are inconsistent, or ``LOCAL_RANK`` names a GPU that is not there.
    """
    dist = torch.distributed
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        yield dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local >= count:
            raise ConfigError(
                f"torchrun rank {rank} has LOCAL_RANK {local} but this machine shows {count} GPU(s); start at "
                f"most {count} processes per node (--nproc-per-node {count})"
            )
        torch.cuda.set_device(local)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield rank
    finally:
        dist.destroy_process_group()


def under_torchrun(command: F) -> F:
    """Run ``command`` inside :func:`torchrun_group` (a decorator for CLI entry points)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torchrun_group():
            return command(*args, **kwargs)

    return run  # type: ignore[return-value]


__all__ = ["torchrun_group", "under_torchrun"]
