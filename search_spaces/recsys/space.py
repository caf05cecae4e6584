"""Recommendation search space (``recsys``) and the NeuMF baseline (``neumf``).

``recsys``, in the spirit of AutoFIS (Liu et al., KDD 2020: learnable gates on feature
interactions) and NASRec (Zhang et al., WWW 2023: searched embedding sizes and
interaction blocks). An architecture chooses

* the embedding dimension of every field (``emb_dims`` choices, e.g. 8/16/32/64),
* which feature-interaction operators are on, and so their combination:

  - ``dot``: the inner product of every pair of fields (after a projection of each
    field to ``proj_dim``), as in factorisation machines;
  - ``hadamard``: the element-wise product of every pair of projected fields (GMF);
  - ``mlp``: an MLP tower over the concatenated embeddings (``mlp_layers``);
  - ``cross``: ``cross_layers`` layers of a Deep & Cross Network over the
    concatenated embeddings, ``x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l``;
  - ``linear``: the first-order term of a factorisation machine, one learned scalar
    per user and per item (zero-initialised): user activity and item popularity, which
    the interaction operators can only learn slowly through their small-initialised
    embeddings. Opt-in (not in the default ``ops``), as AutoFIS's FM base has it.

The body outputs the concatenation of the active operators' outputs; the task's head
(a linear layer to one logit) combines them, as NeuMF's output layer does.

Every operator's output goes through a batch norm without affine parameters
(``op_norm``, as AutoFIS does before its gates), in the supernet and in the derived
network alike. Without it the operators' outputs differ by orders of magnitude: with
NCF's 0.01-std embeddings the ``dot`` / ``hadamard`` products start near 1e-4 while the
``mlp`` and ``cross`` outputs are O(1), so the products hardly train (their gradient
is the product of two tiny factors) and their gates get almost no gradient, and a
derived network without the norm retrains a lone product slowly.

Supernet: every field is embedded at the largest dimension and multiplied by a
softmax mixture of channel masks (one logit row per field); the operators share one
softmax row (``alpha_ops``, shape ``(1, K)``) and each operator's normalised output
is scaled by its share. ``derive`` takes the argmax dimension of each field and every
operator whose share is at least the uniform ``1 / K``, i.e. every operator the search
did not demote (the winner always qualifies).

Why shares and not one (off, on) gate per operator: the task's head is a linear layer
right after the gates, so the gates' common level is redundant with the head's
weights (halving every gate and doubling the head computes the same function). Only
the gates' *relative* sizes are identifiable. With independent (off, on) softmaxes the
architecture step is free to move the common level, and it does: the validation loss
of a supernet that fits its training data rewards a lower "temperature", the step
lowers every gate, the weight step grows the head to compensate, and all operators
end below 0.5 (measured on MovieLens-100K: every "on" weight 0.003-0.014 after 3
epochs, seeds 0-2), so an absolute ``on > 0.5`` rule kept only the fallback argmax, decided by
noise. One softmax over the operators has no common level to drift.

Genotype spec ``{"emb_dims": [d_user, d_item], "ops": ["hadamard", "mlp"]}``; text
``emb=32,32;ops=hadamard+mlp``. Graph encoding: input -> one node per field (its
dimension) -> one node per operator (its name, or ``off``) -> output, fixed DAG.

``neumf`` is the hand-designed baseline of He et al., "Neural Collaborative
Filtering" (WWW 2017): separate GMF and MLP embeddings, a GMF branch (element-wise
product, ``factors`` dims) and an MLP tower (``mlp_layers``; its embeddings are
``mlp_layers[0] / 2`` wide per field), concatenated for the output layer. It is a space
with exactly one architecture: select it with ``strategy: {type: fixed}``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from dnas_core import ComponentConfig, Genotype, GraphEncoding, IncompatibleError, MixWeights, Network, SearchSpace, Supernet
from dnas_core.space import FixedArchitectureSpace

OPS = ("dot", "hadamard", "mlp", "cross", "linear")
#: The operators searched when the config names none (``linear`` is opt-in).
DEFAULT_OPS = ("dot", "hadamard", "mlp", "cross")


def _field_sizes(task: Any, num_fields: int, space: str) -> list[int]:
    spec = task.io_spec()
    sizes = spec.extra.get("field_sizes")
    if not sizes:
        raise IncompatibleError(f"search space {space!r} needs the task's io_spec().extra['field_sizes'] (task {task.name!r} has none)")
    if len(sizes) != num_fields:
        raise IncompatibleError(f"search space {space!r} is configured for {num_fields} fields, task {task.name!r} has {len(sizes)}")
    return [int(s) for s in sizes]


def _mlp(c_in: int, layers: list[int]) -> tuple[nn.Sequential, int]:
    mods, c = [], c_in
    for w in layers:
        mods += [nn.Linear(c, w), nn.ReLU()]
        c = w
    return nn.Sequential(*mods), c


class CrossNet(nn.Module):
    """Deep & Cross Network (Wang et al., 2017) cross layers."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.randn(dim) * dim ** -0.5) for _ in range(layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return x


