"""DrNAS (Chen et al., 2021): the architecture is a Dirichlet distribution over the
operations of every edge, ``Dir(concentration)`` with ``concentration = elu(alpha) + 1``.
Every forward pass mixes with a reparameterised sample (pathwise gradient through
``Dirichlet.rsample``), and the architecture loss adds ``kl_weight * KL(Dir(conc) ||
Dir(anchor))``, which anchors the distribution to a symmetric prior and keeps it from
concentrating early. The derived cell is the mode of the mean, i.e. the arg-max of the
concentration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from dnas_core import MixWeights, hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class DrNASConfig(DifferentiableConfig):
    kl_weight: float = Field(1e-3, ge=0, description="weight of the KL regulariser towards the anchor (DrNAS: 1e-3)")
    anchor: float = Field(1.0, gt=0, description="concentration of the symmetric Dirichlet prior (1: uniform)")
    arch_weight_decay: float = Field(0.0, ge=0, description="no L2 on the logits: the KL term regularises")
    arch_lr: float = Field(6e-4, gt=0, description="architecture learning rate (DrNAS: 6e-4)")


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    return F.elu(alpha) + 1.0


class DrNAS(DifferentiableStrategy):
    """Dirichlet neural architecture search."""

    name = "drnas"
    description = "DrNAS: Dirichlet distribution over ops, reparameterised samples, KL anchor"
    Config = DrNASConfig
    supports_exclude_ops = False  # elu(-1e4) + 1 = 0 is not a valid Dirichlet concentration

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        conc = concentration(alpha)
        if self.phase == "eval":  # the distribution's mean
            return MixWeights(conc / conc.sum(-1, keepdim=True))
        return MixWeights(torch.distributions.Dirichlet(conc).rsample())

    def arch_regularizer(self, supernet) -> torch.Tensor | None:
        if not self.config.kl_weight:
            return None
        total = 0.0
        for alpha in supernet.arch_parameters():
            if alpha.dim() != 2:  # e.g. PC edge weights: not a distribution over ops
                continue
            conc = concentration(alpha)
            prior = torch.distributions.Dirichlet(torch.full_like(conc, self.config.anchor))
            total = total + torch.distributions.kl_divergence(torch.distributions.Dirichlet(conc), prior).sum()
        return self.config.kl_weight * total

    def epoch_metrics(self, supernet) -> dict[str, float]:
        conc = concentration(supernet.arch_parameters()[0].detach())
        return {"dirichlet/concentration_mean": float(conc.sum(-1).mean())}


@hookimpl
def dnas_register_strategies():
    return [DrNAS]
