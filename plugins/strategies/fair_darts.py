"""Fair DARTS (Chu et al., 2020): independent sigmoid weights instead of a softmax, so
operations no longer compete for one unit of weight (the "unfair advantage" that lets
skip connections crowd out convolutions), plus the zero-one loss

    L01 = -mean((sigmoid(alpha) - 0.5) ** 2)

weighted by ``zero_one_weight`` (paper: 10), which pushes every weight towards 0 or 1
so that the discretised cell matches the supernet. The derived op of an edge is the
one with the largest sigmoid weight (same as the largest logit).

The zero operation (``none``) is excluded by default, as in the paper: it multiplies
zeros, so the task loss never moves its weight, and with independent sigmoids the
zero-one loss alone would push it to 0 or 1 depending on its random start; on
NAS-Bench-201 that derived cells whose output edges were all ``none``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dnas_core import MixWeights, hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class FairDARTSConfig(DifferentiableConfig):
    zero_one_weight: float = Field(10.0, ge=0, description="weight of the zero-one loss (Fair DARTS: 10)")
    exclude_zero_op: bool = Field(
        True, description="search without the space's zero operation (none), as Fair DARTS does: its sigmoid "
        "weight gets no gradient from the task loss, only the zero-one loss's push away from 0.5, so it would "
        "end at 0 or 1 by chance")


def zero_one_loss(alpha: torch.Tensor) -> torch.Tensor:
    return -torch.mean((torch.sigmoid(alpha) - 0.5) ** 2)


class FairDARTS(DifferentiableStrategy):
    """DARTS with sigmoid (non-exclusive) weights and the zero-one loss."""

    name = "fair_darts"
    description = "Fair DARTS: independent sigmoid weights with a zero-one loss"
    Config = FairDARTSConfig

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        return MixWeights(torch.sigmoid(alpha))

    def arch_regularizer(self, supernet) -> torch.Tensor | None:
        w = self.config.zero_one_weight
        if not w:
            return None
        return w * sum(zero_one_loss(a) for a in supernet.arch_parameters() if a.dim() == 2)

    def epoch_metrics(self, supernet) -> dict[str, float]:
        s = torch.sigmoid(supernet.arch_parameters()[0].detach())
        return {"fair/sigmoid_above_half": float((s > 0.5).float().mean())}


@hookimpl
def dnas_register_strategies():
    return [FairDARTS]
