"""Helpers for cell spaces whose node ``j`` takes every earlier node as input
(NAS-Bench-201 style): the ``|op~0|+|op~0|op~1|+...`` string form and the fixed DAG
of the op-on-node graph encoding. Spaces with such cells (nb201, seq1d) share them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def cell_string(ops: Sequence[str], num_nodes: int = 4) -> str:
    """``('a', 'b', 'c', ...)`` -> ``|a~0|+|b~0|c~1|+...``, edges in (to, from) order."""
    parts, e = [], 0
    for j in range(1, num_nodes):
        parts.append("|" + "|".join(f"{ops[e + i]}~{i}" for i in range(j)) + "|")
        e += j
    return "+".join(parts)


def parse_cell_string(text: str, op_names: Sequence[str], num_nodes: int = 4, what: str = "cell") -> tuple[str, ...]:
    """Inverse of :func:`cell_string`; ``ValueError`` naming the part at fault."""
    nodes = text.strip().split("+")
    if len(nodes) != num_nodes - 1:
        raise ValueError(f"not a {what} string (need {num_nodes - 1} nodes separated by '+'): {text!r}")
    ops = []
    for j, node in enumerate(nodes, start=1):
        items = [s for s in node.strip("|").split("|") if s]
        if len(items) != j:
            raise ValueError(f"node {j} of {text!r} has {len(items)} inputs, expected {j}")
        for i, item in enumerate(items):
            op, _, src = item.partition("~")
            if op not in op_names or src != str(i):
                raise ValueError(f"bad edge {item!r} in {text!r} (operations: {', '.join(op_names)})")
            ops.append(op)
    return tuple(ops)


def op_on_node_adjacency(edges: Sequence[tuple[int, int]], output_node: int) -> np.ndarray:
    """The fixed DAG of the op-on-node encoding: the input, one node per edge (to, from)
    in order, the output. An edge node feeds every edge leaving its target node."""
    n = len(edges) + 2
    adj = np.zeros((n, n), dtype=np.float32)
    for e, (t, i) in enumerate(edges):
        if i == 0:
            adj[0, e + 1] = 1
        for e2, (_, i2) in enumerate(edges):
            if i2 == t:
                adj[e + 1, e2 + 1] = 1
        if t == output_node:
            adj[e + 1, n - 1] = 1
    return adj
