"""Graph-encoding tensors and the network parts the VAE and GAN share.

Generators see architectures only as :class:`dnas_core.GraphEncoding` s: an upper
triangular adjacency (nodes in topological order) and a one-hot operation per node.
One generator instance serves one layout (number of nodes, operation names), fixed
by the first graphs it is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dnas_core import GraphEncoding


@dataclass(frozen=True)
class Layout:
    """The shape every graph of one space has."""

    num_nodes: int
    op_names: tuple[str, ...]

    @property
    def num_ops(self) -> int:
        return len(self.op_names)

    def to_state(self) -> dict:
        return {"num_nodes": self.num_nodes, "op_names": list(self.op_names)}

    @classmethod
    def from_state(cls, state: dict) -> Layout:
        return cls(int(state["num_nodes"]), tuple(str(s) for s in state["op_names"]))


def layout_of(graphs: Sequence[GraphEncoding], expected: Layout | None = None) -> Layout:
    if not graphs:
        raise ValueError("a generator needs at least one graph to learn from")
    lay = expected or Layout(graphs[0].num_nodes, tuple(graphs[0].op_names))
    for i, g in enumerate(graphs):
        if g.num_nodes != lay.num_nodes or tuple(g.op_names) != lay.op_names:
            raise ValueError(
                f"graph {i} has {g.num_nodes} nodes over ops {tuple(g.op_names)}, but this generator "
                f"learns graphs of {lay.num_nodes} nodes over {lay.op_names}; use one generator per search space"
            )
    return lay


def to_tensors(graphs: Sequence[GraphEncoding]) -> tuple[torch.Tensor, torch.Tensor]:
    """(adjacency (B, N, N), ops (B, N, F)) float tensors."""
    adj = torch.from_numpy(np.stack([g.adjacency for g in graphs]).astype(np.float32))
    ops = torch.from_numpy(np.stack([g.ops for g in graphs]).astype(np.float32))
    return adj, ops


def upper_mask(n: int) -> torch.Tensor:
    return torch.triu(torch.ones(n, n), diagonal=1)


def to_graphs(adj: torch.Tensor, ops: torch.Tensor, layout: Layout) -> list[GraphEncoding]:
    """Discretise decoder outputs (probabilities or one-hots) into graph encodings."""
    a = (adj.detach().cpu() > 0.5).float() * upper_mask(layout.num_nodes)
    idx = ops.detach().cpu().argmax(-1)
    onehot = torch.nn.functional.one_hot(idx, layout.num_ops).float()
    return [GraphEncoding(a[i].numpy(), onehot[i].numpy(), layout.op_names) for i in range(a.shape[0])]


class GINEncoder(nn.Module):
    """GIN-style message passing over a DAG, read out to one vector per graph.

    Each layer updates a node from itself, the sum over its predecessors and the sum
    over its successors (a DAG's two directions carry different information):
    ``h' = MLP([(1 + eps) h, A^T h, A h])``. The readout concatenates the node states
    in topological order with their sum.
    """

    def __init__(self, layout: Layout, hidden: int, layers: int):
        super().__init__()
        self.inp = nn.Linear(layout.num_ops, hidden)
        self.eps = nn.Parameter(torch.zeros(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(3 * hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            for _ in range(layers)
        )
        self.out_dim = hidden * (layout.num_nodes + 1)

    def forward(self, adj: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        h = self.inp(ops)
        b, n, d = h.shape
        for k, mlp in enumerate(self.mlps):
            pred = adj.transpose(1, 2) @ h
            succ = adj @ h
            z = torch.cat([(1 + self.eps[k]) * h, pred, succ], dim=-1).reshape(b * n, 3 * d)
            h = torch.relu(mlp(z).reshape(b, n, d)) + h
        return torch.cat([h.reshape(b, n * d), h.sum(1)], dim=-1)


class GraphDecoder(nn.Module):
    """A vector -> (adjacency logits (B, N, N), op logits (B, N, F)); entries on or
    below the diagonal are fixed at a large negative logit (no edge)."""

    def __init__(self, layout: Layout, in_dim: int, hidden: int):
        super().__init__()
        n, f = layout.num_nodes, layout.num_ops
        self.n, self.f = n, f
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.adj = nn.Linear(hidden, n * n)
        self.ops = nn.Linear(hidden, n * f)
        self.register_buffer("mask", upper_mask(n))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(z)
        adj = self.adj(h).view(-1, self.n, self.n)
        adj = adj * self.mask - 30.0 * (1 - self.mask)
        return adj, self.ops(h).view(-1, self.n, self.f)