def _embedding(n: int, d: int) -> nn.Embedding:
    e = nn.Embedding(n, d)
    nn.init.normal_(e.weight, std=0.01)  # as in NCF
    return e


class InteractionOps(nn.Module):
    """The operators over per-field embeddings ``embs`` (list of (N, d_f)) and, for
    ``linear``, the field indices. Only the operators in ``ops`` are built."""

    def __init__(self, dims: list[int], ops: list[str], proj_dim: int, mlp_layers: list[int], cross_layers: int,
                 field_sizes: list[int], norm: bool = False):
        super().__init__()
        self.ops = list(ops)
        self.pairs = list(itertools.combinations(range(len(dims)), 2))
        z = sum(dims)
        self.out_sizes: dict[str, int] = {}
        if "dot" in ops or "hadamard" in ops:
            self.proj = nn.ModuleList(nn.Linear(d, proj_dim, bias=False) for d in dims)
        if "dot" in ops:
            self.out_sizes["dot"] = len(self.pairs)
        if "hadamard" in ops:
            self.out_sizes["hadamard"] = proj_dim * len(self.pairs)
        if "mlp" in ops:
            self.mlp, self.out_sizes["mlp"] = _mlp(z, mlp_layers)
        if "cross" in ops:
            self.cross = CrossNet(z, cross_layers)
            self.out_sizes["cross"] = z
        if "linear" in ops:
            self.bias = nn.ModuleList(nn.Embedding(n, 1) for n in field_sizes)
            for b in self.bias:
                nn.init.zeros_(b.weight)
            self.out_sizes["linear"] = len(field_sizes)
        self.out_channels = sum(self.out_sizes[o] for o in self.ops)
        # AutoFIS: batch norm without affine parameters on every operator's output, so
        # the outputs enter the gates (and the head) at one scale whatever their weights.
        self.norms = nn.ModuleDict({o: nn.BatchNorm1d(self.out_sizes[o], affine=False) for o in self.ops}) if norm else None

    def op_outputs(self, embs: list[torch.Tensor], x: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if hasattr(self, "proj"):
            p = [proj(e) for proj, e in zip(self.proj, embs, strict=True)]
        if "dot" in self.ops:
            out["dot"] = torch.stack([(p[i] * p[j]).sum(1) for i, j in self.pairs], dim=1)
        if "hadamard" in self.ops:
            out["hadamard"] = torch.cat([p[i] * p[j] for i, j in self.pairs], dim=1)
        z = torch.cat(embs, dim=1) if ("mlp" in self.ops or "cross" in self.ops) else None
        if "mlp" in self.ops:
            out["mlp"] = self.mlp(z)
        if "cross" in self.ops:
            out["cross"] = self.cross(z)
        if "linear" in self.ops:
            out["linear"] = torch.cat([b(idx) for b, idx in zip(self.bias, x, strict=True)], dim=1)
        if self.norms is not None:
            out = {o: self.norms[o](v) for o, v in out.items()}
        return out


class RecsysConfig(ComponentConfig):
    num_fields: int = Field(2, ge=2, description="input fields (user, item): must match the task")
    emb_dims: list[int] = Field([8, 16, 32, 64], min_length=1, description="embedding dimension choices per field")
    ops: list[str] = Field(list(DEFAULT_OPS), min_length=1,
                           description=f"interaction operators to choose from, from {list(OPS)}")
    proj_dim: int = Field(32, ge=1, description="width each field is projected to for dot / hadamard")
    mlp_layers: list[int] = Field([64, 32], min_length=1, description="layer widths of the mlp operator")
    cross_layers: int = Field(2, ge=1, description="layers of the cross operator")
    init_scale: float = Field(1e-3, gt=0, description="std of the initial architecture logits")
    baseline_dim: int | None = Field(None, description="embedding dim of the NeuMF-style baseline (default: median choice)")
    op_norm: bool = Field(True, description="batch norm without affine parameters on each operator's output (supernet "
                          "and derived network), so operators enter the gates and the head at one scale (AutoFIS)")

    @field_validator("emb_dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v) or len(set(v)) != len(v):
            raise ValueError("emb_dims must be distinct positive integers")
        return sorted(v)

    @field_validator("ops")
    @classmethod
    def _ops(cls, v: list[str]) -> list[str]:
        if any(o not in OPS for o in v) or len(set(v)) != len(v):
            raise ValueError(f"ops must be distinct names from {list(OPS)}, got {v}")
        return [o for o in OPS if o in v]  # canonical order


class RecsysSupernet(Supernet):
    multi_choice = frozenset({"ops"})  # derive keeps every interaction op with at least a 1/K share

    def __init__(self, cfg: RecsysConfig, field_sizes: list[int]):
        super().__init__()
        self.cfg = cfg
        dmax = max(cfg.emb_dims)
        s = cfg.init_scale
        self.alpha_emb = nn.Parameter(s * torch.randn(len(field_sizes), len(cfg.emb_dims)))
        self.alpha_ops = nn.Parameter(s * torch.randn(1, len(cfg.ops)))
        self.embeddings = nn.ModuleList(_embedding(n, dmax) for n in field_sizes)
        self.register_buffer("masks", torch.stack([(torch.arange(dmax) < d).float() for d in cfg.emb_dims]))
        self.inter = InteractionOps([dmax] * len(field_sizes), cfg.ops, cfg.proj_dim, cfg.mlp_layers, cfg.cross_layers,
                                    field_sizes, norm=cfg.op_norm)
        self.out_channels = self.inter.out_channels

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_emb, self.alpha_ops]

    def arch_labels(self):
        return [("emb_dim", [f"field{f}" for f in range(self.alpha_emb.shape[0])], [str(d) for d in self.cfg.emb_dims]),
                ("ops", ["share"], list(self.cfg.ops))]

    def forward(self, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        emb_mix: MixWeights = self.weight_fn(self.alpha_emb)
        op_mix: MixWeights = self.weight_fn(self.alpha_ops)
        embs = []
        for f, (emb, idx) in enumerate(zip(self.embeddings, x, strict=True)):
            w = emb_mix.weights[f]
            if emb_mix.index is None:
                mask = w @ self.masks
            else:
                k = int(emb_mix.index[f])
                mask = w[k] * self.masks[k]
            embs.append(emb(idx) * mask)
        outs = self.inter.op_outputs(embs, x)
        w = op_mix.weights[0]
        parts = []
        for k, op in enumerate(self.cfg.ops):
            if op_mix.index is not None and int(op_mix.index[0]) != k:
                parts.append(w[k] * torch.zeros_like(outs[op]))  # sampling strategies: only the drawn operator
            else:
                parts.append(w[k] * outs[op])
        return torch.cat(parts, dim=1)


class RecsysBody(nn.Module):
    """The discrete body: per-field embeddings of the chosen sizes and the active operators."""

    def __init__(self, cfg: RecsysConfig, field_sizes: list[int], dims: list[int], ops: list[str]):
        super().__init__()
        self.embeddings = nn.ModuleList(_embedding(n, d) for n, d in zip(field_sizes, dims, strict=True))
        self.inter = InteractionOps(dims, ops, cfg.proj_dim, cfg.mlp_layers, cfg.cross_layers, field_sizes,
                                    norm=cfg.op_norm)
        self.ops = list(ops)
        self.out_channels = self.inter.out_channels

    def forward(self, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
        embs = [emb(idx) for emb, idx in zip(self.embeddings, x, strict=True)]
        outs = self.inter.op_outputs(embs, x)
        return torch.cat([outs[o] for o in self.ops], dim=1)


class RecsysSpace(SearchSpace):
    """Embedding sizes per field and feature-interaction operators (AutoFIS / NASRec style)."""

    name = "recsys"
    description = ("recommendation: embedding dim per field + interaction ops (dot, hadamard, mlp, cross, linear); "
                   "NeuMF-style baseline")
    Config = RecsysConfig
    modalities = frozenset({"recsys"})

    def check_task(self, task: Any) -> None:
        super().check_task(task)
        _field_sizes(task, self.config.num_fields, self.name)

    # -- genotypes --------------------------------------------------------------------
    def genotype(self, emb_dims, ops) -> Genotype:
        cfg = self.config
        emb_dims = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in emb_dims)
        if len(emb_dims) != cfg.num_fields or any(d not in cfg.emb_dims for d in emb_dims):
            raise ValueError(f"emb_dims must be {cfg.num_fields} values from {cfg.emb_dims}, got {list(emb_dims)}")
        ops = tuple(ops)
        if not ops or any(o not in cfg.ops for o in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be a non-empty set of {cfg.ops}, got {list(ops)}")
        ops = tuple(o for o in cfg.ops if o in ops)
        text = f"emb={','.join(map(str, emb_dims))};ops={'+'.join(ops)}"
        return Genotype(self.name, {"emb_dims": emb_dims, "ops": ops}, text=text)

    def _parts(self, genotype: Genotype) -> tuple[list[int], list[str]]:
        spec = genotype.spec
        if not isinstance(spec, dict) or set(spec) != {"emb_dims", "ops"}:
            raise ValueError(f"a recsys spec is {{'emb_dims': [...], 'ops': [...]}}, got {spec!r}")
        return list(spec["emb_dims"]), list(spec["ops"])

    def check_genotype(self, genotype: Genotype) -> None:
        super().check_genotype(genotype)
        try:
            self.genotype(*self._parts(genotype))
        except ValueError as exc:
            raise IncompatibleError(f"genotype {genotype} is not in this recsys space: {exc}") from None

    def from_string(self, text: str) -> Genotype:
        try:
            fields = dict(part.split("=", 1) for part in text.strip().split(";"))
            dims = [int(d) for d in fields["emb"].split(",")]
            ops = fields["ops"].split("+")
        except (ValueError, KeyError):
            raise ValueError(f"a recsys genotype looks like 'emb=16,32;ops=hadamard+mlp', got {text!r}") from None
        return self.genotype(dims, ops)

    def sample(self, rng: np.random.Generator) -> Genotype:
        cfg = self.config
        dims = [cfg.emb_dims[int(rng.integers(0, len(cfg.emb_dims)))] for _ in range(cfg.num_fields)]
        on = rng.random(len(cfg.ops)) < 0.5
        if not on.any():
            on[int(rng.integers(0, len(cfg.ops)))] = True
        return self.genotype(dims, [o for o, b in zip(cfg.ops, on, strict=True) if b])

    def baseline(self, task: Any) -> Genotype:
        """NeuMF in this space: equal embeddings, GMF (hadamard) + MLP tower.
        Unlike the paper's NeuMF (see the ``neumf`` space) both branches share one
        embedding table per field."""
        cfg = self.config
        dim = cfg.baseline_dim or cfg.emb_dims[len(cfg.emb_dims) // 2]
        if dim not in cfg.emb_dims:
            raise IncompatibleError(f"space.baseline_dim {dim} is not one of the emb_dims choices {cfg.emb_dims}")
        missing = {"hadamard", "mlp"} - set(cfg.ops)
        if missing:
            raise IncompatibleError(f"the NeuMF-style baseline needs the ops hadamard and mlp; space.ops lacks {sorted(missing)}")
        return self.genotype([dim] * cfg.num_fields, ["hadamard", "mlp"])

    # -- networks ---------------------------------------------------------------------
    def build_supernet(self, task: Any, **options: Any) -> Network:
        if options:
            raise IncompatibleError(f"search space recsys does not support the supernet options {sorted(options)}")
        self.check_task(task)
        body = RecsysSupernet(self.config, _field_sizes(task, self.config.num_fields, self.name))
        return Network(nn.Identity(), body, task.make_head(body.out_channels))

    def derive(self, supernet: Network) -> Genotype:
        body: RecsysSupernet = supernet.body
        cfg = self.config
        dims = [cfg.emb_dims[int(k)] for k in body.alpha_emb.detach().argmax(dim=1)]
        share = torch.softmax(body.alpha_ops.detach()[0], dim=0)
        top = int(share.argmax())  # qualifies even when rounding puts equal shares a hair under 1 / K
        ops = [o for k, (o, p) in enumerate(zip(cfg.ops, share, strict=True)) if p >= 1.0 / len(cfg.ops) or k == top]
        return self.genotype(dims, ops)

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        dims, ops = self._parts(genotype)
        body = RecsysBody(self.config, _field_sizes(task, self.config.num_fields, self.name), dims, ops)
        return Network(nn.Identity(), body, task.make_head(body.out_channels))

    # -- graph encoding ---------------------------------------------------------------
    def node_types(self) -> tuple[str, ...]:
        cfg = self.config
        return ("input", *(f"emb_{d}" for d in cfg.emb_dims), *cfg.ops, "off", "output")

    def _adjacency(self) -> np.ndarray:
        F, K = self.config.num_fields, len(self.config.ops)
        n = 2 + F + K
        adj = np.zeros((n, n), dtype=np.float32)
        adj[0, 1 : 1 + F] = 1
        adj[1 : 1 + F, 1 + F : 1 + F + K] = 1
        adj[1 + F : 1 + F + K, n - 1] = 1
        return adj

    def encode(self, genotype: Genotype) -> GraphEncoding:
        self.check_genotype(genotype)
        cfg = self.config
        dims, ops = self._parts(genotype)
        types = self.node_types()
        names = ["input", *(f"emb_{d}" for d in dims), *(o if o in ops else "off" for o in cfg.ops), "output"]
        onehot = np.zeros((len(names), len(types)), dtype=np.float32)
        for i, nm in enumerate(names):
            onehot[i, types.index(nm)] = 1
        return GraphEncoding(self._adjacency(), onehot, types)

    def decode(self, graph: GraphEncoding) -> Genotype:
        cfg = self.config
        types = self.node_types()
        F = cfg.num_fields
        if tuple(graph.op_names) != types or graph.num_nodes != 2 + F + len(cfg.ops):
            raise ValueError("graph does not use this recsys space's encoding")
        if not np.array_equal(graph.adjacency > 0.5, self._adjacency() > 0.5):
            raise ValueError("graph adjacency is not the recsys field -> operator DAG")
        names = [types[k] for k in graph.ops.argmax(axis=1)]
        if names[0] != "input" or names[-1] != "output":
            raise ValueError("graph must start with the input node and end with the output node")
        dims = []
        for nm in names[1 : 1 + F]:
            if not nm.startswith("emb_"):
                raise ValueError(f"field node decodes to {nm!r}, not an embedding size")
            dims.append(int(nm[4:]))
        ops = []
        for op, nm in zip(cfg.ops, names[1 + F : -1], strict=True):
            if nm not in (op, "off"):
                raise ValueError(f"operator node of {op!r} decodes to {nm!r}")
            if nm == op:
                ops.append(op)
        return self.genotype(dims, ops)


# --------------------------------------------------------------------------------------
# NeuMF (fixed architecture)
# --------------------------------------------------------------------------------------


class NeuMFConfig(ComponentConfig):
    factors: int = Field(8, ge=1, description="predictive factors of the GMF branch (its embedding size)")
    mlp_layers: list[int] = Field([64, 32, 16, 8], min_length=1,
                                  description="MLP tower widths; the MLP embeddings are mlp_layers[0] / 2 per field")

    @field_validator("mlp_layers")
    @classmethod
    def _even(cls, v: list[int]) -> list[int]:
        if v[0] % 2 or any(w < 1 for w in v):
            raise ValueError("mlp_layers must be positive and mlp_layers[0] even (it is the two MLP embeddings concatenated)")
        return v


class NeuMFBody(nn.Module):
    def __init__(self, field_sizes: list[int], factors: int, mlp_layers: list[int]):
        super().__init__()
        nu, ni = field_sizes
        half = mlp_layers[0] // 2
        self.gmf_user, self.gmf_item = _embedding(nu, factors), _embedding(ni, factors)
        self.mlp_user, self.mlp_item = _embedding(nu, half), _embedding(ni, half)
        self.mlp, c = _mlp(mlp_layers[0], mlp_layers[1:])
        self.out_channels = factors + c

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        u, i = x
        gmf = self.gmf_user(u) * self.gmf_item(i)
        mlp = self.mlp(torch.cat([self.mlp_user(u), self.mlp_item(i)], dim=1))
        return torch.cat([gmf, mlp], dim=1)


class NeuMFSpace(FixedArchitectureSpace):
    """NeuMF (He et al., 2017), a one-architecture space for ``strategy: fixed``."""

    name = "neumf"
    description = "NeuMF baseline (GMF + MLP, He et al. 2017): one architecture, use strategy fixed"
    Config = NeuMFConfig
    modalities = frozenset({"recsys"})

    def check_task(self, task: Any) -> None:
        super().check_task(task)
        _field_sizes(task, 2, self.name)

    def architecture(self) -> Genotype:
        cfg = self.config
        spec = {"factors": cfg.factors, "mlp_layers": tuple(cfg.mlp_layers)}
        return Genotype(self.name, spec, text=f"neumf(factors={cfg.factors}, mlp={'-'.join(map(str, cfg.mlp_layers))})")

    def build_network(self, genotype: Genotype, task: Any) -> Network:
        self.check_genotype(genotype)
        cfg = self.config
        body = NeuMFBody(_field_sizes(task, 2, self.name), cfg.factors, cfg.mlp_layers)
        return Network(nn.Identity(), body, task.make_head(body.out_channels))

    def encode(self, genotype: Genotype) -> GraphEncoding:
        """input -> (gmf, mlp) -> output."""
        self.check_genotype(genotype)
        adj = np.zeros((4, 4), dtype=np.float32)
        adj[0, 1] = adj[0, 2] = adj[1, 3] = adj[2, 3] = 1
        return GraphEncoding(adj, np.eye(4, dtype=np.float32), ("input", "gmf", "mlp", "output"))
