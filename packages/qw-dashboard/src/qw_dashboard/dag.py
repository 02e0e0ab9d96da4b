"""A small layered layout for a workflow's steps: pure Python, no drawing library.

Steps are put in layers by longest path from a root (a step sits one layer
right of its deepest parent); an edge that spans layers gets a waypoint in
each layer it crosses; then each layer is ordered by the barycenter of its
neighbours' positions, sweeping left to right and back a few times to cut
edge crossings. The result is plain coordinates; the
template draws them as SVG.
"""

from __future__ import annotations

import itertools
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


#: A layout slot: a step's id, or a waypoint (parent, child, layer) of an edge that spans layers.
Slot = str | tuple[str, str, int]


def _order(
    by_layer: list[list[Slot]],
    parents: Mapping[Slot, list[Slot]],
    children: Mapping[Slot, list[Slot]],
) -> None:
    """Reorder each layer in place by the barycenter of its neighbours in the layer before."""

    def sweep(indices: Iterable[int], neighbours: Mapping[Slot, list[Slot]], step: int) -> None:
        for i in indices:
            ref = {node: r for r, node in enumerate(by_layer[i - step])}
            current = {node: r for r, node in enumerate(by_layer[i])}

            def key(
                node: Slot, ref: dict[Slot, int] = ref, current: dict[Slot, int] = current
            ) -> float:
                near = [ref[n] for n in neighbours.get(node, ()) if n in ref]
                # A node with no neighbour there keeps its place.
                return sum(near) / len(near) if near else float(current[node])

            by_layer[i].sort(key=key)

    count = len(by_layer)
    for _ in range(SWEEPS):
        sweep(range(1, count), parents, 1)
        sweep(range(count - 2, -1, -1), children, -1)


def _curve(x1: int, y1: int, x2: int, y2: int) -> str:
    bend = max(GAP_X // 2, (x2 - x1) // 2)
    return f"C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


def layout(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """Place ``nodes`` (in their given order as the first guess) with ``edges`` (parent, child).

    Edges naming a node not in ``nodes`` are dropped. Layers run left to
    right, each centred vertically. An edge that spans several layers gets
    a waypoint in each layer between (ordered like a step, so that it runs
    between the boxes rather than through them).
    """
    known = set(nodes)
    kept = [(p, c) for p, c in dict.fromkeys(edges) if p in known and c in known and p != c]
    step_parents: dict[str, list[str]] = {}
    for p, c in kept:
        step_parents.setdefault(c, []).append(p)
    layer = layers(nodes, step_parents)
    count = 1 + max(layer.values(), default=-1)
    by_layer: list[list[Slot]] = [[] for _ in range(count)]
    for node in nodes:
        by_layer[layer[node]].append(node)
    parents: dict[Slot, list[Slot]] = {}
    children: dict[Slot, list[Slot]] = {}
    waypoints: dict[tuple[str, str], list[Slot]] = {}
    for p, c in kept:
        chain: list[Slot] = [p]
        for i in range(layer[p] + 1, layer[c]):
            waypoint = (p, c, i)
            by_layer[i].append(waypoint)
            chain.append(waypoint)
        chain.append(c)
        waypoints[(p, c)] = chain[1:-1]
        for up, down in itertools.pairwise(chain):
            parents.setdefault(down, []).append(up)
            children.setdefault(up, []).append(down)
    _order(by_layer, parents, children)
    slot = NODE_H + GAP_Y
    tallest = max((len(m) for m in by_layer), default=0)
    at: dict[Slot, tuple[int, int, int]] = {}  # slot -> (layer, rank, y)
    for i, members in enumerate(by_layer):
        offset = (tallest - len(members)) * slot // 2
        for r, member in enumerate(members):
            at[member] = (i, r, MARGIN + offset + r * slot)

    def x_of(i: int) -> int:
        return MARGIN + i * (NODE_W + GAP_X)

    placed = {
        node: Placed(node, at[node][0], at[node][1], x_of(at[node][0]), at[node][2])
        for node in nodes
    }
    routed = []
    for p, c in kept:
        a, b = placed[p], placed[c]
        mid = NODE_H // 2
        if b.layer <= a.layer:
            # Only a cycle puts a child at or left of its parent; draw it anyway.
            x1, x2 = a.x + a.w // 2, b.x + b.w // 2
            routed.append(Edge(p, c, f"M{x1},{a.y + mid} {_curve(x1, a.y + mid, x2, b.y + mid)}"))
            continue
        x, y = a.x + a.w, a.y + mid
        parts = [f"M{x},{y}"]
        for point in waypoints[(p, c)]:
            i, _, top = at[point]
            parts.append(_curve(x, y, x_of(i), top + mid))
            x, y = x_of(i) + NODE_W, top + mid
            parts.append(f"L{x},{y}")
        parts.append(_curve(x, y, b.x, b.y + mid))
        routed.append(Edge(p, c, " ".join(parts)))
    width = 2 * MARGIN + max(0, count * (NODE_W + GAP_X) - GAP_X)
    height = 2 * MARGIN + max(0, tallest * slot - GAP_Y)
    return Layout(tuple(placed[node] for node in nodes), tuple(routed), width, height)
