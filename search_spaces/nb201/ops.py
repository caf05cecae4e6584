"""NAS-Bench-201 operations and the fast search cell.

Operations (NAS-Bench-201 order): ``none``, ``skip_connect``, ``nor_conv_1x1``,
``nor_conv_3x3`` (ReLU -> Conv -> BN), ``avg_pool_3x3`` (stride 1, padding not
counted).

:class:`SearchCell` computes exactly the DARTS mixed operation
``node_j = sum_i sum_op w[ij, op] * op(node_i)`` but organises the work by *source*
node: every convolution leaving node ``i`` reads the same ``relu(node_i)``, so the
1x1 (and the 3x3) convolutions of all its outgoing edges run as one convolution with
``n_out * C`` output channels, and one batch norm whose scale is the mixing weight
(``w * BN(y)`` is batch norm with weight ``w``). Pooling is linear, so the pooled
terms of a target node are pooled once: ``pool(sum_i w_i x_i)``. ``none`` costs
nothing. :func:`reference_cell_forward` is the textbook per-edge weighted sum with the
same parameters; a test holds the two equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnas_core import MixWeights
from dnas_core.layers import split_channels

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: Edges (to, from) in arch-string order: node1<-0 | node2<-0, node2<-1 | node3<-0, node3<-1, node3<-2.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
I_NONE, I_SKIP, I_C1, I_C3, I_POOL = range(5)


def out_edges(i: int) -> list[int]:
    """Indices (into EDGES) of the edges leaving node ``i``."""
    return [e for e, (_, src) in enumerate(EDGES) if src == i]


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool = True, track: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """NAS-Bench-201's reduction block (ResNet basic block, stride 2)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True, track: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine, track)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine, track)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class _SourceConvs(nn.Module):
    """The 1x1 and 3x3 convolutions of all edges leaving one node, batched.

    Its batch norms follow ``nn.BatchNorm``'s protocol where evaluators use it:
    ``track_running_stats``, ``momentum`` (``None``: a cumulative average, as
    batch-norm recalibration of a sampled path needs) and :meth:`reset_running_stats`.
    The cumulative average counts batches per channel, since a sampled path updates
    only the channels of its own edges."""

    def __init__(self, c: int, n_out: int, track: bool):
        super().__init__()
        self.c, self.n_out = c, n_out
        self.conv1 = nn.Conv2d(c, c * n_out, 1, bias=False)
        self.conv3 = nn.Conv2d(c, c * n_out, 3, padding=1, bias=False)
        self.track = track
        self.momentum: float | None = 0.1
        for name in ("bn1", "bn3"):
            self.register_buffer(f"{name}_mean", torch.zeros(c * n_out))
            self.register_buffer(f"{name}_var", torch.ones(c * n_out))
            # not in the state dict: only the cumulative average (momentum None) uses them
            self.register_buffer(f"{name}_count", torch.zeros(c * n_out), persistent=False)

    @property
    def track_running_stats(self) -> bool:
        return self.track

    def reset_running_stats(self) -> None:
        for name in ("bn1", "bn3"):
            getattr(self, f"{name}_mean").zero_()
            getattr(self, f"{name}_var").fill_(1.0)
            getattr(self, f"{name}_count").zero_()

    def bn(self, y: torch.Tensor, which: str, weight: torch.Tensor, sl: slice | None = None) -> torch.Tensor:
        mean, var = getattr(self, f"{which}_mean"), getattr(self, f"{which}_var")
        if sl is not None:
            mean, var = mean[sl], var[sl]
        if self.training and self.track and self.momentum is None:
            count = getattr(self, f"{which}_count")
            count = count[sl] if sl is not None else count
            with torch.no_grad():  # views: the updates land in the buffers
                count.add_(1.0)
                mean.add_((y.mean((0, 2, 3)) - mean) / count)
                var.add_((y.var((0, 2, 3)) - var) / count)
            return F.batch_norm(y, None, None, weight=weight, bias=None, training=True, eps=1e-5)
        use_batch = self.training or not self.track
        return F.batch_norm(
            y, mean if self.track else None, var if self.track else None, weight=weight, bias=None,
            training=use_batch, momentum=0.1 if self.momentum is None else self.momentum, eps=1e-5,
        )


