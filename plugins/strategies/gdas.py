"""GDAS (Dong & Yang, 2019): one operation per edge sampled by Gumbel-max in every
forward pass, gradients through the Gumbel-softmax relaxation (straight-through). The
space computes only the sampled operation of each edge (``MixWeights(weights, index)``),
so a step costs about one sub-network. The temperature falls from ``tau_max`` (10) to
``tau_min`` (0.1) over the search.
"""

from __future__ import annotations

import torch

from dnas_core import MixWeights, hookimpl

from ._gumbel import GumbelConfig, gumbel_hard, temperature
from .differentiable import DifferentiableStrategy


class GDASConfig(GumbelConfig):
    pass


class GDAS(DifferentiableStrategy):
    """Gradient-based search using a differentiable architecture sampler."""

    name = "gdas"
    description = "GDAS: Gumbel-max hard sampling of one op per edge, straight-through gradient"
    Config = GDASConfig
    samples_paths = True
    tau: float = 10.0

    def on_epoch_start(self, epoch, supernet) -> None:
        cfg = self.config
        self.tau = temperature(epoch, cfg.epochs, cfg.tau_max, cfg.tau_min, cfg.tau_schedule)

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        if self.phase == "eval":  # the supernet is evaluated as the currently derived cell
            index = alpha.argmax(dim=-1)
            return MixWeights(torch.zeros_like(alpha).scatter_(-1, index.unsqueeze(-1), 1.0), index)
        weights, index = gumbel_hard(alpha, self.tau)
        return MixWeights(weights, index)

    def epoch_metrics(self, supernet) -> dict[str, float]:
        return {"tau": self.tau}


@hookimpl
def dnas_register_strategies():
    return [GDAS]
