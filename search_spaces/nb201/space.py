"""The NAS-Bench-201 (NATS-Bench topology) search space.

Macro skeleton as in NAS-Bench-201: ``N`` cells at width ``C``, a residual reduction
block to ``2C``, ``N`` cells, a reduction block to ``4C``, ``N`` cells, then BN-ReLU.
The task supplies the stem before it and the head after it. One set of architecture
logits (6 edges x 5 operations) is shared by all cells. The genotype prints in the
exact NAS-Bench-201 arch-string format, so it can be looked up in the benchmark's
tables.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dnas_core import (
    ComponentConfig,
    Genotype,
    GraphEncoding,
    IncompatibleError,
    LatencyOp,
    MixWeights,
    Network,
    SearchSpace,
    Supernet,
)
from dnas_core.cells import cell_string, op_on_node_adjacency, parse_cell_string

from .ops import EDGES, NUM_NODES, OPS, InferCell, ResBlock, SearchCell, effective_ops, input_nodes, live_nodes, make_op

#: Node types of the graph encoding: the input, the five operations, the output.
NODE_TYPES: tuple[str, ...] = ("input", *OPS, "output")


def arch_string(ops: tuple[str, ...] | list[str]) -> str:
    """``('nor_conv_3x3', ...)`` -> ``|op~0|+|op~0|op~1|+|...|``."""
    return cell_string(ops)


def parse_arch_string(text: str) -> tuple[str, ...]:
    """Inverse of :func:`arch_string`; ``ValueError`` on anything else."""
    return parse_cell_string(text, OPS, what="NAS-Bench-201 arch")


@functools.cache
def _connected_cells() -> tuple[np.ndarray, np.ndarray]:
    """Every cell as op indices (15,625 x 6) and whether its output depends on its input."""
    combos = np.array(list(itertools.product(range(len(OPS)), repeat=len(EDGES))), dtype=np.int64)
    connected = np.array([NUM_NODES - 1 in input_nodes(tuple(OPS[k] for k in row)) for row in combos])
    return combos, connected


#: Fixed DAG of the op-on-node encoding: input, one node per edge, output.
GRAPH_ADJACENCY = op_on_node_adjacency(EDGES, output_node=3)


class NB201Config(ComponentConfig):
    C: int = Field(16, ge=1, description="width of the first stage (NAS-Bench-201: 16)")
    N: int = Field(5, ge=1, description="cells per stage (NAS-Bench-201: 5)")
    retrain_C: Optional[int] = Field(None, ge=1, description="width of the retrained network (default: C)")
    retrain_N: Optional[int] = Field(None, ge=1, description="cells per stage when retraining (default: N)")
    init_scale: float = Field(1e-3, gt=0, description="std of the initial architecture logits")


class NB201Body(Supernet):
    """The supernet body: search cells sharing one (6, 5) logit tensor."""

    zero_op = "none"

    def __init__(self, C: int, N: int, init_scale: float = 1e-3):
        super().__init__()
        self.alpha = nn.Parameter(init_scale * torch.randn(len(EDGES), len(OPS)))
        layers: list[nn.Module] = []
        c = C
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [SearchCell(c) for _ in range(N)]
        self.layers = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.out_channels = c

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def arch_labels(self):
        return [("cell", [f"{t}<-{i}" for t, i in EDGES], list(OPS))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix: MixWeights = self.weight_fn(self.alpha)
        index = mix.index.tolist() if mix.index is not None else None  # one host read per forward
        for layer in self.layers:
            x = layer(x, mix, index) if isinstance(layer, SearchCell) else layer(x)
        return self.lastact(x)


class NB201Net(nn.Module):
    """The discrete body for one genotype."""

    def __init__(self, ops: tuple[str, ...], C: int, N: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = C
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [InferCell(ops, c) for _ in range(N)]
        self.layers = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lastact(self.layers(x))


class _Add(nn.Module):
    """The sum of two edge outputs (what an extra incoming edge costs a cell)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class _Zeros(nn.Module):
    """The zero tensor of a node whose inputs are all ``none``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class NB201Space(SearchSpace):
    """NAS-Bench-201 cell space: 6 edges x 5 operations, 15,625 architectures."""

    name = "nb201"
    description = "NAS-Bench-201 cell space (5 ops on 6 edges, 15,625 cells)"
    Config = NB201Config
    modalities = frozenset({"image"})

    def build_supernet(self, task: Any, **options: Any) -> Network:
        """Options: ``partial_channels=K`` (PC-DARTS partial channel connections) and
        ``edge_normalization`` (with partial channels; default true), see :mod:`.partial`."""
        options = dict(options)
        k = options.pop("partial_channels", None)
        edge_norm = options.pop("edge_normalization", True)
        if options:
            raise IncompatibleError(f"search space nb201 does not support the supernet options {sorted(options)}")
        cfg = self.config
        if k is not None:
            from .partial import PartialNB201Body

            body = PartialNB201Body(cfg.C, cfg.N, int(k), bool(edge_norm), cfg.init_scale)
        else:
            body = NB201Body(cfg.C, cfg.N, cfg.init_scale)
        return Network(task.make_stem(cfg.C), body, task.make_head(body.out_channels))

    def derive(self, supernet: Network) -> Genotype:
        """The strongest operation of every edge, unless that cell's output does not
        depend on its input (every path to node 3 has a ``none`` edge): such a cell
        computes a constant (10 % on CIFAR-10 in the table) and is never what a search
        meant. Then the cell is the most probable one, by the product over edges of the
        softmax of the logits, among the cells whose output does depend on the input."""
        alpha = supernet.body.alpha.detach().float()
        ops = tuple(OPS[int(k)] for k in alpha.argmax(dim=-1))
        if NUM_NODES - 1 in input_nodes(ops):
            return self.genotype(ops)
        combos, connected = _connected_cells()
        logp = torch.log_softmax(alpha, dim=-1).cpu().numpy()
        score = logp[np.arange(len(EDGES)), combos].sum(axis=1)
        score[~connected] = -np.inf
        return self.genotype(tuple(OPS[int(k)] for k in combos[int(np.argmax(score))]))

    def genotype(self, ops: tuple[str, ...]) -> Genotype:
        ops = tuple(ops)
        if len(ops) != len(EDGES) or any(o not in OPS for o in ops):
            raise ValueError(f"a NAS-Bench-201 genotype is 6 ops from {OPS}, got {ops}")
        return Genotype(self.name, ops, text=arch_string(ops))

    def from_string(self, text: str) -> Genotype:
        return self.genotype(parse_arch_string(text))

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        cfg = self.config
        C, N = cfg.retrain_C or cfg.C, cfg.retrain_N or cfg.N
        body = NB201Net(tuple(genotype.spec), C, N)
        return Network(task.make_stem(C), body, task.make_head(body.out_channels))

    def sample(self, rng: np.random.Generator) -> Genotype:
        return self.genotype(tuple(OPS[int(k)] for k in rng.integers(0, len(OPS), size=len(EDGES))))

    def all_genotypes(self):
        """Every one of the 15,625 cells (not in NAS-Bench-201's index order; look cells
        up by arch string)."""
        import itertools

        for combo in itertools.product(range(len(OPS)), repeat=len(EDGES)):
            yield self.genotype(tuple(OPS[k] for k in combo))

    def encode(self, genotype: Genotype) -> GraphEncoding:
        self.check_genotype(genotype)
        ops = np.zeros((len(EDGES) + 2, len(NODE_TYPES)), dtype=np.float32)
        ops[0, 0] = 1
        ops[-1, -1] = 1
        for e, op in enumerate(genotype.spec):
            ops[e + 1, NODE_TYPES.index(op)] = 1
        return GraphEncoding(GRAPH_ADJACENCY.copy(), ops, NODE_TYPES)

    def arch_indices(self, genotype: Genotype) -> list[torch.Tensor]:
        self.check_genotype(genotype)
        return [torch.tensor([OPS.index(op) for op in genotype.spec], dtype=torch.long)]

    def decode(self, graph: GraphEncoding) -> Genotype:
        if graph.op_names != NODE_TYPES or graph.num_nodes != len(EDGES) + 2:
            raise ValueError("graph does not use the NAS-Bench-201 encoding")
        if not np.array_equal(graph.adjacency > 0.5, GRAPH_ADJACENCY > 0.5):
            raise ValueError("graph adjacency is not the NAS-Bench-201 cell DAG")
        types = graph.ops.argmax(axis=1)
        if types[0] != 0 or types[-1] != len(NODE_TYPES) - 1:
            raise ValueError("graph must start with the input node and end with the output node")
        inner = [NODE_TYPES[t] for t in types[1:-1]]
        if any(t in ("input", "output") for t in inner):
            raise ValueError("an edge node of the graph decodes to input/output instead of an operation")
        return self.genotype(tuple(inner))

    # -- latency --------------------------------------------------------------------
    def _stages(self, task: Any) -> list[tuple[int, int, int]]:
        """(channels, height, width) of the three stages of the retrained network."""
        size = tuple(task.io_spec().body_size) or tuple(task.io_spec().input_shape[1:])
        if len(size) != 2:
            raise IncompatibleError(f"search space nb201 needs 2-D images; task {task.name!r} gives body size {size}")
        c, (h, w) = self.config.retrain_C or self.config.C, size
        out = []
        for stage in range(3):
            if stage:
                c, h, w = 2 * c, -(-h // 2), -(-w // 2)
            out.append((c, h, w))
        return out

    def _fixed_ops(self, task: Any) -> list[LatencyOp]:
        stages = self._stages(task)
        shape = tuple(int(s) for s in task.io_spec().input_shape)
        c0 = stages[0][0]
        ops = [LatencyOp(f"stem:{'x'.join(map(str, shape))}>{c0}", task.make_stem(c0), shape)]
        for (c, h, w), (c2, _, _) in zip(stages[:-1], stages[1:], strict=True):
            ops.append(LatencyOp(f"reduce:{c}>{c2}:{h}x{w}", ResBlock(c, c2), (c, h, w)))
        c, h, w = stages[-1]
        ops.append(LatencyOp(f"lastact:{c}:{h}x{w}", nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()), (c, h, w)))
        ops.append(LatencyOp(f"head:{c}:{h}x{w}", task.make_head(c), (c, h, w)))
        return ops

    @staticmethod
    def _edge_keys(op: str, c: int, h: int, w: int) -> list[str]:
        """For the expected latency (linear in the edge weights): a non-zero edge costs
        its op and one addition into its node (one addition more per node than the
        exact :meth:`genotype_ops`)."""
        return [] if op == "none" else [f"{op}:c{c}:{h}x{w}", f"add:c{c}:{h}x{w}"]

    def latency_ops(self, task: Any) -> list[LatencyOp]:
        ops = self._fixed_ops(task)
        for c, h, w in self._stages(task):
            ops.append(LatencyOp(f"add:c{c}:{h}x{w}", _Add(), (c, h, w)))
            ops.append(LatencyOp(f"zeros:c{c}:{h}x{w}", _Zeros(), (c, h, w)))
            ops += [LatencyOp(f"{op}:c{c}:{h}x{w}", make_op(op, c), (c, h, w)) for op in OPS if op != "none"]
        return ops

    def genotype_ops(self, genotype: Genotype, task: Any, optimized_graph: bool = False) -> list[str]:
        """Exact: each non-zero edge's op, one addition per extra input of a node, and
        a zero tensor for a node without inputs (nodes that never reach the output are
        not built, see :func:`effective_ops`).

        ``optimized_graph`` (ONNX Runtime's optimiser): nodes that do not depend on the
        cell input (:func:`input_nodes`) are constants, so their zero tensors and the
        operations on them cost nothing; an addition stays wherever a constant term
        meets an input-dependent one (only a leading run of constant terms folds into
        one). A cell whose output is constant makes the whole network's output
        constant: nothing runs at all (the graph becomes one initializer). Two
        poolings of the same node are one (common-subexpression elimination)."""
        self.check_genotype(genotype)
        n = self.config.retrain_N or self.config.N
        ops = effective_ops(genotype.spec)
        live_nodes_ = live_nodes(genotype.spec)
        dep = input_nodes(genotype.spec) if optimized_graph else set(range(4))
        if optimized_graph and 3 not in dep:
            return []
        keys = [op.key for op in self._fixed_ops(task)]
        for c, h, w in self._stages(task):
            cell: list[str] = []
            pooled: set[int] = set()
            for j in range(1, 4):
                if j not in live_nodes_ or j not in dep:
                    continue
                terms = [i for (t, i), op in zip(EDGES, ops, strict=True) if t == j and op != "none"]
                for (t, i), op in zip(EDGES, ops, strict=True):
                    if t != j or op == "none" or i not in dep:
                        continue
                    if optimized_graph and op == "avg_pool_3x3":
                        if i in pooled:  # the same pooling of the same node: computed once
                            continue
                        pooled.add(i)
                    cell.append(f"{op}:c{c}:{h}x{w}")
                if not terms:
                    cell.append(f"zeros:c{c}:{h}x{w}")
                    continue
                lead = next((k for k, i in enumerate(terms) if i in dep), len(terms))  # leading constants
                cell += [f"add:c{c}:{h}x{w}"] * (len(terms) - 1 - max(lead - 1, 0))
            keys += n * cell
        return keys

    def arch_op_keys(self, supernet: Network, task: Any):
        n = self.config.retrain_N or self.config.N
        stages = self._stages(task)
        per_edge = [[[k for c, h, w in stages for k in n * self._edge_keys(op, c, h, w)] for op in OPS] for _ in EDGES]
        return [op.key for op in self._fixed_ops(task)], [per_edge]
