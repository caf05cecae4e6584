"""The tabular MLP search space.

An architecture is a stack of 1..``max_depth`` MLP blocks after the task's stem; each
block is ``Linear(width) -> normalisation -> activation`` with an optional residual
connection around it. Per block the space chooses

* the width (``widths``, e.g. 64 / 128 / 256),
* the activation (``relu``, ``gelu``, ``silu``, ``tanh``),
* the normalisation (``none``, ``batchnorm``, ``layernorm``),
* the skip (``none`` or ``residual``; across a width change the residual goes through
  a bias-free linear projection),

and the depth. The supernet relaxes every choice (in the spirit of FBNetV2 for the
widths): each block computes at the largest width and multiplies by a softmax mixture
of channel masks, the activations and normalisations are softmax-weighted sums, the
residual is scaled by its softmax weight, and the body output is a softmax mixture
of the outputs after 1..max_depth blocks. ``derive`` takes the argmax of each.

Genotype spec: ``{"blocks": [[width, activation, norm, skip], ...]}`` (one entry per
block, ``skip`` is ``"none"`` / ``"residual"``); text form
``"128-relu-batchnorm-none|64-gelu-none-residual"``.

Graph encoding (fixed size, so generators see one shape): node 0 the input, then per
possible block three nodes (width, norm, activation; ``unused`` for blocks beyond the
depth), then the output node. Chain edges join consecutive nodes; a residual block
adds an edge from its input node to the node after its activation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from dnas_core import ComponentConfig, Genotype, GraphEncoding, IncompatibleError, MixWeights, Network, SearchSpace, Supernet

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
NORMS = ("none", "batchnorm", "layernorm")
SKIPS = ("none", "residual")


def make_norm(kind: str, width: int) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm1d(width)
    if kind == "layernorm":
        return nn.LayerNorm(width)
    return nn.Identity()


class TabularConfig(ComponentConfig):
    widths: list[int] = Field([64, 128, 256], min_length=1, description="width choices of a block")
    max_depth: int = Field(3, ge=1, le=8, description="most blocks an architecture has")
    activations: list[str] = Field(list(ACTIVATIONS), min_length=1, description=f"activation choices, from {list(ACTIVATIONS)}")
    norms: list[str] = Field(list(NORMS), min_length=1, description=f"normalisation choices, from {list(NORMS)}")
    stem_width: int = Field(64, ge=1, description="width of the task stem's output (the first block's input)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after every block (not searched)")
    init_scale: float = Field(1e-3, gt=0, description="std of the initial architecture logits")
    baseline_width: int | None = Field(None, ge=1, description="width of the MLP baseline (default: the median width choice)")
    baseline_depth: int | None = Field(None, ge=1, description="blocks of the MLP baseline (default: 2, at most max_depth)")

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v) or len(set(v)) != len(v):
            raise ValueError("widths must be distinct positive integers")
        return sorted(v)

    @field_validator("activations")
    @classmethod
    def _acts(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ACTIVATIONS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"activations must be distinct names from {list(ACTIVATIONS)}, got {v}")
        return v

    @field_validator("norms")
    @classmethod
    def _norms(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in NORMS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"norms must be distinct names from {list(NORMS)}, got {v}")
        return v


# --------------------------------------------------------------------------------------
# Supernet
# --------------------------------------------------------------------------------------


def _mix(mix: MixWeights, row: int) -> tuple[torch.Tensor, int | None]:
    """Weights of one row and, for hard (GDAS-style) sampling, the chosen index."""
    return mix.weights[row], (None if mix.index is None else int(mix.index[row]))


class SearchBlock(nn.Module):
    """One block with every choice: masked max-width linear, mixed norm, mixed
    activation, weighted residual."""

    def __init__(self, c_in: int, widths: list[int], activations: list[str], norms: list[str], dropout: float):
        super().__init__()
        wmax = max(widths)
        self.linear = nn.Linear(c_in, wmax)
        self.proj = nn.Linear(c_in, wmax, bias=False) if c_in != wmax else nn.Identity()
        masks = torch.stack([(torch.arange(wmax) < w).float() for w in widths])
        self.register_buffer("masks", masks)
        self.norms = nn.ModuleList(make_norm(n, wmax) for n in norms)
        self.acts = nn.ModuleList(ACTIVATIONS[a]() for a in activations)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    @staticmethod
    def _weighted(mods: nn.ModuleList, x: torch.Tensor, w: torch.Tensor, idx: int | None) -> torch.Tensor:
        if idx is not None:
            return w[idx] * mods[idx](x)
        return sum(w[k] * m(x) for k, m in enumerate(mods))

    def forward(self, x: torch.Tensor, mix: dict[str, MixWeights], b: int) -> torch.Tensor:
        ww, wi = _mix(mix["width"], b)
        mask = ww[wi] * self.masks[wi] if wi is not None else ww @ self.masks
        h = self.linear(x) * mask
        nw, ni = _mix(mix["norm"], b)
        h = self._weighted(self.norms, h, nw, ni)
        aw, ai = _mix(mix["activation"], b)
        h = self._weighted(self.acts, h, aw, ai) * mask
        sw, si = _mix(mix["skip"], b)
        res = self.proj(x) * mask
        if si is None:
            h = h + sw[1] * res
        else:  # sampled: the residual, or "none" (a zero branch, as the zero op of cell spaces)
            h = h + sw[si] * (res if si == 1 else torch.zeros_like(res))
        return self.drop(h)


class TabularSupernet(Supernet):
    def __init__(self, cfg: TabularConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.max_depth
        s = cfg.init_scale
        self.alpha_width = nn.Parameter(s * torch.randn(d, len(cfg.widths)))
        self.alpha_activation = nn.Parameter(s * torch.randn(d, len(cfg.activations)))
        self.alpha_norm = nn.Parameter(s * torch.randn(d, len(cfg.norms)))
        self.alpha_skip = nn.Parameter(s * torch.randn(d, len(SKIPS)))
        self.alpha_depth = nn.Parameter(s * torch.randn(1, d))
        wmax = max(cfg.widths)
        self.blocks = nn.ModuleList(
            SearchBlock(cfg.stem_width if b == 0 else wmax, cfg.widths, cfg.activations, cfg.norms, cfg.dropout)
            for b in range(d)
        )
        self.out_channels = wmax

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_width, self.alpha_activation, self.alpha_norm, self.alpha_skip, self.alpha_depth]

    def arch_labels(self):
        cfg = self.cfg
        rows = [f"block{b}" for b in range(cfg.max_depth)]
        return [
            ("width", rows, [str(w) for w in cfg.widths]),
            ("activation", rows, list(cfg.activations)),
            ("norm", rows, list(cfg.norms)),
            ("skip", rows, list(SKIPS)),
            ("depth", ["depth"], [str(d) for d in range(1, cfg.max_depth + 1)]),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = {name: self.weight_fn(p) for (name, _, _), p in zip(self.arch_labels(), self.arch_parameters(), strict=True)}
        dw, di = _mix(mix["depth"], 0)
        out = 0
        for b, block in enumerate(self.blocks):
            x = block(x, mix, b)
            if di is None:
                out = out + dw[b] * x
            elif di == b:
                out = dw[b] * x
                break
        return out


# --------------------------------------------------------------------------------------
# Discrete network
# --------------------------------------------------------------------------------------


class MLPBlock(nn.Module):
    def __init__(self, c_in: int, width: int, activation: str, norm: str, skip: str, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(c_in, width), make_norm(norm, width), ACTIVATIONS[activation]())
        self.skip = None
        if skip == "residual":
            self.skip = nn.Identity() if c_in == width else nn.Linear(c_in, width, bias=False)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if self.skip is not None:
            h = h + self.skip(x)
        return self.drop(h)


class MLPBody(nn.Sequential):
    def __init__(self, blocks: list[tuple], c_in: int, dropout: float):
        layers, c = [], c_in
        for width, act, norm, skip in blocks:
            layers.append(MLPBlock(c, int(width), act, norm, skip, dropout))
            c = int(width)
        super().__init__(*layers)
        self.out_channels = c


# --------------------------------------------------------------------------------------
# The space
# --------------------------------------------------------------------------------------


class TabularSpace(SearchSpace):
    """MLP blocks for tabular data: width, depth, activation, normalisation, skip."""

    name = "tabular_mlp"
    description = "MLP blocks for tabular data (width, depth, activation, norm, skip); MLP baseline"
    Config = TabularConfig
    modalities = frozenset({"tabular"})

    # -- genotypes --------------------------------------------------------------------
    def genotype(self, blocks: list) -> Genotype:
        cfg = self.config
        blocks = tuple(tuple(b) for b in blocks)
        if not 1 <= len(blocks) <= cfg.max_depth:
            raise ValueError(f"an architecture of tabular_mlp has 1..{cfg.max_depth} blocks, got {len(blocks)}")
        out = []
        for i, b in enumerate(blocks):
            if len(b) != 4:
                raise ValueError(f"block {i} must be [width, activation, norm, skip], got {list(b)}")
            width, act, norm, skip = b
            if not isinstance(width, (int, np.integer)) or int(width) not in cfg.widths:
                raise ValueError(f"block {i}: width {width!r} is not one of {cfg.widths}")
            if act not in cfg.activations:
                raise ValueError(f"block {i}: activation {act!r} is not one of {cfg.activations}")
            if norm not in cfg.norms:
                raise ValueError(f"block {i}: norm {norm!r} is not one of {cfg.norms}")
            if skip not in SKIPS:
                raise ValueError(f"block {i}: skip {skip!r} is not one of {list(SKIPS)}")
            out.append((int(width), str(act), str(norm), str(skip)))
        spec = {"blocks": tuple(out)}
        return Genotype(self.name, spec, text="|".join("-".join(map(str, b)) for b in out))

    def from_string(self, text: str) -> Genotype:
        blocks = []
        for part in text.strip().split("|"):
            fields = part.split("-")
            if len(fields) != 4:
                raise ValueError(f"tabular_mlp block {part!r} must look like WIDTH-ACTIVATION-NORM-SKIP")
            try:
                width = int(fields[0])
            except ValueError:
                raise ValueError(f"tabular_mlp block {part!r}: width {fields[0]!r} is not an integer") from None
            blocks.append([width, *fields[1:]])
        return self.genotype(blocks)

    def _spec_blocks(self, genotype: Genotype) -> list:
        spec = genotype.spec
        if not isinstance(spec, dict) or "blocks" not in spec:
            raise ValueError(f"a tabular_mlp spec is {{'blocks': [...]}}, got {spec!r}")
        return list(spec["blocks"])

    def check_genotype(self, genotype: Genotype) -> None:
        super().check_genotype(genotype)
        try:
            self.genotype(self._spec_blocks(genotype))
        except ValueError as exc:
            raise IncompatibleError(f"genotype {genotype} is not in this tabular_mlp space: {exc}") from None

    def sample(self, rng: np.random.Generator) -> Genotype:
        cfg = self.config
        depth = int(rng.integers(1, cfg.max_depth + 1))
        pick = lambda seq: seq[int(rng.integers(0, len(seq)))]  # noqa: E731
        return self.genotype([[pick(cfg.widths), pick(cfg.activations), pick(cfg.norms), pick(SKIPS)] for _ in range(depth)])

    def baseline(self, task: Any) -> Genotype:
        """A plain MLP: ``baseline_depth`` (2) blocks of the median width, ReLU,
        batch norm, no skip connections."""
        cfg = self.config
        width = cfg.baseline_width or cfg.widths[len(cfg.widths) // 2]
        if width not in cfg.widths:
            raise IncompatibleError(f"space.baseline_width {width} is not one of the width choices {cfg.widths}")
        depth = min(cfg.baseline_depth or 2, cfg.max_depth)
        act = "relu" if "relu" in cfg.activations else cfg.activations[0]
        norm = "batchnorm" if "batchnorm" in cfg.norms else cfg.norms[0]
        return self.genotype([[width, act, norm, "none"]] * depth)

    # -- networks ---------------------------------------------------------------------
    def build_supernet(self, task: Any, **options: Any) -> Network:
        if options:
            raise IncompatibleError(f"search space tabular_mlp does not support the supernet options {sorted(options)}")
        self.check_task(task)
        body = TabularSupernet(self.config)
        return Network(task.make_stem(self.config.stem_width), body, task.make_head(body.out_channels))

    def derive(self, supernet: Network) -> Genotype:
        body: TabularSupernet = supernet.body
        cfg = self.config
        depth = int(body.alpha_depth.detach()[0].argmax()) + 1
        blocks = []
        for b in range(depth):
            blocks.append([
                cfg.widths[int(body.alpha_width[b].argmax())],
                cfg.activations[int(body.alpha_activation[b].argmax())],
                cfg.norms[int(body.alpha_norm[b].argmax())],
                SKIPS[int(body.alpha_skip[b].argmax())],
            ])
        return self.genotype(blocks)

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        cfg = self.config
        body = MLPBody(self._spec_blocks(genotype), cfg.stem_width, cfg.dropout)
        return Network(task.make_stem(cfg.stem_width), body, task.make_head(body.out_channels))

    # -- graph encoding ---------------------------------------------------------------
    def node_types(self) -> tuple[str, ...]:
        cfg = self.config
        return ("input", *(f"width_{w}" for w in cfg.widths), *(f"norm_{n}" for n in cfg.norms),
                *(f"act_{a}" for a in cfg.activations), "unused", "output")

    def encode(self, genotype: Genotype) -> GraphEncoding:
        self.check_genotype(genotype)
        cfg = self.config
        types = self.node_types()
        blocks = self._spec_blocks(genotype)
        n = 2 + 3 * cfg.max_depth
        adj = np.zeros((n, n), dtype=np.float32)
        ops = np.zeros((n, len(types)), dtype=np.float32)
        ops[0, 0] = ops[-1, -1] = 1
        for i in range(n - 1):
            adj[i, i + 1] = 1
        for b in range(cfg.max_depth):
            base = 1 + 3 * b
            if b < len(blocks):
                width, act, norm, skip = blocks[b]
                names = (f"width_{width}", f"norm_{norm}", f"act_{act}")
                if skip == "residual":
                    adj[base - 1, base + 3] = 1
            else:
                names = ("unused",) * 3
            for j, name in enumerate(names):
                ops[base + j, types.index(name)] = 1
        return GraphEncoding(adj, ops, types)

    def decode(self, graph: GraphEncoding) -> Genotype:
        cfg = self.config
        types = self.node_types()
        n = 2 + 3 * cfg.max_depth
        if tuple(graph.op_names) != types or graph.num_nodes != n:
            raise ValueError("graph does not use this tabular_mlp space's encoding")
        names = [types[k] for k in graph.ops.argmax(axis=1)]
        adj = graph.adjacency > 0.5
        if names[0] != "input" or names[-1] != "output" or not all(adj[i, i + 1] for i in range(n - 1)):
            raise ValueError("graph must be the input -> block nodes -> output chain")
        blocks, ended = [], False
        for b in range(cfg.max_depth):
            base = 1 + 3 * b
            w, nm, act = names[base : base + 3]
            if (w, nm, act) == ("unused",) * 3:
                ended = True
                continue
            if ended:
                raise ValueError(f"block {b} follows an unused block")
            if not (w.startswith("width_") and nm.startswith("norm_") and act.startswith("act_")):
                raise ValueError(f"block {b} nodes {w, nm, act} are not (width, norm, activation)")
            skip = "residual" if adj[base - 1, base + 3] else "none"
            blocks.append([int(w[len("width_"):]), act[len("act_"):], nm[len("norm_"):], skip])
        extra = adj.copy()
        for i in range(n - 1):
            extra[i, i + 1] = False
        for b, blk in enumerate(blocks):
            if blk[3] == "residual":
                extra[3 * b, 3 * b + 4] = False
        if extra.any():
            raise ValueError("graph has edges that are neither chain edges nor block residuals")
        return self.genotype(blocks)
