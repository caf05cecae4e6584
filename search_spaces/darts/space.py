"""The DARTS search space (Liu et al., 2019, "DARTS: Differentiable Architecture Search").

A network is a stack of ``layers`` cells; the cells at 1/3 and 2/3 of the depth are
*reduction* cells (stride 2, twice the channels), the others *normal* cells. A cell
has two inputs (the outputs of the two previous cells, ``c_{k-2}`` and ``c_{k-1}``),
four intermediate nodes and an output that concatenates the four nodes. In the
supernet every node sums all eight operations on every edge from the two inputs and
the earlier nodes (14 edges); all normal cells share one (14, 8) logit tensor and all
reduction cells another. A derived cell keeps, for each node, the two incoming edges
whose strongest operation other than ``none`` is strongest, with that operation.

The genotype prints in DARTS's own form::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

where ``(op, j)`` is an incoming edge of node ``2 + pair index // 2`` from state ``j``
(0 = c_{k-2}, 1 = c_{k-1}, 2.. = earlier nodes). The task supplies the stem (with
``stem_multiplier * C`` channels) and the head.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, Genotype, GraphEncoding, IncompatibleError, MixWeights, Network, SearchSpace, Supernet

from .ops import EDGES, I_NONE, OPS, STEPS, FactorizedReduce, ReLUConvBN, make_op
from .supernet import SearchCell

#: The operations a derived cell may use (every DARTS op except ``none``).
CELL_OPS: tuple[str, ...] = OPS[1:]
CONCAT: tuple[int, ...] = tuple(range(2, 2 + STEPS))
CELL_TYPES: tuple[str, str] = ("normal", "reduce")

#: Node types of the graph encoding (see :meth:`DARTSSpace.encode`).
NODE_TYPES: tuple[str, ...] = ("input", *CELL_OPS, "add", "output")
#: Per cell: two inputs, then (op, op, add) for each node, then the output.
CELL_GRAPH_NODES = 2 + 3 * STEPS + 1


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Indices of the reduction cells in a stack of ``layers`` cells (DARTS's rule)."""
    if layers < 3:
        return ()
    return (layers // 3, 2 * layers // 3)


def format_genotype(spec: dict[str, Any]) -> str:
    def cell(pairs) -> str:
        return "[" + ", ".join(f"({op!r}, {j})" for op, j in pairs) + "]"

    return (
        f"Genotype(normal={cell(spec['normal'])}, normal_concat={list(spec['normal_concat'])}, "
        f"reduce={cell(spec['reduce'])}, reduce_concat={list(spec['reduce_concat'])})"
    )


def parse_genotype(text: str) -> dict[str, Any]:
    """Inverse of :func:`format_genotype`; also reads DARTS's ``range(2, 6)`` concat."""
    m = re.fullmatch(
        r"\s*Genotype\(\s*normal\s*=\s*(\[.*?\])\s*,\s*normal_concat\s*=\s*(\[.*?\]|range\(\s*2\s*,\s*6\s*\))\s*,"
        r"\s*reduce\s*=\s*(\[.*?\])\s*,\s*reduce_concat\s*=\s*(\[.*?\]|range\(\s*2\s*,\s*6\s*\))\s*\)\s*",
        text,
        flags=re.S,
    )
    if not m:
        raise ValueError(f"not a DARTS genotype string (Genotype(normal=[...], normal_concat=[...], ...)): {text[:80]!r}")

    def concat(s: str) -> list[int]:
        return list(range(2, 6)) if s.startswith("range") else ast.literal_eval(s)

    return {"normal": ast.literal_eval(m.group(1)), "normal_concat": concat(m.group(2)),
            "reduce": ast.literal_eval(m.group(3)), "reduce_concat": concat(m.group(4))}


def derive_cell(weights: torch.Tensor) -> tuple[tuple[str, int], ...]:
    """DARTS's ``_parse``: per node, the two inputs whose best non-``none`` weight is
    largest, each with that operation. ``weights`` is (14, 8) (softmax of the logits)."""
    w = weights.detach().float().cpu().numpy()
    gene: list[tuple[str, int]] = []
    start = 0
    for n in range(STEPS):
        end = start + n + 2
        rows = w[start:end]
        strength = [max(rows[j][k] for k in range(len(OPS)) if k != I_NONE) for j in range(n + 2)]
        inputs = sorted(range(n + 2), key=lambda j: -strength[j])[:2]
        for j in inputs:
            k_best = max((k for k in range(len(OPS)) if k != I_NONE), key=lambda k: rows[j][k])
            gene.append((OPS[k_best], j))
        start = end
    return tuple(gene)


class DARTSConfig(ComponentConfig):
    C: int = Field(16, ge=2, description="initial channels of the supernet (DARTS search: 16)")
    layers: int = Field(8, ge=1, description="cells in the supernet (DARTS search: 8)")
    stem_multiplier: int = Field(3, ge=1, description="the stem outputs stem_multiplier * C channels")
    retrain_C: Optional[int] = Field(None, ge=2, description="initial channels of the retrained network (DARTS CIFAR-10: 36; default: C)")
    retrain_layers: Optional[int] = Field(None, ge=1, description="cells of the retrained network (DARTS CIFAR-10: 20; default: layers)")
    init_scale: float = Field(1e-3, gt=0, description="std of the initial architecture logits")


def _cell_channels(C: int, layers: int, stem_multiplier: int):
    """Yield (c_pp, c_p, c, reduction, reduction_prev) per cell and finally the output width."""
    c_curr = stem_multiplier * C
    c_pp, c_p, c_curr = c_curr, c_curr, C
    reductions = reduction_layers(layers)
    reduction_prev = False
    plan = []
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            c_curr *= 2
        plan.append((c_pp, c_p, c_curr, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, STEPS * c_curr
    return plan, c_p


class DARTSBody(Supernet):
    """The supernet body: ``layers`` search cells; normal cells share ``alpha_normal``,
    reduction cells ``alpha_reduce`` (each 14 edges x 8 operations)."""

    zero_op = "none"
    derives_zero_op = False  # derive_cell keeps each node's two strongest non-zero inputs

    def __init__(self, C: int, layers: int, stem_multiplier: int = 3, init_scale: float = 1e-3):
        super().__init__()
        self.alpha_normal = nn.Parameter(init_scale * torch.randn(len(EDGES), len(OPS)))
        self.alpha_reduce = nn.Parameter(init_scale * torch.randn(len(EDGES), len(OPS)))
        plan, self.out_channels = _cell_channels(C, layers, stem_multiplier)
        self.cells = nn.ModuleList([SearchCell(*p) for p in plan])

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def arch_labels(self):
        rows = [f"{n + 2}<-{i}" for n, i in EDGES]
        return [("normal", rows, list(OPS)), ("reduce", rows, list(OPS))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixes: list[MixWeights] = [self.weight_fn(self.alpha_normal), self.weight_fn(self.alpha_reduce)]
        # hard sampling: read the chosen ops to the host once per forward, not once per cell
        index = [m.index.tolist() if m.index is not None else None for m in mixes]
        s0 = s1 = x
        for cell in self.cells:
            t = int(cell.reduction)
            s0, s1 = s1, cell(s0, s1, mixes[t], index[t])
        return s1


class EvalCell(nn.Module):
    """A derived DARTS cell (DARTS ``model.py`` ``Cell``, without drop-path)."""

    def __init__(self, pairs, concat, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.inputs = tuple(j for _, j in pairs)
        self.concat = tuple(concat)
        self.ops = nn.ModuleList(
            [make_op(op, c, 2 if reduction and j < 2 else 1) for op, j in pairs]
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for n in range(STEPS):
            a, b = 2 * n, 2 * n + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class DARTSNet(nn.Module):
    """The discrete body of one genotype at any width and depth."""

    def __init__(self, spec: dict[str, Any], C: int, layers: int, stem_multiplier: int = 3):
        super().__init__()
        plan, self.out_channels = _cell_channels(C, layers, stem_multiplier)
        self.cells = nn.ModuleList()
        for c_pp, c_p, c, reduction, reduction_prev in plan:
            kind = "reduce" if reduction else "normal"
            self.cells.append(EvalCell(spec[kind], spec[f"{kind}_concat"], c_pp, c_p, c, reduction, reduction_prev))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = x
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1


class DARTSSpace(SearchSpace):
    """The DARTS cell space: normal and reduction cells, 4 nodes x 2 inputs, 8 ops."""

    name = "darts"
    description = "DARTS cell space (normal + reduction cells, 8 ops, 4 nodes x 2 inputs)"
    Config = DARTSConfig
    modalities = frozenset({"image"})

    # -- supernet --------------------------------------------------------------------
    def build_supernet(self, task: Any, **options: Any) -> Network:
        if options:
            raise IncompatibleError(f"search space darts does not support the supernet options {sorted(options)}")
        cfg = self.config
        body = DARTSBody(cfg.C, cfg.layers, cfg.stem_multiplier, cfg.init_scale)
        return Network(task.make_stem(cfg.stem_multiplier * cfg.C), body, task.make_head(body.out_channels))

    def derive(self, supernet: Network) -> Genotype:
        body: DARTSBody = supernet.body
        return self.genotype({
            "normal": derive_cell(torch.softmax(body.alpha_normal.detach(), dim=-1)),
            "normal_concat": CONCAT,
            "reduce": derive_cell(torch.softmax(body.alpha_reduce.detach(), dim=-1)),
            "reduce_concat": CONCAT,
        })

    # -- genotypes -------------------------------------------------------------------
    def genotype(self, spec: dict[str, Any]) -> Genotype:
        """Validate and canonicalise a spec ``{normal, normal_concat, reduce, reduce_concat}``:
        within a node the two inputs are ordered by input index (the cell is the same)."""
        if not isinstance(spec, dict) or set(spec) != {"normal", "normal_concat", "reduce", "reduce_concat"}:
            raise ValueError("a DARTS genotype needs exactly the keys normal, normal_concat, reduce, reduce_concat")
        canon: dict[str, Any] = {}
        for kind in CELL_TYPES:
            pairs = [tuple(p) for p in spec[kind]]
            if len(pairs) != 2 * STEPS:
                raise ValueError(f"genotype.{kind}: {2 * STEPS} (op, input) pairs expected, got {len(pairs)}")
            cell = []
            for n in range(STEPS):
                node = []
                for pair in pairs[2 * n : 2 * n + 2]:
                    if len(pair) != 2 or pair[0] not in CELL_OPS or not isinstance(pair[1], (int, np.integer)):
                        raise ValueError(f"genotype.{kind}: bad pair {pair!r}; ops are {CELL_OPS}")
                    if not 0 <= int(pair[1]) < n + 2:
                        raise ValueError(f"genotype.{kind}: node {n + 2} cannot take input {pair[1]} (0..{n + 1})")
                    node.append((str(pair[0]), int(pair[1])))
                if node[0][1] == node[1][1]:
                    raise ValueError(f"genotype.{kind}: node {n + 2} takes input {node[0][1]} twice")
                cell += sorted(node, key=lambda p: (p[1], p[0]))
            concat = tuple(int(i) for i in spec[f"{kind}_concat"])
            if concat != CONCAT:
                raise ValueError(f"genotype.{kind}_concat must be {list(CONCAT)}, got {list(concat)}")
            canon[kind] = tuple(cell)
            canon[f"{kind}_concat"] = concat
        return Genotype(self.name, canon, text=format_genotype(canon))

    def from_string(self, text: str) -> Genotype:
        return self.genotype(parse_genotype(text))

    def format(self, genotype: Genotype) -> str:
        return format_genotype(genotype.spec)

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        cfg = self.config
        C, layers = cfg.retrain_C or cfg.C, cfg.retrain_layers or cfg.layers
        body = DARTSNet(genotype.spec, C, layers, cfg.stem_multiplier)
        return Network(task.make_stem(cfg.stem_multiplier * C), body, task.make_head(body.out_channels))

    def sample(self, rng: np.random.Generator) -> Genotype:
        spec: dict[str, Any] = {}
        for kind in CELL_TYPES:
            pairs = []
            for n in range(STEPS):
                for j in sorted(rng.choice(n + 2, size=2, replace=False).tolist()):
                    pairs.append((CELL_OPS[int(rng.integers(len(CELL_OPS)))], int(j)))
            spec[kind] = pairs
            spec[f"{kind}_concat"] = CONCAT
        return self.genotype(spec)

    # -- graph encoding --------------------------------------------------------------
    def encode(self, genotype: Genotype) -> GraphEncoding:
        """Both cells as one DAG with operations on nodes: per cell, the two inputs, for
        each intermediate node two operation nodes and an ``add`` node, and an output
        node that concatenates the four ``add`` nodes; the normal cell's 15 nodes come
        first, then the reduction cell's."""
        self.check_genotype(genotype)
        total = 2 * CELL_GRAPH_NODES
        adj = np.zeros((total, total), dtype=np.float32)
        ops = np.zeros((total, len(NODE_TYPES)), dtype=np.float32)
        for c, kind in enumerate(CELL_TYPES):
            base = c * CELL_GRAPH_NODES
            ops[base, 0] = ops[base + 1, 0] = 1
            out = base + CELL_GRAPH_NODES - 1
            ops[out, NODE_TYPES.index("output")] = 1
            for n in range(STEPS):
                add = base + 4 + 3 * n
                ops[add, NODE_TYPES.index("add")] = 1
                adj[add, out] = 1
                for a in range(2):
                    op, j = genotype.spec[kind][2 * n + a]
                    node = base + 2 + 3 * n + a
                    ops[node, NODE_TYPES.index(op)] = 1
                    adj[_state_node(base, j), node] = 1
                    adj[node, add] = 1
        return GraphEncoding(adj, ops, NODE_TYPES)

    def decode(self, graph: GraphEncoding) -> Genotype:
        if graph.op_names != NODE_TYPES or graph.num_nodes != 2 * CELL_GRAPH_NODES:
            raise ValueError("graph does not use the DARTS encoding (30 nodes over NODE_TYPES)")
        adj = graph.adjacency > 0.5
        types = [NODE_TYPES[t] for t in graph.ops.argmax(axis=1)]
        spec: dict[str, Any] = {}
        for c, kind in enumerate(CELL_TYPES):
            base = c * CELL_GRAPH_NODES
            out = base + CELL_GRAPH_NODES - 1
            if types[base] != "input" or types[base + 1] != "input" or types[out] != "output":
                raise ValueError(f"{kind} cell: nodes {base}, {base + 1} must be inputs and {out} the output")
            pairs = []
            for n in range(STEPS):
                add = base + 4 + 3 * n
                if types[add] != "add" or not adj[add, out]:
                    raise ValueError(f"{kind} cell: node {add} must be an add node feeding the output")
                for a in range(2):
                    node = base + 2 + 3 * n + a
                    if types[node] not in CELL_OPS or not adj[node, add]:
                        raise ValueError(f"{kind} cell: node {node} must be an operation feeding node {add}")
                    sources = [j for j in range(n + 2) if adj[_state_node(base, j), node]]
                    if len(sources) != 1 or adj[:, node].sum() != 1:
                        raise ValueError(f"{kind} cell: operation node {node} needs exactly one valid input")
                    pairs.append((types[node], sources[0]))
            spec[kind] = pairs
            spec[f"{kind}_concat"] = CONCAT
        g = self.genotype(spec)
        if not np.array_equal(self.encode(g).adjacency > 0.5, adj):
            raise ValueError("graph has edges outside the DARTS cell structure")
        return g


def _state_node(base: int, j: int) -> int:
    """Graph node of cell state ``j`` (0, 1: inputs; 2..: the add node of node j-2)."""
    return base + j if j < 2 else base + 4 + 3 * (j - 2)
