"""An architecture GAN in the spirit of GA-NAS.

The generator maps noise to a graph encoding: operation logits sampled with a hard
Gumbel-softmax and adjacency logits thresholded, both straight-through, so the discriminator's gradient reaches the generator through
discrete graphs. The discriminator (GIN encoder + linear) tells the *best
architectures found so far* (the ``graphs`` given to :meth:`GraphGAN.fit`) from
generated ones. The ``gan_search`` strategy retrains both every round on the
current top set, so generation concentrates on the top of the space, and uses
:meth:`GraphGAN.discriminate` to pick which generated candidates to query.
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


class GraphGANConfig(ComponentConfig):
    noise_dim: int = Field(16, ge=1)
    hidden: int = Field(32, ge=4)
    layers: int = Field(2, ge=1, description="message-passing layers of the discriminator")
    steps: int = Field(15, ge=1, description="discriminator + generator updates per fit()")
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(1.0, gt=0, description="Gumbel-softmax temperature")
    seed: int = Field(0, ge=0)


class _Generator(nn.Module):
    def __init__(self, layout: Layout, cfg: GraphGANConfig):
        super().__init__()
        self.decoder = GraphDecoder(layout, cfg.noise_dim, 2 * cfg.hidden)
        self.tau = cfg.temperature

    def forward(self, noise: torch.Tensor, gen: torch.Generator | None = None,
                spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        adj_logit, op_logit = self.decoder(noise)
        op_logit = op_logit / spread
        u = torch.rand(op_logit.shape, generator=gen).clamp(1e-6, 1 - 1e-6)
        soft_ops = torch.softmax((op_logit - torch.log(-torch.log(u))) / self.tau, -1)
        hard_ops = F.one_hot(soft_ops.argmax(-1), soft_ops.shape[-1]).float()
        ops = hard_ops + soft_ops - soft_ops.detach()
        # Connectivity is not sampled: a space's valid graphs usually share a narrow set
        # of DAGs, which noisy edges would almost never hit.
        soft_adj = torch.sigmoid(adj_logit / self.tau)
        adj = ((soft_adj > 0.5).float() + soft_adj - soft_adj.detach()) * self.decoder.mask
        return adj, ops


class _Discriminator(nn.Module):
    def __init__(self, layout: Layout, cfg: GraphGANConfig):
        super().__init__()
        self.encoder = GINEncoder(layout, cfg.hidden, cfg.layers)
        self.out = nn.Linear(self.encoder.out_dim, 1)

    def forward(self, adj: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder(adj, ops)).squeeze(-1)


class GraphGAN(ArchitectureGenerator):
    """Graph GAN: Gumbel-softmax generator vs a GIN discriminator of top architectures."""

    name = "graph_gan"
    description = "architecture GAN (GA-NAS spirit): generator vs discriminator of the top architectures"
    Config = GraphGANConfig

    def __init__(self, config: GraphGANConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.layout: Layout | None = None
        self.gen: _Generator | None = None
        self.disc: _Discriminator | None = None
        self.rounds = 0

    def _build(self, layout: Layout) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            self.gen = _Generator(layout, self.config)
            self.disc = _Discriminator(layout, self.config)
        self.layout = layout

    def ensure_built(self, example: GraphEncoding) -> None:
        """Build the networks for ``example``'s layout (before the first fit)."""
        if self.gen is None:
            self._build(layout_of([example]))

    def fit(self, graphs: Sequence[GraphEncoding], scores: Sequence[float] | None = None,
            negatives: Sequence[GraphEncoding] = ()) -> dict[str, float]:
        """One round: train the discriminator to tell ``graphs`` (the top architectures
        so far) from generated ones and the generator to fool it, continuing from the
        current weights. ``scores`` are not used: the caller picks the top set.
        ``negatives``: architectures known to be worse than the top set (evaluated ones
        outside it); the discriminator sees them as fakes too, so it learns what the
        space's weak graphs look like, not only what the generator draws."""
        layout = layout_of(graphs, self.layout)
        if len(negatives):
            layout_of(negatives, layout)  # the same space, or the error that says so
        if self.gen is None:
            self._build(layout)
        cfg = self.config
        adj_r, ops_r = to_tensors(graphs)
        adj_n, ops_n = to_tensors(negatives) if len(negatives) else (None, None)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + self.rounds)
        opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.gen.train()
        self.disc.train()
        b = cfg.batch_size
        d_loss = g_loss = 0.0
        # The first round also teaches the generator what graphs of the space look like.
        for _ in range(cfg.steps * (4 if self.rounds == 0 else 1)):
            idx = torch.randint(0, len(graphs), (b,), generator=g)
            fa, fo = self.gen(torch.randn(b, cfg.noise_dim, generator=g), g)
            fa, fo = fa.detach(), fo.detach()
            if adj_n is not None:
                # Half of the fake half are known-weak architectures.
                neg = torch.randint(0, len(negatives), (b // 2,), generator=g)
                fa, fo = torch.cat([fa[: b - b // 2], adj_n[neg]]), torch.cat([fo[: b - b // 2], ops_n[neg]])
            logits = self.disc(torch.cat([adj_r[idx], fa]), torch.cat([ops_r[idx], fo]))
            labels = torch.cat([torch.ones(b), torch.zeros(b)])
            loss_d = F.binary_cross_entropy_with_logits(logits, labels)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            fa, fo = self.gen(torch.randn(b, cfg.noise_dim, generator=g), g)
            # The real half keeps the discriminator's batch statistics comparable.
            logits = self.disc(torch.cat([adj_r[idx], fa]), torch.cat([ops_r[idx], fo]))[b:]
            loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones(b))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            d_loss, g_loss = float(loss_d.detach()), float(loss_g.detach())
        self.rounds += 1
        return {"d_loss": d_loss, "g_loss": g_loss}

    @torch.no_grad()
    def generate(self, n: int, rng: np.random.Generator, spread: float = 1.0) -> list[GraphEncoding]:
        """``n`` generated graphs; ``spread > 1`` flattens the generator's operation
        logits (more diverse operations around what it learnt: exploration when it has
        collapsed onto a few graphs; the learnt connectivity is kept)."""
        if self.gen is None:
            raise RuntimeError("graph_gan is not built: call fit(), ensure_built() or load_state_dict() first")
        self.gen.eval()
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        adj, ops = self.gen(torch.randn(n, self.config.noise_dim, generator=g), g, spread)
        return to_graphs(adj, ops, self.layout)

    @torch.no_grad()
    def discriminate(self, graphs: Sequence[GraphEncoding]) -> np.ndarray:
        """The discriminator's probability that each graph belongs to the top set."""
        if self.disc is None:
            raise RuntimeError("graph_gan is not built")
        self.disc.eval()
        adj, ops = to_tensors(graphs)
        return torch.sigmoid(self.disc(adj, ops)).numpy()

    def state_dict(self) -> dict[str, Any]:
        if self.gen is None:
            raise RuntimeError("graph_gan is not built")
        return {"layout": self.layout.to_state(), "config": self.config.model_dump(),
                "generator": self.gen.state_dict(), "discriminator": self.disc.state_dict(), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._build(Layout.from_state(state["layout"]))
        self.gen.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.rounds = int(state.get("rounds", 0))
