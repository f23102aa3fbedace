"""Draw a quantized GraphModule as SVG: INT8 layers, layers kept in float, and the INT8 tensors between them.

Rendered here, without Graphviz (``dot`` is not installed on the machines this runs on and has no pip
binary): a layered drawing of the DAG is enough for a CNN and makes the output identical everywhere.
A ``.dot`` file is written next to it for people who prefer Graphviz's layout.

::

    GraphModule --graph_view()--> nodes (Q/DQ, get_attr folded away) + edges (int8 when through a Q/DQ pair)
        --layout()--> rank = longest path from an input; order in a rank by parents' mean position
        --render_svg()--> <svg> (node boxes coloured by kind, Bezier edges, <title> tooltips)

Example:
    >>> import torch
    >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()))
    >>> view = graph_view(gm)
    >>> [n.name for n in view.nodes], render_svg(view).startswith("<svg")
    (['input_1', '_0', '_1', 'output'], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from torch import nn
from torch.fx import GraphModule, Node

from fx2trt_pipeline.quantize import int8_ops, qdq_ops

#: Modules that carry weights: left as modules in a quantized graph, they were kept in float.
WEIGHTED_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
KIND_STYLE = {  # fill, stroke, legend text
    "input": ("#e8eefc", "#3b5bdb", "input / output"),
    "int8": ("#d3f9d8", "#2b8a3e", "INT8 layer"),
    "float": ("#ffe8cc", "#d9480f", "kept in float"),
    "op": ("#f1f3f5", "#868e96", "other op"),
}
NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN, LEGEND_H, LEGEND_W = 168, 38, 24, 34, 16, 34, 690


@dataclass
class ViewNode:
    """One drawn node: ``kind`` is ``input`` | ``int8`` | ``float`` | ``op``."""

    name: str
    op: str
    kind: str
    detail: str = ""
    rank: int = 0
    x: float = 0.0
    y: float = 0.0


@dataclass
class GraphView:
    """Nodes in graph order and edges ``(src, dst, int8)``."""

    nodes: list[ViewNode] = field(default_factory=list)
    edges: list[tuple[str, str, bool]] = field(default_factory=list)


def op_label(gm: GraphModule, node: Node) -> str:
    """Module class name, function name or method name of a node."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op in ("placeholder", "output"):
        return node.op
    target = int8_ops.FUNCTIONAL_OF.get(node.target, node.target)  # an integer-arithmetic conv reads as conv2d
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _through_qdq(arg: Node) -> tuple[Node | None, str]:
    """The tensor behind a DQ input: ``(producer, "act")`` for Q/DQ, ``(None, "weight")`` for weights."""
    if qdq_ops.is_dequantize(arg):
        src = arg.args[0]
        if isinstance(src, Node) and qdq_ops.is_quantize(src):
            inner = src.args[0]
            return (inner if isinstance(inner, Node) else None), "act"
        return None, "weight"
    return arg, "plain"


def node_kind(gm: GraphModule, node: Node) -> str:
    """``int8`` (quantized inputs or weights), ``float`` (a weighted module left in float) or ``op``."""
    if node.op in ("placeholder", "output"):
        return "input"
    if any(_through_qdq(a)[1] in ("act", "weight") for a in node.all_input_nodes):
        return "int8"
    if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), WEIGHTED_MODULES):
        return "float"
    return "op"


def graph_view(gm: GraphModule) -> GraphView:
    """The drawable graph: compute nodes, inputs and outputs; Q/DQ pairs become int8 edges."""
    view = GraphView()
    for node in gm.graph.nodes:
        if node.op == "get_attr" or qdq_ops.is_quantize(node) or qdq_ops.is_dequantize(node):
            continue
        kind = node_kind(gm, node)
        detail = str(node.target) if node.op == "call_module" else ""
        view.nodes.append(ViewNode(node.name, op_label(gm, node), kind, detail))
        seen: set[tuple[str, bool]] = set()
        for arg in node.all_input_nodes:
            src, how = _through_qdq(arg)
            if src is None or src.op == "get_attr" or how == "weight":
                continue
            key = (src.name, how == "act")
            if key not in seen:
                seen.add(key)
                view.edges.append((src.name, node.name, how == "act"))
    return view


