"""Partial channel connections for the NAS-Bench-201 supernet (PC-DARTS, Xu et al., 2020).

Built by ``NB201Space.build_supernet(task, partial_channels=K)``. On every edge only
``C/K`` channels of the input go through the mixed operation; the other channels
bypass it, and a channel shuffle (``K`` groups) interleaves the two parts so that a
different slice is searched in the next cell::

    edge_ij(x) = shuffle(cat(mixed_op(x[:, :C/K]), x[:, C/K:]), K)

With ``edge_normalization`` (on by default) every incoming edge of a node also has a
weight ``beta``, softmax-normalised over the node's incoming edges::

    node_j = sum_i softmax(beta_j)_i * edge_ij(node_i)

Both the channel shuffle and the concatenation are linear, so the weighted edges of a
node are summed *before* shuffling: the mixed part is computed with the same batched
convolutions as :class:`~.ops.SearchCell` (on ``C/K`` channels, with the edge weight
folded into the operation weights), the bypass part is the ``beta``-weighted sum of the
inputs' last ``C - C/K`` channels. ``K = 1`` without edge normalisation is exactly the
dense DARTS cell.
The body's ``beta`` logits are a second architecture tensor (``arch_parameters()``
returns ``[alpha, beta]``); the derived cell is still the arg-max operation of every
edge, since every NAS-Bench-201 edge is kept.
"""

from __future__ import annotations

import torch
from torch import nn

from dnas_core import IncompatibleError, MixWeights
from dnas_core.layers import split_channels

from .ops import EDGES, NUM_NODES, ResBlock, SearchCell
from .space import NB201Body

#: For each target node j: the indices (into EDGES) of its incoming edges.
INCOMING = {j: [e for e, (t, _) in enumerate(EDGES) if t == j] for j in range(1, NUM_NODES)}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: ``(b, g*n, ...) -> (b, n*g, ...)`` interleaved."""
    if groups == 1:
        return x
    b, c = x.shape[:2]
    return x.view(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(b, c, *x.shape[2:])


def edge_weights(beta: torch.Tensor) -> torch.Tensor:
    """Softmax of ``beta`` (shape ``(num_edges,)``) over the incoming edges of each node."""
    out = torch.empty_like(beta)
    parts = [torch.softmax(beta[idx], dim=0) for idx in INCOMING.values()]
    order = [e for idx in INCOMING.values() for e in idx]
    return out.index_copy(0, torch.tensor(order, device=beta.device), torch.cat(parts))


class PartialSearchCell(SearchCell):
    """A NAS-Bench-201 search cell with partial channel connections (see module doc).

    Its parameters are those of a dense :class:`SearchCell` of width ``C/K`` (same
    state-dict keys), which holds the operations of the searched channel slice."""

    def __init__(self, c: int, k: int, track: bool = True):
        if k < 1 or c % k:
            raise IncompatibleError(f"strategy.partial_channels={k} must divide the width of every cell, which "
                                    f"space.C sets (a cell of width {c} here)")
        super().__init__(c // k, track)
        self.c_full, self.k, self.ck = c, k, c // k

    def forward(self, x: torch.Tensor, mix: MixWeights, edge_w: torch.Tensor | None = None) -> torch.Tensor:
        w = mix.weights  # a sampled index (GDAS) is honoured through its weights, computed densely
        if edge_w is not None:
            w = w * edge_w.unsqueeze(-1)
        ck, rest_c = self.ck, self.c_full - self.ck
        nodes = [x]
        heads: list[torch.Tensor] = []  # the searched C/K channels of every node
        tails: list[torch.Tensor] = []  # the bypassed rest
        conv_terms: list[list[torch.Tensor]] = [[] for _ in range(NUM_NODES)]
        for j in range(1, NUM_NODES):
            # split each node once: slicing it per edge would cost a full-size gradient
            # buffer per slice in the backward pass
            if self.k > 1:
                head, tail = split_channels(nodes[j - 1], [ck, rest_c])
                tails.append(tail)
            else:
                head = nodes[j - 1]
            heads.append(head)
            # the dense cell's batched convolutions, on the searched slice
            self._emit_convs(j - 1, head, w, conv_terms)
            part = self._mix_node(j, heads, w, conv_terms[j])
            if self.k > 1:
                rest = None
                for e in INCOMING[j]:
                    ti = tails[EDGES[e][1]]
                    term = ti if edge_w is None else edge_w[e] * ti
                    rest = term if rest is None else rest + term
                part = channel_shuffle(torch.cat([part, rest], dim=1), self.k)
            nodes.append(part)
        return nodes[-1]


class PartialNB201Body(NB201Body):
    """The NB201 supernet body with partial-channel cells and edge normalisation."""

    def __init__(self, C: int, N: int, k: int, edge_normalization: bool = True, init_scale: float = 1e-3):
        super().__init__(C, N, init_scale)
        layers: list[nn.Module] = []
        c = C
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [PartialSearchCell(c, k) for _ in range(N)]
        self.layers = nn.ModuleList(layers)
        self.partial_channels = k
        self.edge_normalization = edge_normalization
        if edge_normalization:
            self.beta = nn.Parameter(init_scale * torch.randn(len(EDGES)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta] if self.edge_normalization else [self.alpha]

    def arch_labels(self):
        labels = super().arch_labels()
        if self.edge_normalization:
            labels.append(("edges", [f"{t}<-{i}" for t, i in EDGES], ["beta"]))
        return labels

    def arch_snapshot(self) -> dict[str, list[list[float]]]:
        snap = {"cell": torch.softmax(self.alpha.detach().float(), dim=-1).tolist()}
        if self.edge_normalization:
            snap["edges"] = [[v] for v in edge_weights(self.beta.detach().float()).tolist()]
        return snap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix: MixWeights = self.weight_fn(self.alpha)
        edge_w = edge_weights(self.beta) if self.edge_normalization else None
        for layer in self.layers:
            x = layer(x, mix, edge_w) if isinstance(layer, PartialSearchCell) else layer(x)
        return self.lastact(x)
