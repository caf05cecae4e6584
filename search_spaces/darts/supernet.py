"""The DARTS search cell with a fast mixed operation.

:class:`SearchCell` computes exactly DARTS's ``MixedOp`` sum
``node_n = sum_i sum_op w[e(n, i), op] * op_e(state_i)`` but organises the work by
*source* state, because every edge leaving state ``i`` reads the same input:

* the convolution operations (``sep_conv_3x3/5x5``, ``dil_conv_3x3/5x5``) of all the
  edges leaving ``i`` run batched: ``relu(state_i)`` is replicated once per edge along
  the channels, each depthwise convolution runs once over all edges
  (``groups = n_edges * C``) and each pointwise convolution once as a grouped
  convolution (``groups = n_edges``); the mixing weight is folded into the last batch
  norm (``w * BN(y)`` is batch norm with weight ``w``);
* the parameter-free pooling operations are followed by a parameter-free batch norm
  (as in DARTS); their output does not depend on the edge, so ``max_pool`` and
  ``avg_pool`` (and their batch norms) run once per source state, not once per edge.
  The running statistics are kept per source (in DARTS, every edge from one source
  receives the same input, so its per-edge statistics are identical);
* the stride-2 ``skip_connect`` (:class:`~.ops.FactorizedReduce`) of all edges leaving
  a cell input runs as one 1x1 convolution over the two offset grids;
* ``none`` costs nothing.

:meth:`SearchCell.forward` with ``MixWeights.index`` set (hard sampling, as in GDAS)
computes only the chosen operation of each edge. :func:`reference_cell_forward` is
the textbook per-edge, per-operation weighted sum with the same parameters; a test
holds the cells equal in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dnas_core import MixWeights
from dnas_core.layers import split_channels

from .ops import CONV_OPS, CONV_SPECS, EDGES, I_AVG, I_MAX, I_NONE, I_SEP3, I_SEP5, I_SKIP, OPS, STEPS, FactorizedReduce, ReLUConvBN

_SEP = (I_SEP3, I_SEP5)
#: index of edge (node n, input i) in EDGES
EDGE_INDEX = {edge: e for e, edge in enumerate(EDGES)}


def out_edges(i: int) -> list[int]:
    """Indices (into EDGES) of the edges leaving state ``i``, by target node."""
    return [e for e, (_, src) in enumerate(EDGES) if src == i]


def replicate_channels(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` repeated ``n`` times along the channels (edge-major), in ``x``'s memory format."""
    if n == 1:
        return x
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = x.permute(0, 2, 3, 1).unsqueeze(3).expand(b, h, w, n, c).reshape(b, h, w, n * c)
        return y.permute(0, 3, 1, 2)
    return x.unsqueeze(1).expand(b, n, c, h, w).reshape(b, n * c, h, w)


def _conv_weight(shape: tuple[int, ...]) -> nn.Parameter:
    """A parameter initialised like ``nn.Conv2d`` of the same per-edge shape."""
    w = torch.empty(shape)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return nn.Parameter(w)


def _bn_weight(col: torch.Tensor, c: int) -> torch.Tensor:
    """Per-edge mixing weights ``(n_out,)`` repeated over each edge's ``c`` channels, as a
    materialised tensor: CPU batch norm's backward is wrong for a stride-0 (expanded)
    weight on channels-last inputs (torch 2.13)."""
    return col[:, None].expand(col.shape[0], c).reshape(-1).contiguous()


def _bn(y: torch.Tensor, mean: torch.Tensor | None, var: torch.Tensor | None, training: bool,
        weight: torch.Tensor | None = None) -> torch.Tensor:
    return F.batch_norm(y, mean, var, weight=weight, bias=None, training=training, momentum=0.1, eps=1e-5)


