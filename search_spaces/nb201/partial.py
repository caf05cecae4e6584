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
import torch.nn.functional as F
from torch import nn

from dnas_core import IncompatibleError, MixWeights

from .ops import EDGES, I_C1, I_C3, I_POOL, I_SKIP, NUM_NODES, ResBlock, SearchCell, avg_pool, out_edges
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
            raise IncompatibleError(f"partial_channels={k} must divide the cell width {c}")
        super().__init__(c // k, track)
        self.c_full, self.k, self.ck = c, k, c // k

    def forward(self, x: torch.Tensor, mix: MixWeights, edge_w: torch.Tensor | None = None) -> torch.Tensor:
        w = mix.weights  # a sampled index (GDAS) is honoured through its weights, computed densely
        if edge_w is not None:
            w = w * edge_w.unsqueeze(-1)
        ck = self.ck
        nodes = [x]
        for j in range(1, NUM_NODES):
            part = self._mixed_node(nodes, j, w)
            if self.k > 1:
                rest = None
                for e in INCOMING[j]:
                    xi = nodes[EDGES[e][1]][:, ck:]
                    term = xi if edge_w is None else edge_w[e] * xi
                    rest = term if rest is None else rest + term
                part = torch.cat([part, rest], dim=1)
            nodes.append(channel_shuffle(part, self.k))
        return nodes[-1]

    def _mixed_node(self, nodes: list[torch.Tensor], j: int, w: torch.Tensor) -> torch.Tensor:
        """``sum_i sum_op w[ij, op] * op(node_i[:, :C/K])`` with the batched source convs."""
        ck = self.ck
        out = None
        pool_in = None
        for e in INCOMING[j]:
            i = EDGES[e][1]
            xi = nodes[i][:, :ck]
            src = self.sources[i]
            edges = out_edges(i)
            k = edges.index(e)
            sl = slice(k * ck, (k + 1) * ck)
            r = F.relu(xi)
            # This edge's slice of the source's convolutions; the batch-norm weight is
            # materialised (an expanded, stride-0 one breaks CPU batch norm's backward
            # on channels-last inputs).
            y1 = src.bn(F.conv2d(r, src.conv1.weight[sl]), "bn1", w[e, I_C1].expand(ck).contiguous(), sl)
            y3 = src.bn(F.conv2d(r, src.conv3.weight[sl], padding=1), "bn3", w[e, I_C3].expand(ck).contiguous(), sl)
            term = w[e, I_SKIP] * xi + y1 + y3
            out = term if out is None else out + term
            p = w[e, I_POOL] * xi
            pool_in = p if pool_in is None else pool_in + p
        return out + avg_pool(pool_in)


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
