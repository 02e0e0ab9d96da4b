"""A small layered layout for a workflow's steps: pure Python, no drawing library.

Steps are put in layers by longest path from a root (a step sits one layer
right of its deepest parent), then ordered within each layer by the
barycenter of their neighbours' positions, sweeping left to right and back
a few times to cut edge crossings. The result is plain coordinates; the
template draws them as SVG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MAX_DRAWN_STEPS", "Edge", "Layout", "Placed", "layers", "layout"]

#: Beyond this many steps the workflow page shows the steps' table only.
MAX_DRAWN_STEPS = 500
#: Sweeps of the barycenter ordering (each one down and one up).
SWEEPS = 4

NODE_W = 168
NODE_H = 38
GAP_X = 56
GAP_Y = 14
MARGIN = 8


@dataclass(frozen=True, slots=True)
class Placed:
    """One step's box: its layer, its rank within the layer, and its top-left corner."""

    id: str
    layer: int
    rank: int
    x: int
    y: int
    w: int = NODE_W
    h: int = NODE_H


@dataclass(frozen=True, slots=True)
class Edge:
    """A parent → child edge as a cubic Bézier path between the two boxes."""

    parent: str
    child: str
    d: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Every step placed, every edge routed, and the drawing's size."""

    nodes: tuple[Placed, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int


def layers(nodes: Sequence[str], parents: Mapping[str, Iterable[str]]) -> dict[str, int]:
    """Each node's layer: 0 without a parent among ``nodes``, else 1 + its deepest parent's.

    Parents outside ``nodes`` are ignored. A cycle (which no stored workflow
    has) does not loop forever: a node met again while its own layer is
    being worked out counts as a root.
    """
    known = set(nodes)
    layer: dict[str, int] = {}
    for start in nodes:
        if start in layer:
            continue
        # Iterative depth-first walk: a chain of 50,000 steps would overflow recursion.
        stack: list[tuple[str, bool]] = [(start, False)]
        on_path: set[str] = set()
        while stack:
            node, expanded = stack.pop()
            if expanded:
                on_path.discard(node)
                ps = [p for p in parents.get(node, ()) if p in known and p in layer]
                layer[node] = 1 + max((layer[p] for p in ps), default=-1)
                continue
            if node in layer or node in on_path:
                continue
            on_path.add(node)
            stack.append((node, True))
            for p in parents.get(node, ()):
                if p in known and p not in layer and p not in on_path:
                    stack.append((p, False))
    return layer


def _order(
    by_layer: list[list[str]],
    parents: Mapping[str, list[str]],
    children: Mapping[str, list[str]],
) -> None:
    """Reorder each layer in place by the barycenter of its neighbours in the layer before."""

    def sweep(indices: Iterable[int], neighbours: Mapping[str, list[str]], step: int) -> None:
        for i in indices:
            ref = {node: r for r, node in enumerate(by_layer[i - step])}
            current = {node: r for r, node in enumerate(by_layer[i])}

            def key(
                node: str, ref: dict[str, int] = ref, current: dict[str, int] = current
            ) -> float:
                near = [ref[n] for n in neighbours.get(node, ()) if n in ref]
                # A node with no neighbour there keeps its place.
                return sum(near) / len(near) if near else float(current[node])

            by_layer[i].sort(key=key)

    count = len(by_layer)
    for _ in range(SWEEPS):
        sweep(range(1, count), parents, 1)
        sweep(range(count - 2, -1, -1), children, -1)


def layout(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """Place ``nodes`` (in their given order as the first guess) with ``edges`` (parent, child).

    Edges naming a node not in ``nodes`` are dropped. Layers run left to
    right; within a layer, boxes stack top to bottom.
    """
    known = set(nodes)
    kept = [(p, c) for p, c in dict.fromkeys(edges) if p in known and c in known and p != c]
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for p, c in kept:
        parents.setdefault(c, []).append(p)
        children.setdefault(p, []).append(c)
    layer = layers(nodes, parents)
    count = 1 + max(layer.values(), default=-1)
    by_layer: list[list[str]] = [[] for _ in range(count)]
    for node in nodes:
        by_layer[layer[node]].append(node)
    _order(by_layer, parents, children)
    placed: dict[str, Placed] = {}
    for i, members in enumerate(by_layer):
        for r, node in enumerate(members):
            placed[node] = Placed(
                node, i, r, MARGIN + i * (NODE_W + GAP_X), MARGIN + r * (NODE_H + GAP_Y)
            )
    routed = []
    for p, c in kept:
        a, b = placed[p], placed[c]
        x1, y1 = a.x + a.w, a.y + a.h // 2
        x2, y2 = b.x, b.y + b.h // 2
        if b.layer <= a.layer:
            # Only a cycle puts a child at or left of its parent; draw it anyway.
            x1, x2 = a.x + a.w // 2, b.x + b.w // 2
        bend = max(GAP_X // 2, (x2 - x1) // 2)
        routed.append(Edge(p, c, f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"))
    tallest = max((len(m) for m in by_layer), default=0)
    width = 2 * MARGIN + max(0, count * (NODE_W + GAP_X) - GAP_X)
    height = 2 * MARGIN + max(0, tallest * (NODE_H + GAP_Y) - GAP_Y)
    ordered = tuple(placed[node] for node in nodes)
    return Layout(ordered, tuple(routed), width, height)
