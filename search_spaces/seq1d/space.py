"""The ``seq1d`` cell search space for sequences (text embeddings, audio frames,
signals).

Macro skeleton, on ``(N, C, L)``: ``stages`` stages of ``N`` cells; between stages a
residual block halves ``L`` and doubles the width; then BN-ReLU. The task supplies
the stem before it (embedding, feature convolution) and the head after it (pooling
over ``L``, classifier). One set of architecture logits (6 edges x 10 operations) is
shared by all cells, so the search space has 10^6 cells. The genotype prints as an
arch string in the NAS-Bench-201 style, e.g.
``|sep_conv_5~0|+|skip_connect~0|dil_conv_3~1|+|none~0|self_attn~1|sep_conv_3~2|``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from dnas_core import (
    ComponentConfig,
    Genotype,
    GraphEncoding,
    IncompatibleError,
    MixWeights,
    Network,
    SearchSpace,
    Supernet,
)
from dnas_core.cells import cell_string, op_on_node_adjacency, parse_cell_string

from .ops import EDGES, OPS, InferCell, ReduceBlock, SearchCell

#: Node types of the graph encoding: the input, the operations, the output.
NODE_TYPES: tuple[str, ...] = ("input", *OPS, "output")


def arch_string(ops: tuple[str, ...] | list[str]) -> str:
    """``('op', ...)`` -> ``|op~0|+|op~0|op~1|+|...|``."""
    return cell_string(ops)


def parse_arch_string(text: str) -> tuple[str, ...]:
    """Inverse of :func:`arch_string`; ``ValueError`` on anything else."""
    return parse_cell_string(text, OPS, what="seq1d arch")


#: Fixed DAG of the op-on-node encoding: input, one node per edge, output.
GRAPH_ADJACENCY = op_on_node_adjacency(EDGES, output_node=3)


def edit_distance(a: Genotype, b: Genotype) -> int:
    """Edges whose operation differs (the edit distance between two cells of the
    fixed DAG: only substitutions are possible)."""
    return sum(x != y for x, y in zip(a.spec, b.spec, strict=True))


class Seq1DConfig(ComponentConfig):
    C: int = Field(16, ge=2, description="width of the first stage")
    N: int = Field(1, ge=1, description="cells per stage")
    stages: int = Field(2, ge=1, le=4, description="stages; each after the first halves L and doubles the width")
    retrain_C: Optional[int] = Field(None, ge=2, description="width of the retrained network (default: C)")
    retrain_N: Optional[int] = Field(None, ge=1, description="cells per stage when retraining (default: N)")
    heads: int = Field(2, ge=1, description="attention heads of self_attn (must divide every stage's width)")
    init_scale: float = Field(1e-3, gt=0, description="std of the initial architecture logits")

    @model_validator(mode="after")
    def _heads_divide(self) -> "Seq1DConfig":
        for name in ("C", "retrain_C"):
            c = getattr(self, name)
            if c is not None and c % self.heads:
                raise ValueError(f"{name}={c} is not divisible by heads={self.heads}")
        return self


def _stage_layers(c: int, n: int, stages: int, make_cell) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for stage in range(stages):
        if stage:
            layers.append(ReduceBlock(c, 2 * c))
            c *= 2
        layers += [make_cell(c) for _ in range(n)]
    return layers, c


class Seq1DBody(Supernet):
    """The supernet body: search cells sharing one (6, 10) logit tensor."""

    zero_op = "none"

    def __init__(self, C: int, N: int, stages: int, heads: int, init_scale: float = 1e-3):
        super().__init__()
        self.alpha = nn.Parameter(init_scale * torch.randn(len(EDGES), len(OPS)))
        layers, c = _stage_layers(C, N, stages, lambda c: SearchCell(c, heads))
        self.layers = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm1d(c), nn.ReLU())
        self.out_channels = c

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def arch_labels(self):
        return [("cell", [f"{t}<-{i}" for t, i in EDGES], list(OPS))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix: MixWeights = self.weight_fn(self.alpha)
        for layer in self.layers:
            x = layer(x, mix) if isinstance(layer, SearchCell) else layer(x)
        return self.lastact(x)


class Seq1DNet(nn.Module):
    """The discrete body for one genotype."""

    def __init__(self, ops: tuple[str, ...], C: int, N: int, stages: int, heads: int):
        super().__init__()
        layers, c = _stage_layers(C, N, stages, lambda c: InferCell(ops, c, heads))
        self.layers = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm1d(c), nn.ReLU())
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lastact(self.layers(x))


class Seq1DSpace(SearchSpace):
    """1-D cell space: 10 operations (separable and dilated convolutions, pooling,
    skip, zero, self-attention) on the 6 edges of a 4-node cell."""

    name = "seq1d"
    description = "1-D cell space for sequences: sep/dilated convs, pooling, self-attention, skip, zero"
    Config = Seq1DConfig
    modalities = frozenset({"sequence"})

    def build_supernet(self, task: Any, **options: Any) -> Network:
        if options:
            raise IncompatibleError(f"search space seq1d does not support the supernet options {sorted(options)}")
        cfg = self.config
        body = Seq1DBody(cfg.C, cfg.N, cfg.stages, cfg.heads, cfg.init_scale)
        return Network(task.make_stem(cfg.C), body, task.make_head(body.out_channels))

    def derive(self, supernet: Network) -> Genotype:
        alpha = supernet.body.alpha.detach()
        return self.genotype(tuple(OPS[int(k)] for k in alpha.argmax(dim=-1)))

    def genotype(self, ops: tuple[str, ...]) -> Genotype:
        ops = tuple(ops)
        if len(ops) != len(EDGES) or any(o not in OPS for o in ops):
            raise ValueError(f"a seq1d genotype is {len(EDGES)} ops from {OPS}, got {ops}")
        return Genotype(self.name, ops, text=arch_string(ops))

    def from_string(self, text: str) -> Genotype:
        return self.genotype(parse_arch_string(text))

    def check_genotype(self, genotype: Genotype) -> None:
        super().check_genotype(genotype)
        self.genotype(tuple(genotype.spec))

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        cfg = self.config
        C, N = cfg.retrain_C or cfg.C, cfg.retrain_N or cfg.N
        body = Seq1DNet(tuple(genotype.spec), C, N, cfg.stages, cfg.heads)
        return Network(task.make_stem(C), body, task.make_head(body.out_channels))

    def sample(self, rng: np.random.Generator) -> Genotype:
        return self.genotype(tuple(OPS[int(k)] for k in rng.integers(0, len(OPS), size=len(EDGES))))

    def encode(self, genotype: Genotype) -> GraphEncoding:
        self.check_genotype(genotype)
        ops = np.zeros((len(EDGES) + 2, len(NODE_TYPES)), dtype=np.float32)
        ops[0, 0] = 1
        ops[-1, -1] = 1
        for e, op in enumerate(genotype.spec):
            ops[e + 1, NODE_TYPES.index(op)] = 1
        return GraphEncoding(GRAPH_ADJACENCY.copy(), ops, NODE_TYPES)

    def decode(self, graph: GraphEncoding) -> Genotype:
        if tuple(graph.op_names) != NODE_TYPES or graph.num_nodes != len(EDGES) + 2:
            raise ValueError("graph does not use the seq1d encoding")
        if not np.array_equal(graph.adjacency > 0.5, GRAPH_ADJACENCY > 0.5):
            raise ValueError("graph adjacency is not the seq1d cell DAG")
        types = graph.ops.argmax(axis=1)
        if types[0] != 0 or types[-1] != len(NODE_TYPES) - 1:
            raise ValueError("graph must start with the input node and end with the output node")
        inner = [NODE_TYPES[t] for t in types[1:-1]]
        if any(t in ("input", "output") for t in inner):
            raise ValueError("an edge node of the graph decodes to input/output instead of an operation")
        return self.genotype(tuple(inner))