class SourceOps(nn.Module):
    """The parameters of every operation on the ``n_out`` edges leaving one state.

    Parameter tensors are edge-major: rows ``[k*C, (k+1)*C)`` belong to the ``k``-th
    outgoing edge (:func:`out_edges` order), so each edge's operation is a slice.
    """

    def __init__(self, c: int, source: int, stride: int):
        super().__init__()
        self.c, self.stride = c, stride
        self.edges = out_edges(source)
        n = self.n_out = len(self.edges)
        self.register_buffer("edge_index", torch.tensor(self.edges, dtype=torch.long), persistent=False)
        for op in CONV_OPS:
            k, _ = CONV_SPECS[op]
            stages = 2 if op in _SEP else 1
            for s in range(stages):
                setattr(self, f"dw{op}_{s}", _conv_weight((n * c, 1, k, k)))
                setattr(self, f"pw{op}_{s}", _conv_weight((n * c, c, 1, 1)))
                self.register_buffer(f"bn{op}_{s}_mean", torch.zeros(n * c))
                self.register_buffer(f"bn{op}_{s}_var", torch.ones(n * c))
        if stride == 2:
            if c % 2:
                raise ValueError(f"a reduction cell needs an even channel count, got {c}")
            self.fr_1 = _conv_weight((n * (c // 2), c, 1, 1))
            self.fr_2 = _conv_weight((n * (c // 2), c, 1, 1))
            self.register_buffer("bnfr_mean", torch.zeros(n * c))
            self.register_buffer("bnfr_var", torch.ones(n * c))
        for name in ("max", "avg"):
            self.register_buffer(f"bn{name}_mean", torch.zeros(c))
            self.register_buffer(f"bn{name}_var", torch.ones(c))

    # -- per-operation pieces, batched over a contiguous block of edges ----------------
    def stats(self, name: str, sl: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = getattr(self, f"{name}_mean"), getattr(self, f"{name}_var")
        return (mean, var) if sl is None else (mean[sl], var[sl])

    def conv_op(self, op: int, r: torch.Tensor, groups: int, w_out: torch.Tensor, training: bool,
                sl: slice | None = None) -> torch.Tensor:
        """Operation ``op`` of ``groups`` edges on ``r`` (their replicated ReLU'd input);
        ``sl`` selects the parameter rows of one edge."""
        k, dil = CONV_SPECS[op]
        pad = dil * (k // 2)
        c = self.c
        stages = 2 if op in _SEP else 1
        y = r
        for s in range(stages):
            dw, pw = getattr(self, f"dw{op}_{s}"), getattr(self, f"pw{op}_{s}")
            if sl is not None:
                dw, pw = dw[sl], pw[sl]
            stride = self.stride if s == 0 else 1
            y = F.conv2d(y, dw, stride=stride, padding=pad, dilation=dil, groups=groups * c)
            y = F.conv2d(y, pw, groups=groups)
            mean, var = self.stats(f"bn{op}_{s}", sl)
            last = s == stages - 1
            y = _bn(y, mean, var, training, w_out if last else None)
            if not last:
                y = F.relu(y)
        return y

    def factorized_reduce(self, r: torch.Tensor, w_out: torch.Tensor, training: bool, k: int | None = None) -> torch.Tensor:
        """The stride-2 skip of all edges (or of edge ``k``) as one 1x1 convolution over
        the even and odd grids: per edge, weight ``[[conv_1, 0], [0, conv_2]]``."""
        if r.shape[-1] % 2 or r.shape[-2] % 2:
            raise ValueError(f"a reduction cell needs even spatial sizes, got {tuple(r.shape[-2:])}")
        c, h = self.c, self.c // 2
        fr1, fr2 = (self.fr_1, self.fr_2) if k is None else (self.fr_1[k * h : (k + 1) * h], self.fr_2[k * h : (k + 1) * h])
        fr1, fr2 = fr1.reshape(-1, h, c), fr2.reshape(-1, h, c)
        zero = torch.zeros_like(fr1)
        weight = torch.cat([torch.cat([fr1, zero], dim=2), torch.cat([zero, fr2], dim=2)], dim=1)
        weight = weight.reshape(-1, 2 * c, 1, 1)
        grids = torch.cat([r[:, :, ::2, ::2], r[:, :, 1::2, 1::2]], dim=1)
        y = F.conv2d(grids, weight)
        sl = None if k is None else slice(k * self.c, (k + 1) * self.c)
        mean, var = self.stats("bnfr", sl)
        return _bn(y, mean, var, training, w_out)

    def pool(self, kind: str, x: torch.Tensor, training: bool) -> torch.Tensor:
        if kind == "max":
            y = F.max_pool2d(x, 3, self.stride, 1)
        else:
            y = F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False)
        mean, var = self.stats(f"bn{kind}")
        return _bn(y, mean, var, training)


class SearchCell(nn.Module):
    """A DARTS search cell: 4 nodes, every operation on all 14 edges (module doc)."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, track: bool = True):
        super().__init__()
        self.c, self.reduction, self.track = c, reduction, track
        self.preprocess0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.sources = nn.ModuleList(
            [SourceOps(c, i, 2 if reduction and i < 2 else 1) for i in range(STEPS + 1)]
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, mix: MixWeights, index: list[int] | None = None) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        if mix.index is not None:
            if index is None:
                index = mix.index.tolist()
            return self._forward_hard(states, mix.weights, index)
        return self._forward_dense(states, mix.weights)

    def _batch_stats(self) -> bool:
        return self.training or not self.track

    def _forward_dense(self, states: list[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        c, training = self.c, self._batch_stats()
        acc: list[torch.Tensor | None] = [None] * STEPS

        def add(n: int, term: torch.Tensor, weight: torch.Tensor | None = None) -> None:
            if acc[n] is None:
                acc[n] = term * weight if weight is not None else term.clone()
            elif weight is not None:
                acc[n].addcmul_(term, weight)
            else:
                acc[n].add_(term)

        for i in range(STEPS + 1):
            x = states[i]
            src = self.sources[i]
            ws = w.index_select(0, src.edge_index)  # (n_out, len(OPS)), rows in out-edge order
            targets = [EDGES[e][0] for e in src.edges]
            n_out = src.n_out
            # weighted terms first: they start each node's sum without a copy
            for kind, op in (("max", I_MAX), ("avg", I_AVG)):
                p = src.pool(kind, x, training)
                for k, n in enumerate(targets):
                    add(n, p, ws[k, op])
            r = F.relu(x)
            rep = replicate_channels(r, n_out)
            if src.stride == 2:
                y = src.factorized_reduce(r, _bn_weight(ws[:, I_SKIP], c), training)
                for n, part in zip(targets, split_channels(y, c), strict=True):
                    add(n, part)
            else:
                for k, n in enumerate(targets):
                    add(n, x, ws[k, I_SKIP])
            for op in CONV_OPS:
                y = src.conv_op(op, rep, n_out, _bn_weight(ws[:, op], c), training)
                for n, part in zip(targets, split_channels(y, c), strict=True):
                    add(n, part)
            if i >= 1:  # node i-1 has all its inputs (states 0..i) now
                states.append(acc[i - 1])
        return torch.cat(states[-STEPS:], dim=1)

    def _forward_hard(self, states: list[torch.Tensor], w: torch.Tensor, index: list[int]) -> torch.Tensor:
        c, training = self.c, self._batch_stats()
        relu_cache: dict[int, torch.Tensor] = {}
        for n in range(STEPS):
            out = None
            for i in range(n + 2):
                e = EDGE_INDEX[(n, i)]
                op = index[e]
                if op == I_NONE:
                    continue
                x, src, we = states[i], self.sources[i], w[e, op]
                k = src.edges.index(e)
                if op in (I_MAX, I_AVG):
                    y = src.pool("max" if op == I_MAX else "avg", x, training) * we
                elif op == I_SKIP and src.stride == 1:
                    y = x * we
                else:
                    if i not in relu_cache:
                        relu_cache[i] = F.relu(x)
                    w_out = we.expand(c).contiguous()  # materialised: see _bn_weight
                    if op == I_SKIP:
                        y = src.factorized_reduce(relu_cache[i], w_out, training, k)
                    else:
                        y = src.conv_op(op, relu_cache[i], 1, w_out, training, slice(k * c, (k + 1) * c))
                out = y if out is None else out + y
            if out is None:
                ref = states[1]
                size = ref.shape[-2:] if not self.reduction else (ref.shape[-2] // 2, ref.shape[-1] // 2)
                out = ref.new_zeros((ref.shape[0], c, *size))
            states.append(out)
        return torch.cat(states[-STEPS:], dim=1)


def reference_cell_forward(cell: SearchCell, s0: torch.Tensor, s1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """DARTS's textbook ``MixedOp``: every operation of every edge computed on its own
    (with ``cell``'s parameters) and summed with its weight; batch norm on batch
    statistics. The reference :class:`SearchCell` is tested against."""
    c = cell.c
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]

    def bn(y):
        return F.batch_norm(y, None, None, training=True)

    for n in range(STEPS):
        total = 0
        for i in range(n + 2):
            e = EDGE_INDEX[(n, i)]
            x, src = states[i], cell.sources[i]
            k = src.edges.index(e)
            sl = slice(k * c, (k + 1) * c)
            stride = src.stride
            outs = {I_NONE: x[:, :, ::stride, ::stride] * 0.0}
            outs[I_MAX] = bn(F.max_pool2d(x, 3, stride, 1))
            outs[I_AVG] = bn(F.avg_pool2d(x, 3, stride, 1, count_include_pad=False))
            if stride == 1:
                outs[I_SKIP] = x
            else:
                rx = F.relu(x)
                h = c // 2
                a = F.conv2d(rx, src.fr_1[k * h : (k + 1) * h], stride=2)
                b = F.conv2d(rx[:, :, 1:, 1:], src.fr_2[k * h : (k + 1) * h], stride=2)
                outs[I_SKIP] = bn(torch.cat([a, b], dim=1))
            for op in CONV_OPS:
                kk, dil = CONV_SPECS[op]
                y = x
                for s in range(2 if op in _SEP else 1):
                    y = F.relu(y)
                    y = F.conv2d(y, getattr(src, f"dw{op}_{s}")[sl], stride=stride if s == 0 else 1,
                                 padding=dil * (kk // 2), dilation=dil, groups=c)
                    y = bn(F.conv2d(y, getattr(src, f"pw{op}_{s}")[sl]))
                outs[op] = y
            total = total + sum(w[e, o] * outs[o] for o in range(len(OPS)))
        states.append(total)
    return torch.cat(states[-STEPS:], dim=1)
