"""1-D operations and the fast search cell of the ``seq1d`` space.

Operations on ``(N, C, L)`` tensors, all keeping ``C`` and ``L``:

=============== ======================================================================
``none``         zero (the edge is absent)
``skip_connect`` identity
``sep_conv_K``   ReLU -> depthwise conv (K taps) -> pointwise conv -> BN, K in 3, 5, 7
``dil_conv_K``   the same with dilation 2 (receptive field 2K-1), K in 3, 5
``max_pool_3``   max pooling, 3 taps, stride 1
``avg_pool_3``   average pooling, 3 taps, stride 1 (padding not counted)
``self_attn``    multi-head self-attention over L (1x1 q/k/v and output projections) -> BN
=============== ======================================================================

The cell is the NAS-Bench-201 DAG: 4 nodes, node j = sum over i < j of op_ij(node i),
6 edges, the last node is the output.

:class:`SearchCell` computes the DARTS mixed operation without the textbook's waste:
every edge leaving node ``i`` reads the same ``relu(node_i)``, so the depthwise and
pointwise convolutions of one kernel size for all outgoing edges run as one grouped
convolution each, and one batch norm whose per-channel weight is the mixing weight
(``w * BN(y)`` is batch norm with weight ``w``). The q/k/v projections of all
outgoing attention ops are one 1x1 convolution. Average pooling is linear, so the
pooled terms of a target node are pooled once: ``pool(sum_i w_i x_i)``. ``none``
costs nothing, and an operation whose weights are all zero (pruned, or not drawn by
hard sampling) is not computed. :func:`reference_cell_forward` is the textbook
per-edge, per-op weighted sum with the same parameters; a test holds the two equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dnas_core import MixWeights
from dnas_core.layers import split_channels

OPS: tuple[str, ...] = ("none", "skip_connect", "sep_conv_3", "sep_conv_5", "sep_conv_7", "dil_conv_3",
                        "dil_conv_5", "max_pool_3", "avg_pool_3", "self_attn")
#: conv op -> (kernel, dilation)
CONV_OPS: dict[str, tuple[int, int]] = {"sep_conv_3": (3, 1), "sep_conv_5": (5, 1), "sep_conv_7": (7, 1),
                                        "dil_conv_3": (3, 2), "dil_conv_5": (5, 2)}
#: Edges (to, from) in arch-string order: node1<-0 | node2<-0, node2<-1 | node3<-0, node3<-1, node3<-2.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
OP_INDEX = {op: k for k, op in enumerate(OPS)}


def out_edges(i: int) -> list[int]:
    """Indices (into EDGES) of the edges leaving node ``i``."""
    return [e for e, (_, src) in enumerate(EDGES) if src == i]


def in_edges(j: int) -> list[int]:
    return [e for e, (t, _) in enumerate(EDGES) if t == j]


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool1d(x, 3, stride=1, padding=1, count_include_pad=False)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool1d(x, 3, stride=1, padding=1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention over L: q, k, v ``(N, C, L)`` -> ``(N, C, L)``."""
    n, c, length = q.shape
    d = c // heads
    q = q.reshape(n, heads, d, length).transpose(2, 3)  # (n, h, L, d)
    k = k.reshape(n, heads, d, length)  # (n, h, d, L)
    v = v.reshape(n, heads, d, length).transpose(2, 3)
    scores = torch.softmax(torch.matmul(q, k) / math.sqrt(d), dim=-1)
    return torch.matmul(scores, v).transpose(2, 3).reshape(n, c, length)


# ---------------------------------------------------------------------------------
# Discrete operations
# ---------------------------------------------------------------------------------


