"""The layered layout: layers by longest path, few crossings, no overlaps, no recursion limit."""

from __future__ import annotations

import itertools

from qw_dashboard.dag import NODE_H, NODE_W, Layout, layers, layout


def _crossings(placed: Layout) -> int:
    """Edge pairs between the same two adjacent layers that cross."""
    pos = {n.id: n for n in placed.nodes}
    count = 0
    for (a, b), (c, d) in itertools.combinations([(e.parent, e.child) for e in placed.edges], 2):
        if pos[a].layer != pos[c].layer or pos[b].layer != pos[d].layer:
            continue
        if (pos[a].rank - pos[c].rank) * (pos[b].rank - pos[d].rank) < 0:
            count += 1
    return count


def test_layers_are_longest_paths() -> None:
    parents = {"b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["a", "d"]}
    assert layers(["a", "b", "c", "d", "e"], parents) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}


def test_parents_outside_the_nodes_are_ignored() -> None:
    assert layers(["x", "y"], {"x": ["gone"], "y": ["x"]}) == {"x": 0, "y": 1}


def test_a_cycle_does_not_hang() -> None:
    found = layers(["a", "b"], {"a": ["b"], "b": ["a"]})
    assert set(found) == {"a", "b"}
    placed = layout(["a", "b"], [("a", "b"), ("b", "a")])
    assert len(placed.edges) == 2


def test_a_long_chain_needs_no_recursion() -> None:
    ids = [f"s{i}" for i in range(20_000)]
    found = layers(ids, {ids[i]: [ids[i - 1]] for i in range(1, len(ids))})
    assert found[ids[-1]] == len(ids) - 1


def test_diamond_positions_and_edges() -> None:
    placed = layout(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    by_id = {n.id: n for n in placed.nodes}
    assert [by_id[n].layer for n in "abcd"] == [0, 1, 1, 2]
    assert by_id["b"].x == by_id["c"].x > by_id["a"].x
    assert by_id["b"].y != by_id["c"].y
    assert {(e.parent, e.child) for e in placed.edges} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "d"),
        ("c", "d"),
    }
    for e in placed.edges:
        assert e.d.startswith("M")
    assert placed.width >= 3 * NODE_W
    assert placed.height >= 2 * NODE_H


def test_barycenter_order_removes_avoidable_crossings() -> None:
    # Given in an order that crosses every edge: a→y, b→x.
    nodes = ["a", "b", "x", "y"]
    edges = [("a", "y"), ("b", "x")]
    placed = layout(nodes, edges)
    assert _crossings(placed) == 0
    # A fan-out and fan-in of two interleaved families untangle too.
    nodes = ["r1", "r2", "m1", "n1", "m2", "n2", "j1", "j2"]
    edges = [
        ("r1", "m1"),
        ("r1", "m2"),
        ("r2", "n1"),
        ("r2", "n2"),
        ("m1", "j1"),
        ("m2", "j1"),
        ("n1", "j2"),
        ("n2", "j2"),
    ]
    assert _crossings(layout(nodes, edges)) == 0


def test_boxes_never_overlap() -> None:
    nodes = [f"n{i}" for i in range(60)]
    edges = [(f"n{i}", f"n{j}") for i in range(60) for j in (2 * i + 1, 2 * i + 2) if j < 60]
    placed = layout(nodes, edges)
    for a, b in itertools.combinations(placed.nodes, 2):
        apart_x = a.x + a.w <= b.x or b.x + b.w <= a.x
        apart_y = a.y + a.h <= b.y or b.y + b.h <= a.y
        assert apart_x or apart_y, (a, b)
        assert a.x >= 0
        assert a.x + a.w <= placed.width
        assert a.y >= 0
        assert a.y + a.h <= placed.height


def test_unknown_and_repeated_edges_are_dropped() -> None:
    placed = layout(["a", "b"], [("a", "b"), ("a", "b"), ("a", "zz"), ("b", "b")])
    assert [(e.parent, e.child) for e in placed.edges] == [("a", "b")]


def test_empty() -> None:
    placed = layout([], [])
    assert placed.nodes == ()
    assert placed.edges == ()


def test_an_edge_spanning_layers_runs_between_the_boxes() -> None:
    # a → b → c, and a → c directly: the long edge gets a waypoint in b's layer.
    placed = layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    b = next(n for n in placed.nodes if n.id == "b")
    (long_edge,) = [e for e in placed.edges if (e.parent, e.child) == ("a", "c")]
    lines = [part for part in long_edge.d.split() if part.startswith("L")]
    assert len(lines) == 1
    x, y = (int(v) for v in lines[0][1:].split(","))
    assert x == b.x + b.w
    assert not b.y <= y <= b.y + b.h
    # Short edges have no waypoint.
    (short,) = [e for e in placed.edges if (e.parent, e.child) == ("a", "b")]
    assert "L" not in short.d
