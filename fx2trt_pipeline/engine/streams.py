"""Which CUDA stream an engine is enqueued on, and how it is ordered with the caller's stream.

TensorRT synchronizes the whole device around every ``execute_async_v3`` on the legacy default
stream (stream 0), which is where torch code runs unless it asks for another stream. So, like
Torch-TensorRT's Python runtime: when the caller is on the default stream the engine runs on a private
stream of its own, ordered both ways with ``wait_stream`` (no host synchronisation)::

    caller stream:  ... writes inputs ─┐                        ┌─> reads outputs, frees inputs ...
    engine stream:                     └─> wait ─> enqueue ─────┘ (caller.wait_stream(engine))

A caller already on its own stream gets the engine enqueued right there. Successive calls of one
execution context on different streams are ordered too (the later stream waits for the earlier one):
the context's activation memory serves one enqueue at a time. Tensors are allocated on the
caller's stream, and the caller waits for the engine before anything after the call runs, so torch's
caching allocator cannot hand the engine's memory to other work too early.

The functions only use ``wait_stream``, ``cuda_stream`` and ``==`` of their stream arguments, so they
are tested with fake streams on a machine without a GPU.

Example:
    >>> class S:
    ...     def __init__(self, name): self.name, self.cuda_stream, self.log = name, id(name), []
    ...     def wait_stream(self, other): self.log.append(f"{self.name} waits {other.name}")
    >>> default, private = S("default"), S("private")
    >>> stream = engine_stream(default, default, lambda: private)
    >>> enqueue_ordered(lambda handle: True, default, stream)
    True
    >>> private.log + default.log
    ['private waits default', 'default waits private']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def engine_stream(caller: Any, default: Any, new_stream: Callable[[], Any]) -> Any:
    """The stream to enqueue on: the caller's own stream, or ``new_stream()`` when it is the default one.

    Args:
        caller: ``torch.cuda.current_stream(device)``.
        default: ``torch.cuda.default_stream(device)``.
        new_stream: returns the engine's private stream (create it once and cache it).
    """
    return new_stream() if caller == default else caller


def enqueue_ordered(execute: Callable[[int], bool], caller: Any, stream: Any, previous: Any = None) -> bool:
    """Run ``execute(stream.cuda_stream)`` ordered after the caller's work and before its next work.

    Returns what ``execute`` returns (``execute_async_v3``'s success flag). The caller's stream waits
    for the engine's even when ``execute`` raises, so no later work can overtake a partial enqueue.

    Args:
        previous: the stream of the same execution context's previous enqueue. When it is another
            stream, ``stream`` waits for it first: the context's activation memory serves one
            enqueue at a time, and two streams would otherwise run it concurrently.
    """
    if previous is not None and previous is not stream and previous != stream:
        stream.wait_stream(previous)
    if stream is caller or stream == caller:
        return bool(execute(stream.cuda_stream))
    stream.wait_stream(caller)  # inputs written on the caller's stream are complete
    try:
        return bool(execute(stream.cuda_stream))
    finally:
        caller.wait_stream(stream)  # whatever the caller does next sees the outputs


__all__ = ["engine_stream", "enqueue_ordered"]
