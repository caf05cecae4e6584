"""An architecture VAE in the spirit of arch2vec / D-VAE.

A GIN-style message-passing encoder maps a graph encoding to a Gaussian latent
(``latent_dim`` coordinates); a decoder maps a latent point back to adjacency and
operation logits. Trained without labels on sampled architectures, its latent space
is where the ``vae_bo`` strategy runs Bayesian optimisation.

With ``condition_dim > 0`` it is a conditional VAE: encoder and decoder also see a
task embedding (see :mod:`dnas_plugins.generators.task_embedding`), so
``generate(n, rng, condition=task_vector)`` proposes architectures for that task
(the MetaD2A idea).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from dnas_core import ArchitectureGenerator, ComponentConfig, GraphEncoding

from ._graphs import GINEncoder, GraphDecoder, Layout, layout_of, to_graphs, to_tensors


class GraphVAEConfig(ComponentConfig):
    latent_dim: int = Field(8, ge=1, description="coordinates of the latent space")
    hidden: int = Field(64, ge=4, description="width of encoder and decoder layers")
    layers: int = Field(3, ge=1, description="message-passing layers of the encoder")
    epochs: int = Field(150, ge=1, description="training epochs per fit()")
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    beta: float = Field(0.005, ge=0, description="weight of the KL term (small: reconstruction first)")
    condition_dim: int = Field(0, ge=0, description="size of the task embedding it is conditioned on (0: none)")
    seed: int = Field(0, ge=0, description="seed of the initial weights and of training")


class _VAE(nn.Module):
    def __init__(self, layout: Layout, cfg: GraphVAEConfig):
        super().__init__()
        self.encoder = GINEncoder(layout, cfg.hidden, cfg.layers)
        c = cfg.condition_dim
        self.to_latent = nn.Linear(self.encoder.out_dim + c, 2 * cfg.latent_dim)
        self.decoder = GraphDecoder(layout, cfg.latent_dim + c, 2 * cfg.hidden)

    def encode(self, adj, ops, cond=None):
        h = self.encoder(adj, ops)
        if cond is not None:
            h = torch.cat([h, cond], -1)
        mu, logvar = self.to_latent(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 5)

    def decode(self, z, cond=None):
        return self.decoder(z if cond is None else torch.cat([z, cond], -1))


class GraphVAE(ArchitectureGenerator):
    """Graph VAE (GIN encoder, MLP decoder) over any space's graph encoding."""

    name = "graph_vae"
    description = "architecture VAE (arch2vec / D-VAE spirit): GIN encoder, Gaussian latent, graph decoder"
    Config = GraphVAEConfig

    def __init__(self, config: GraphVAEConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.layout: Layout | None = None
        self.model: _VAE | None = None
        self.trained_epochs = 0

    # -- construction -------------------------------------------------------------------
    def _build(self, layout: Layout) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            self.model = _VAE(layout, self.config)
        self.layout = layout

    def _cond(self, conditions: Any, n: int) -> torch.Tensor | None:
        c = self.config.condition_dim
        if c == 0:
            if conditions is not None:
                raise ValueError("this graph_vae is unconditional (condition_dim: 0) but a condition was given")
            return None
        if conditions is None:
            raise ValueError(f"this graph_vae is conditioned on a task embedding of size {c}; pass condition(s)")
        t = torch.as_tensor(np.asarray(conditions, dtype=np.float32))
        if t.dim() == 1:
            t = t.expand(n, -1)
        if t.shape != (n, c):
            raise ValueError(f"conditions of shape {tuple(t.shape)}, expected ({n}, {c})")
        return t

    # -- training -------------------------------------------------------------------------
    def fit(self, graphs: Sequence[GraphEncoding], scores: Sequence[float] | None = None,
            conditions: Any = None, epochs: int | None = None) -> dict[str, float]:
        """Train (continuing from the current weights) to reconstruct ``graphs``;
        ``scores`` are not used (the VAE is unsupervised). ``conditions``: one task
        embedding per graph for a conditional VAE."""
        layout = layout_of(graphs, self.layout)
        if self.model is None:
            self._build(layout)
        cfg = self.config
        adj, ops = to_tensors(graphs)
        cond = self._cond(conditions, len(graphs))
        target = ops.argmax(-1)
        mask = self.model.decoder.mask
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed + self.trained_epochs)
        n = len(graphs)
        epochs = epochs or cfg.epochs
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * max(1, -(-n // cfg.batch_size)))
        self.model.train()
        last = {}
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            tot, count = 0.0, 0
            for s in range(0, n, cfg.batch_size):
                idx = perm[s: s + cfg.batch_size]
                if len(idx) < 2:
                    continue
                a, o, t = adj[idx], ops[idx], target[idx]
                c = None if cond is None else cond[idx]
                mu, logvar = self.model.encode(a, o, c)
                z = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
                adj_logit, op_logit = self.model.decode(z, c)
                rec = F.cross_entropy(op_logit.reshape(-1, layout.num_ops), t.reshape(-1), reduction="sum")
                rec = rec + (F.binary_cross_entropy_with_logits(adj_logit, a, reduction="none") * mask).sum()
                kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
                loss = (rec + cfg.beta * kl) / len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(idx)
                count += len(idx)
            last = {"loss": tot / max(count, 1)}
            self.trained_epochs += 1
        last["recon_accuracy"] = self.reconstruction_accuracy(graphs, conditions)
        return last

    # -- latent space ---------------------------------------------------------------------
    def _require(self) -> _VAE:
        if self.model is None:
            raise RuntimeError("graph_vae has not been trained: call fit() or load_state_dict() first")
        return self.model

    @torch.no_grad()
    def encode(self, graphs: Sequence[GraphEncoding], conditions: Any = None) -> np.ndarray:
        """The latent means of ``graphs`` (shape (n, latent_dim))."""
        model = self._require().eval()
        layout_of(graphs, self.layout)
        adj, ops = to_tensors(graphs)
        mu, _ = model.encode(adj, ops, self._cond(conditions, len(graphs)))
        return mu.numpy()

    @torch.no_grad()
    def decode(self, z: np.ndarray, conditions: Any = None) -> list[GraphEncoding]:
        """Graphs decoded from latent points ``z`` (shape (n, latent_dim))."""
        model = self._require().eval()
        zt = torch.as_tensor(np.atleast_2d(np.asarray(z, dtype=np.float32)))
        adj_logit, op_logit = model.decode(zt, self._cond(conditions, zt.shape[0]))
        return to_graphs(torch.sigmoid(adj_logit), op_logit, self.layout)

    def generate(self, n: int, rng: np.random.Generator, condition: Any = None) -> list[GraphEncoding]:
        """``n`` graphs decoded from the prior N(0, I)."""
        return self.decode(rng.standard_normal((n, self.config.latent_dim)), condition)

    def reconstruction_accuracy(self, graphs: Sequence[GraphEncoding], conditions: Any = None) -> float:
        """Share of ``graphs`` whose decoded latent mean is exactly the same graph."""
        back = self.decode(self.encode(graphs, conditions), conditions)
        return float(np.mean([a.key() == b.key() for a, b in zip(graphs, back, strict=True)]))

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        model = self._require()
        return {"layout": self.layout.to_state(), "config": self.config.model_dump(),
                "model": model.state_dict(), "trained_epochs": self.trained_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.config.model_dump()
        theirs = dict(state.get("config", {}))
        for key in ("latent_dim", "hidden", "layers", "condition_dim"):
            if key in theirs and theirs[key] != mine[key]:
                raise ValueError(f"graph_vae state has {key}={theirs[key]}, this generator {key}={mine[key]}")
        self._build(Layout.from_state(state["layout"]))
        self.model.load_state_dict(state["model"])
        self.trained_epochs = int(state.get("trained_epochs", 0))