def layout(view: GraphView) -> tuple[float, float, dict[tuple[str, str], list[tuple[float, float]]]]:
    """Place nodes in ranks (longest path from a source) and route edges.

    Edges that span several ranks get a virtual node in every rank they cross (Sugiyama's method),
    so they claim a slot and run beside the nodes instead of through them.

    Returns:
        ``(width, height, bends)``: drawing size and, per long edge, its points in the ranks between.
    """
    by_name = {n.name: n for n in view.nodes}
    parents: dict[str, list[str]] = {n.name: [] for n in view.nodes}
    for src, dst, _ in view.edges:
        if src in by_name and dst in by_name:
            parents[dst].append(src)
    for node in view.nodes:  # graph order is topological
        node.rank = 1 + max((by_name[p].rank for p in parents[node.name]), default=-1)
    rank_of = {n.name: n.rank for n in view.nodes}
    chains: dict[tuple[str, str], list[str]] = {}
    for src, dst, _ in view.edges:
        if src in by_name and dst in by_name and rank_of[dst] - rank_of[src] > 1:
            chain = [f"{src}->{dst}#{r}" for r in range(rank_of[src] + 1, rank_of[dst])]
            chains[(src, dst)] = chain
            prev = src
            for r, virtual in zip(range(rank_of[src] + 1, rank_of[dst]), chain):
                rank_of[virtual], parents[virtual] = r, [prev]
                prev = virtual
            parents[dst] = [prev if p == src else p for p in parents[dst]]
    ranks: dict[int, list[str]] = {}
    for name in rank_of:
        ranks.setdefault(rank_of[name], []).append(name)
    slot: dict[str, float] = {}
    for r in sorted(ranks):
        row = ranks[r]
        # Barycentre ordering: under the mean slot of its parents, ties kept in graph order.
        row.sort(key=lambda n: sum(slot[p] for p in parents[n]) / len(parents[n]) if parents[n] else 0.0)
        for i, name in enumerate(row):
            slot[name] = i - (len(row) - 1) / 2
    widest = max(len(row) for row in ranks.values())
    width = max(widest * (NODE_W + GAP_X) - GAP_X + 2 * MARGIN, LEGEND_W)
    xy = {
        name: (
            width / 2 + slot[name] * (NODE_W + GAP_X),
            MARGIN + LEGEND_H + rank_of[name] * (NODE_H + GAP_Y),
        )
        for name in rank_of
    }
    for node in view.nodes:
        node.x, node.y = xy[node.name][0] - NODE_W / 2, xy[node.name][1]
    bends = {edge: [xy[v] for v in chain] for edge, chain in chains.items()}
    height = MARGIN * 2 + LEGEND_H + (max(ranks) + 1) * (NODE_H + GAP_Y) - GAP_Y
    return width, height, bends


def _edge_path(points: list[tuple[float, float]]) -> str:
    """A smooth path through ``points`` (vertical tangents at each point, as in layered drawings)."""
    (x, y), parts = points[0], [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for nx, ny in points[1:]:
        dy = (ny - y) * 0.5
        parts.append(f"C{x:.1f},{y + dy:.1f} {nx:.1f},{ny - dy:.1f} {nx:.1f},{ny:.1f}")
        x, y = nx, ny
    return " ".join(parts)


def _short(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_svg(view: GraphView, title: str = "quantized graph") -> str:
    """An SVG document of the graph (self-contained: inline styles, no scripts)."""
    width, height, bends = layout(view)
    by_name = {n.name: n for n in view.nodes}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="11" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#868e96"/></marker>'
        '<marker id="arrow8" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#2b8a3e"/></marker></defs>',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
    ]
    x = MARGIN
    for kind, (fill, stroke, text) in KIND_STYLE.items():
        out.append(
            f'<rect x="{x}" y="{MARGIN}" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 19}" y="{MARGIN + 11}" fill="#343a40">{escape(text)}</text>'
        )
        x += 40 + 7 * len(text)
    out.append(
        f'<line x1="{x}" y1="{MARGIN + 7}" x2="{x + 26}" y2="{MARGIN + 7}" stroke="#2b8a3e" '
        f'stroke-width="2.2"/><text x="{x + 31}" y="{MARGIN + 11}" fill="#343a40">INT8 tensor (Q/DQ)</text>'
    )
    for src, dst, int8 in view.edges:
        a, b = by_name.get(src), by_name.get(dst)
        if a is None or b is None:
            continue
        # Through the virtual nodes: enter each rank's slot at its top and leave it at its bottom.
        middle = [pt for bx, by in bends.get((src, dst), []) for pt in ((bx, by), (bx, by + NODE_H))]
        path = _edge_path([(a.x + NODE_W / 2, a.y + NODE_H), *middle, (b.x + NODE_W / 2, b.y)])
        style = (
            'stroke="#2b8a3e" stroke-width="2.2" marker-end="url(#arrow8)"'
            if int8
            else 'stroke="#adb5bd" stroke-width="1.3" marker-end="url(#arrow)"'
        )
        out.append(
            f'<path d="{path}" fill="none" {style}><title>{escape(src)} \u2192 {escape(dst)}'
            f"{' (int8)' if int8 else ''}</title></path>"
        )
    for n in view.nodes:
        fill, stroke, legend = KIND_STYLE[n.kind]
        tip = f"{n.name}: {n.op}" + (f" ({n.detail})" if n.detail else "") + f" \u2014 {legend}"
        out.append(
            f"<g><title>{escape(tip)}</title>"
            f'<rect x="{n.x:.1f}" y="{n.y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.4"/>'
            f'<text x="{n.x + NODE_W / 2:.1f}" y="{n.y + 15:.1f}" text-anchor="middle" font-weight="bold" '
            f'fill="#212529">{escape(_short(n.name))}</text>'
            f'<text x="{n.x + NODE_W / 2:.1f}" y="{n.y + 29:.1f}" text-anchor="middle" '
            f'fill="#495057">{escape(_short(n.op, 26))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_dot(view: GraphView, title: str = "quantized_graph") -> str:
    """The same graph in Graphviz DOT (``dot -Tsvg graph.dot -o graph.svg``)."""

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(title)} {{", '  node [shape=box, style="rounded,filled", fontname=Helvetica];']
    for n in view.nodes:
        fill, stroke, _ = KIND_STYLE[n.kind]
        lines.append(f"  {q(n.name)} [label={q(n.name + chr(10) + n.op)}, fillcolor={q(fill)}, color={q(stroke)}];")
    for src, dst, int8 in view.edges:
        attrs = ' [color="#2b8a3e", penwidth=2, label="int8"]' if int8 else ""
        lines.append(f"  {q(src)} -> {q(dst)}{attrs};")
    return "\n".join(lines + ["}"]) + "\n"


__all__ = ["GraphView", "ViewNode", "graph_view", "layout", "node_kind", "op_label", "render_svg", "to_dot"]
