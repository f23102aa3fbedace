"""The registry: exact keys, duplicates refused, exact module classes, the generated op table."""

from __future__ import annotations

import importlib.util
import operator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import reference as nnqr

from fx2trt_pipeline.converters import FAMILIES, REGISTRY, supported_ops
from fx2trt_pipeline.converters.registry import Registry, describe_key, key_of, method
from fx2trt_pipeline.errors import InternalError

ROOT = Path(__file__).resolve().parents[2]


def test_duplicate_key_is_an_error() -> None:
    reg = Registry()

    @reg.register(operator.neg)
    def convert_neg(ctx, node, args, kwargs):
        """-x."""

    with pytest.raises(InternalError, match="registered twice"):

        @reg.register(operator.pos, operator.neg)
        def convert_other(ctx, node, args, kwargs):
            """+x."""


def test_keys_by_opcode() -> None:
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 3, 1)))
    gm.graph.call_method("view", (next(iter(gm.graph.nodes)), -1))  # a call_method node
    keys = [key_of(n) for n in gm.graph.nodes]
    assert nn.Conv2d in keys and ("call_method", "view") in keys and None in keys
    assert REGISTRY.lookup_key(method("view")).fn.__name__ == "convert_reshape"


def test_module_lookup_uses_the_exact_class() -> None:
    """Subclasses do not inherit a converter: a torch.ao reference Conv2d subclasses nn.Conv2d, and treating
    an unknown subclass as its base would silently drop whatever the subclass changes."""
    from fx2trt_pipeline.network.network import find_unsupported

    assert issubclass(nnqr.Conv2d, nn.Conv2d) and REGISTRY.lookup_key(nnqr.Conv2d) is not None

    class MyConv(nn.Conv2d):
        pass

    assert REGISTRY.lookup_key(MyConv) is None

    class Leaf(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, MyConv) or super().is_leaf_module(m, qualname)

    root = nn.Sequential(MyConv(3, 3, 1))
    rows = find_unsupported(torch.fx.GraphModule(root, Leaf().trace(root)))
    assert [(r[0], r[2]) for r in rows] == [("_0", "no converter registered for this target")]


def test_converters_are_named_and_documented() -> None:
    for conv in REGISTRY:
        assert conv.fn.__name__.startswith("convert_"), conv.fn.__name__
        assert conv.fn.__doc__ and len(conv.fn.__doc__.strip().splitlines()) == 1, conv.fn.__name__
        assert conv.family in FAMILIES


def test_supported_ops_table() -> None:
    rows = supported_ops()
    assert len(rows) == len(REGISTRY) and len(set(rows)) == len(rows)
    assert ("torch.nn.Conv2d", "conv") in rows
    assert ("Tensor.view", "shape") in rows
    assert ("torch.ops.fx2trt.quantize.default", "qdq") in rows
    assert describe_key(torch.nn.functional.linear) == "torch.nn.functional.linear"


def test_generated_doc_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_supported_ops", ROOT / "scripts" / "gen_supported_ops.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (ROOT / "docs" / "supported_ops.md").read_text() == gen.render(), (
        "docs/supported_ops.md is stale: run python scripts/gen_supported_ops.py"
    )
