"""Network input descriptions: names, dtypes and static or dynamic shapes.

A dynamic dimension is ``-1`` in ``shape`` with its range given by ``min_shape``/``opt_shape``/
``max_shape`` (one TensorRT optimization profile), as in trtexec's ``--minShapes/--optShapes/--maxShapes``.

Example:
    >>> import torch
    >>> from fx2trt_pipeline.network.inputs import InputSpec
    >>> spec = InputSpec.dynamic_batch("images", (3, 224, 224), min_batch=1, opt_batch=8, max_batch=32)
    >>> spec.shape, spec.max_shape
    ((-1, 3, 224, 224), (32, 3, 224, 224))
    >>> InputSpec.from_tensor("x", torch.zeros(2, 3)).shape
    (2, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fx2trt_pipeline.errors import ConfigError, ConversionError
from fx2trt_pipeline.trt_types import dtype_name, torch_dtype_from_name


@dataclass(frozen=True)
class InputSpec:
    """One network input.

    Attributes:
        name: tensor name in the network and engine.
        shape: dimensions, ``-1`` for dynamic ones.
        dtype: torch dtype of the input.
        min_shape, opt_shape, max_shape: profile for dynamic dims (all ``None`` when static).
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        profile = (self.min_shape, self.opt_shape, self.max_shape)
        if self.is_dynamic:
            if any(p is None for p in profile):
                raise ConfigError(
                    f"Input {self.name!r} has dynamic dims {self.shape}; give min_shape, opt_shape and max_shape"
                )
            for p in profile:
                if len(p) != len(self.shape) or any(s != -1 and s != d for s, d in zip(self.shape, p)):
                    raise ConfigError(f"Input {self.name!r}: profile shape {tuple(p)} does not match {self.shape}")
            mn, op, mx = (tuple(int(d) for d in p) for p in profile)
            if not all(a <= b <= c for a, b, c in zip(mn, op, mx)):
                raise ConfigError(f"Input {self.name!r}: need min <= opt <= max per dim, got {mn}, {op}, {mx}")
            object.__setattr__(self, "min_shape", mn)
            object.__setattr__(self, "opt_shape", op)
            object.__setattr__(self, "max_shape", mx)

    @property
    def is_dynamic(self) -> bool:
        """True when any dimension is ``-1``."""
        return any(d == -1 for d in self.shape)

    @classmethod
    def from_tensor(cls, name: str, tensor: torch.Tensor) -> InputSpec:
        """A static input shaped like ``tensor``."""
        return cls(name, tuple(tensor.shape), tensor.dtype)

    @classmethod
    def dynamic_batch(
        cls,
        name: str,
        sample_shape: Sequence[int],
        min_batch: int = 1,
        opt_batch: int = 1,
        max_batch: int = 1,
        dtype: torch.dtype = torch.float32,
    ) -> InputSpec:
        """An input whose leading (batch) dimension is dynamic."""
        rest = tuple(sample_shape)
        return cls(name, (-1, *rest), dtype, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))

    def example_shape(self) -> tuple[int, ...]:
        """A concrete shape to build example tensors with (the opt shape when dynamic)."""
        return self.opt_shape if self.is_dynamic else self.shape  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (dtype as a string)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": dtype_name(self.dtype),
            "min_shape": list(self.min_shape) if self.min_shape else None,
            "opt_shape": list(self.opt_shape) if self.opt_shape else None,
            "max_shape": list(self.max_shape) if self.max_shape else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`."""
        try:
            dtype = torch_dtype_from_name(data.get("dtype", "float32"))
        except ConversionError as exc:
            raise ConfigError(f"Input {data.get('name')!r}: {exc}") from None
        return cls(
            data["name"],
            tuple(data["shape"]),
            dtype,
            *(tuple(data[k]) if data.get(k) else None for k in ("min_shape", "opt_shape", "max_shape")),
        )


def as_input_specs(gm: torch.fx.GraphModule, inputs: Sequence[InputSpec | torch.Tensor]) -> list[InputSpec]:
    """``inputs`` with example tensors replaced by static InputSpecs named after the graph's placeholders
    (as torch_tensorrt accepts example tensors); InputSpecs pass through unchanged.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.ReLU())
        >>> [(s.name, s.shape) for s in as_input_specs(gm, [torch.zeros(2, 3)])]
        [('input_1', (2, 3))]
    """
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    specs = []
    for i, item in enumerate(inputs):
        if isinstance(item, InputSpec):
            specs.append(item)
        elif isinstance(item, torch.Tensor):
            specs.append(InputSpec.from_tensor(names[i] if i < len(names) else f"input{i}", item))
        else:
            raise ConfigError(f"Input {i} is a {type(item).__name__}; give an InputSpec or an example torch.Tensor")
    return specs
