"""beta-DARTS (Ye et al., 2022): the beta-decay regulariser.

The architecture loss adds ``lambda * mean_e logsumexp(alpha_e)``, whose gradient is
the softmax of each edge: it pulls down the logits in proportion to their weight,
which keeps the mixing weights (the "betas") from running away to parameter-free
operations. ``lambda`` grows linearly from ``beta_weight_start`` to ``beta_weight``
over the search. Otherwise first-order DARTS.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dnas_core import hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class BetaDARTSConfig(DifferentiableConfig):
    beta_weight: float = Field(5.0, ge=0, description="regulariser weight lambda at the last epoch")
    beta_weight_start: float = Field(0.0, ge=0, description="lambda at the first epoch (linear ramp)")
    arch_weight_decay: float = Field(0.0, ge=0, description="beta-DARTS replaces L2 on the logits by beta-decay")


def beta_decay(alpha: torch.Tensor) -> torch.Tensor:
    """The beta-decay loss of one logit tensor: mean over rows of logsumexp."""
    return torch.logsumexp(alpha, dim=-1).mean()


class BetaDARTS(DifferentiableStrategy):
    """DARTS with beta-decay regularisation."""

    name = "beta_darts"
    description = "beta-DARTS: beta-decay (logsumexp) regulariser on the architecture logits"
    Config = BetaDARTSConfig
    lam: float = 0.0

    def on_epoch_start(self, epoch, supernet) -> None:
        cfg = self.config
        t = epoch / max(1, cfg.epochs - 1)
        self.lam = cfg.beta_weight_start + t * (cfg.beta_weight - cfg.beta_weight_start)

    def arch_regularizer(self, supernet) -> torch.Tensor | None:
        if not self.lam:
            return None
        return self.lam * sum(beta_decay(a) for a in supernet.arch_parameters() if a.dim() == 2)

    def epoch_metrics(self, supernet) -> dict[str, float]:
        return {"beta_decay/lambda": self.lam}


@hookimpl
def dnas_register_strategies():
    return [BetaDARTS]