class SepConv1d(nn.Module):
    def __init__(self, c: int, k: int, dilation: int = 1):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv1d(c, c, k, padding=dilation * (k - 1) // 2, dilation=dilation, groups=c, bias=False),
            nn.Conv1d(c, c, 1, bias=False),
            nn.BatchNorm1d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SelfAttention1d(nn.Module):
    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv1d(c, 3 * c, 1, bias=False)
        self.proj = nn.Conv1d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm1d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        return self.bn(self.proj(attention(q, k, v, self.heads)))


class Pool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool(x) if self.kind == "max" else avg_pool(x)


def make_op(op: str, c: int, heads: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op in CONV_OPS:
        k, d = CONV_OPS[op]
        return SepConv1d(c, k, d)
    if op == "max_pool_3":
        return Pool("max")
    if op == "avg_pool_3":
        return Pool("avg")
    if op == "self_attn":
        return SelfAttention1d(c, heads)
    raise ValueError(f"unknown seq1d operation {op!r}")


class InferCell(nn.Module):
    """A cell with one operation per edge."""

    def __init__(self, ops: tuple[str, ...], c: int, heads: int):
        super().__init__()
        self.ops = tuple(ops)
        self.edges = nn.ModuleDict({f"{t}_{i}": make_op(op, c, heads)
                                    for (t, i), op in zip(EDGES, self.ops, strict=True) if op != "none"})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, NUM_NODES):
            out = None
            for e in in_edges(j):
                t, i = EDGES[e]
                if self.ops[e] == "none":
                    continue
                y = self.edges[f"{t}_{i}"](nodes[i])
                out = y if out is None else out + y
            nodes.append(out if out is not None else torch.zeros_like(x))
        return nodes[-1]


class ReduceBlock(nn.Module):
    """Residual block halving L and going from ``c_in`` to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), nn.Conv1d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm1d(c_out))
        self.conv_b = nn.Sequential(nn.ReLU(), nn.Conv1d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm1d(c_out))
        self.shortcut = nn.Conv1d(c_in, c_out, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


# ---------------------------------------------------------------------------------
# The search cell
# ---------------------------------------------------------------------------------


class _SourceOps(nn.Module):
    """The parametric operations of every edge leaving one node, batched over edges."""

    def __init__(self, c: int, n_out: int, heads: int):
        super().__init__()
        self.c, self.n_out, self.heads = c, n_out, heads
        self.dw = nn.ParameterDict()
        self.pw = nn.ParameterDict()
        for op, (k, _) in CONV_OPS.items():
            dw = nn.Conv1d(c * n_out, c * n_out, k, groups=c * n_out, bias=False).weight  # (n_out*C, 1, k)
            pw = nn.Conv1d(c * n_out, c * n_out, 1, groups=n_out, bias=False).weight  # (n_out*C, C, 1)
            self.dw[op] = nn.Parameter(dw.detach().clone())
            self.pw[op] = nn.Parameter(pw.detach().clone())
        self.qkv = nn.Parameter(nn.Conv1d(c, 3 * c * n_out, 1, bias=False).weight.detach().clone())
        self.proj = nn.Parameter(nn.Conv1d(c * n_out, c * n_out, 1, groups=n_out, bias=False).weight.detach().clone())
        for op in (*CONV_OPS, "self_attn"):
            self.register_buffer(f"{op}_mean", torch.zeros(c * n_out))
            self.register_buffer(f"{op}_var", torch.ones(c * n_out))

    def bn(self, y: torch.Tensor, op: str, weight: torch.Tensor, sl: slice | None = None) -> torch.Tensor:
        mean, var = getattr(self, f"{op}_mean"), getattr(self, f"{op}_var")
        if sl is not None:
            mean, var = mean[sl], var[sl]
        return F.batch_norm(y, mean, var, weight=weight, bias=None, training=self.training, momentum=0.1, eps=1e-5)

    def conv_all(self, r: torch.Tensor, op: str) -> torch.Tensor:
        """Op ``op`` of every outgoing edge on ``r = relu(x)``: ``(N, n_out*C, L)`` before BN."""
        k, d = CONV_OPS[op]
        y = F.conv1d(r.repeat(1, self.n_out, 1), self.dw[op], padding=d * (k - 1) // 2, dilation=d,
                     groups=self.c * self.n_out)
        return F.conv1d(y, self.pw[op], groups=self.n_out)

    def conv_one(self, r: torch.Tensor, op: str, slot: int) -> torch.Tensor:
        k, d = CONV_OPS[op]
        sl = slice(slot * self.c, (slot + 1) * self.c)
        y = F.conv1d(r, self.dw[op][sl], padding=d * (k - 1) // 2, dilation=d, groups=self.c)
        return F.conv1d(y, self.pw[op][sl])

    def attn_all(self, x: torch.Tensor, slots: list[int]) -> dict[int, torch.Tensor]:
        """Attention outputs (before BN) of the given outgoing slots."""
        c = self.c
        rows = torch.cat([torch.arange(3 * c * s, 3 * c * (s + 1)) for s in slots]) if len(slots) < self.n_out else None
        qkv = F.conv1d(x, self.qkv if rows is None else self.qkv[rows])
        out = {}
        for pos, s in enumerate(slots):
            q, k, v = qkv[:, 3 * c * pos: 3 * c * (pos + 1)].chunk(3, dim=1)
            a = attention(q, k, v, self.heads)
            out[s] = F.conv1d(a, self.proj[s * c:(s + 1) * c])
        return out


class SearchCell(nn.Module):
    """The seq1d cell with every operation on every edge (see the module doc)."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.c = c
        self.sources = nn.ModuleList([_SourceOps(c, len(out_edges(i)), heads) for i in range(NUM_NODES - 1)])

    def forward(self, x: torch.Tensor, mix: MixWeights) -> torch.Tensor:
        w = mix.weights
        if mix.index is not None:
            # Hard sampling: only the drawn op of each edge has a non-zero weight.
            keep = F.one_hot(mix.index, len(OPS)).to(w.dtype)
            w = w * keep
            active = keep.bool()
        else:
            active = (w != 0).detach()
        return self._forward(x, w, active.cpu())

    def _forward(self, x: torch.Tensor, w: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        c = self.c
        nodes = [x]
        terms: list[list[torch.Tensor]] = [[] for _ in range(NUM_NODES)]
        for j in range(1, NUM_NODES):
            # Emit the parametric ops of node j-1 (the newest node) for all its targets.
            i = j - 1
            src, edges = self.sources[i], out_edges(i)
            xi = nodes[i]
            r = None
            for op in CONV_OPS:
                col = OP_INDEX[op]
                on = [s for s, e in enumerate(edges) if active[e, col]]
                if not on:
                    continue
                r = F.relu(xi) if r is None else r
                if len(on) == len(edges):
                    y = src.bn(src.conv_all(r, op), op, w[edges, col].repeat_interleave(c))
                    for e, part in zip(edges, split_channels(y, c), strict=True):
                        terms[EDGES[e][0]].append(part)
                else:
                    for s in on:
                        e = edges[s]
                        sl = slice(s * c, (s + 1) * c)
                        terms[EDGES[e][0]].append(src.bn(src.conv_one(r, op, s), op, w[e, col].expand(c), sl))
            col = OP_INDEX["self_attn"]
            on = [s for s, e in enumerate(edges) if active[e, col]]
            if on:
                for s, y in src.attn_all(xi, on).items():
                    e = edges[s]
                    terms[EDGES[e][0]].append(src.bn(y, "self_attn", w[e, col].expand(c), slice(s * c, (s + 1) * c)))
            # Non-parametric ops into node j.
            pool_in = None
            for e in in_edges(j):
                xs = nodes[EDGES[e][1]]
                if active[e, OP_INDEX["skip_connect"]]:
                    terms[j].append(w[e, OP_INDEX["skip_connect"]] * xs)
                if active[e, OP_INDEX["max_pool_3"]]:
                    terms[j].append(w[e, OP_INDEX["max_pool_3"]] * max_pool(xs))
                if active[e, OP_INDEX["avg_pool_3"]]:
                    p = w[e, OP_INDEX["avg_pool_3"]] * xs
                    pool_in = p if pool_in is None else pool_in + p
            if pool_in is not None:
                terms[j].append(avg_pool(pool_in))
            out = terms[j][0] if terms[j] else torch.zeros_like(x)
            for t in terms[j][1:]:
                out = out + t
            nodes.append(out)
        return nodes[-1]


def reference_cell_forward(cell: SearchCell, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The textbook DARTS mixed op with ``cell``'s parameters: every op of every edge
    computed on its own and summed with its weight (batch norm in training mode)."""
    c = cell.c
    nodes = [x]
    for j in range(1, NUM_NODES):
        total = torch.zeros_like(x)
        for e in in_edges(j):
            i = EDGES[e][1]
            xi, src = nodes[i], cell.sources[i]
            s = out_edges(i).index(e)
            sl = slice(s * c, (s + 1) * c)
            bn = lambda y: F.batch_norm(y, None, None, training=True)  # noqa: E731
            outs = {"none": xi * 0.0, "skip_connect": xi, "max_pool_3": max_pool(xi), "avg_pool_3": avg_pool(xi)}
            for op, (k, d) in CONV_OPS.items():
                y = F.conv1d(F.relu(xi), src.dw[op][sl], padding=d * (k - 1) // 2, dilation=d, groups=c)
                outs[op] = bn(F.conv1d(y, src.pw[op][sl]))
            q, kk, v = F.conv1d(xi, src.qkv[3 * c * s:3 * c * (s + 1)]).chunk(3, dim=1)
            outs["self_attn"] = bn(F.conv1d(attention(q, kk, v, src.heads), src.proj[sl]))
            total = total + sum(w[e, OP_INDEX[op]] * outs[op] for op in OPS)
        nodes.append(total)
    return nodes[-1]