class SearchCell(nn.Module):
    """The NAS-Bench-201 cell with every operation on every edge (see module doc)."""

    def __init__(self, c: int, track: bool = True):
        super().__init__()
        self.c = c
        self.sources = nn.ModuleList([_SourceConvs(c, len(out_edges(i)), track) for i in range(NUM_NODES - 1)])
        # device-side indices of each source's out-edges: indexing the weights with a
        # Python list would build a CPU tensor and copy it to the device every forward
        for i in range(NUM_NODES - 1):
            self.register_buffer(f"out_edges_{i}", torch.tensor(out_edges(i), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, mix: MixWeights, index: list[int] | None = None) -> torch.Tensor:
        """``index``: ``mix.index`` already read to the host (the body reads it once per
        forward instead of once per cell: each read is a device sync)."""
        if mix.index is not None:
            return self._forward_hard(x, mix.weights, mix.index if index is None else index)
        return self._forward_dense(x, mix.weights)

    def _forward_dense(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        conv_terms: list[list[torch.Tensor]] = [[] for _ in range(NUM_NODES)]
        for j in range(1, NUM_NODES):
            self._emit_convs(j - 1, nodes[j - 1], w, conv_terms)
            nodes.append(self._mix_node(j, nodes, w, conv_terms[j]))
        return nodes[-1]

    def _emit_convs(self, i: int, xi: torch.Tensor, w: torch.Tensor, conv_terms: list[list[torch.Tensor]]) -> None:
        """Run the convolutions of every edge leaving node ``i`` (input ``xi``) as one
        1x1 and one 3x3 convolution, and file each edge's slice under its target node."""
        c = self.c
        src = self.sources[i]
        r = F.relu(xi)
        w_src = w.index_select(0, getattr(self, f"out_edges_{i}"))
        y1 = src.bn(src.conv1(r), "bn1", w_src[:, I_C1].repeat_interleave(c))
        y3 = src.bn(src.conv3(r), "bn3", w_src[:, I_C3].repeat_interleave(c))
        for e, t1, t3 in zip(out_edges(i), split_channels(y1, c), split_channels(y3, c), strict=True):
            conv_terms[EDGES[e][0]].extend((t1, t3))

    @staticmethod
    def _mix_node(j: int, nodes: list[torch.Tensor], w: torch.Tensor, conv_terms: list[torch.Tensor]) -> torch.Tensor:
        """Node ``j`` from its inputs ``nodes`` and its filed convolution terms."""
        incoming = [e for e, (t, _) in enumerate(EDGES) if t == j]
        # pool(sum_i w_i x_i) once, then accumulate the skips and the convolution terms
        # in place into that fresh tensor: one pass each, no intermediate sums
        pool_in = None
        for e in incoming:
            xi = nodes[EDGES[e][1]]
            pool_in = xi * w[e, I_POOL] if pool_in is None else pool_in.addcmul_(xi, w[e, I_POOL])
        out = avg_pool(pool_in)
        for e in incoming:
            out.addcmul_(nodes[EDGES[e][1]], w[e, I_SKIP])
        for t in conv_terms:
            out.add_(t)
        return out

    def _forward_hard(self, x: torch.Tensor, w: torch.Tensor, index: torch.Tensor | list[int]) -> torch.Tensor:
        c = self.c
        idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        nodes = [x]
        relu_cache: dict[int, torch.Tensor] = {}
        for j in range(1, NUM_NODES):
            out = None
            for e, (t, i) in enumerate(EDGES):
                if t != j or idx[e] == I_NONE:
                    continue
                op, xi, we = idx[e], nodes[i], w[e, idx[e]]
                if op == I_SKIP:
                    y = we * xi
                elif op == I_POOL:
                    y = we * avg_pool(xi)
                else:
                    src = self.sources[i]
                    k = out_edges(i).index(e)
                    sl = slice(k * c, (k + 1) * c)
                    if i not in relu_cache:
                        relu_cache[i] = F.relu(xi)
                    conv, which = (src.conv1, "bn1") if op == I_C1 else (src.conv3, "bn3")
                    y = F.conv2d(relu_cache[i], conv.weight[sl], padding=conv.padding)
                    # A materialised weight: CPU batch norm's backward returns garbage for a
                    # stride-0 (expanded) weight on channels-last inputs (torch 2.13).
                    y = src.bn(y, which, we.expand(c).contiguous(), sl)
                out = y if out is None else out + y
            nodes.append(out if out is not None else torch.zeros_like(x))
        return nodes[-1]


def reference_cell_forward(cell: SearchCell, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The textbook DARTS mixed op with ``cell``'s parameters: for every edge, every
    operation computed separately and summed with its weight (BN in training mode)."""
    c = cell.c
    nodes = [x]
    for j in range(1, NUM_NODES):
        total = torch.zeros_like(x)
        for e, (t, i) in enumerate(EDGES):
            if t != j:
                continue
            xi = nodes[i]
            src = cell.sources[i]
            k = out_edges(i).index(e)
            sl = slice(k * c, (k + 1) * c)
            outs = [
                xi * 0.0,
                xi,
                F.batch_norm(F.conv2d(F.relu(xi), src.conv1.weight[sl]), None, None, training=True),
                F.batch_norm(F.conv2d(F.relu(xi), src.conv3.weight[sl], padding=1), None, None, training=True),
                avg_pool(xi),
            ]
            total = total + sum(w[e, o] * outs[o] for o in range(len(OPS)))
        nodes.append(total)
    return nodes[-1]


def live_nodes(ops: tuple[str, ...] | list[str]) -> set[int]:
    """Nodes whose value reaches the cell output (node 3) through non-``none`` edges."""
    live = {NUM_NODES - 1}
    for j in range(NUM_NODES - 2, 0, -1):
        if any(t in live and i == j and op != "none" for (t, i), op in zip(EDGES, ops, strict=True)):
            live.add(j)
    return live


def input_nodes(ops: tuple[str, ...] | list[str]) -> set[int]:
    """Nodes whose value depends on the cell input: node 0 and every node with a
    non-``none`` edge from such a node. The others are constants of the parameters (a
    node without inputs is zero; a convolution of it is its batch norm's shift), which
    a backend that folds constants (ONNX Runtime) computes once, not per call."""
    dep = {0}
    for j in range(1, NUM_NODES):
        if any(t == j and i in dep and op != "none" for (t, i), op in zip(EDGES, ops, strict=True)):
            dep.add(j)
    return dep


def effective_ops(ops: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``ops`` with the edges into dead nodes (nodes that never reach the output) set to
    ``none``: they cannot change the cell's output, so the discrete cell skips them (as
    ONNX Runtime's graph optimiser would) and the latency model does not count them."""
    live = live_nodes(ops)
    return tuple(op if t in live else "none" for (t, _), op in zip(EDGES, ops, strict=True))


class InferCell(nn.Module):
    """A NAS-Bench-201 cell with one operation per edge (edges into dead nodes are not
    built: see :func:`effective_ops`)."""

    def __init__(self, ops: tuple[str, ...], c: int):
        super().__init__()
        self.genotype_ops = tuple(ops)
        self.ops = effective_ops(ops)
        self.live = live_nodes(ops)
        self.edges = nn.ModuleDict()
        for (t, i), op in zip(EDGES, self.ops, strict=True):
            if op == "none":
                continue
            self.edges[f"{t}_{i}"] = make_op(op, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x]
        for j in range(1, NUM_NODES):
            if j not in self.live:
                nodes.append(None)
                continue
            out = None
            for (t, i), op in zip(EDGES, self.ops, strict=True):
                if t != j or op == "none":
                    continue
                y = self.edges[f"{t}_{i}"](nodes[i])
                out = y if out is None else out + y
            nodes.append(out if out is not None else torch.zeros_like(x))
        return nodes[-1]


class AvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool(x)


def make_op(op: str, c: int) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1)
    if op == "avg_pool_3x3":
        return AvgPool()
    raise ValueError(f"unknown NAS-Bench-201 operation {op!r}")
