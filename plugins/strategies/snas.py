"""SNAS (Xie et al., 2019): the mixing weights of every forward pass are a soft
Gumbel-softmax sample of the architecture distribution, whose temperature is annealed
so that the samples approach one-hot. Every operation is still computed (soft
weights); use GDAS for the hard, one-path variant.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from dnas_core import MixWeights, hookimpl

from ._gumbel import GumbelConfig, gumbel_softmax, temperature
from .differentiable import DifferentiableStrategy


class SNASConfig(GumbelConfig):
    tau_max: float = Field(1.0, gt=0, description="Gumbel temperature at the first epoch (SNAS: 1)")
    tau_min: float = Field(0.03, gt=0, description="Gumbel temperature at the last epoch")
    tau_schedule: Literal["linear", "exponential"] = Field(
        "exponential", description="how the temperature goes from tau_max to tau_min")


class SNAS(DifferentiableStrategy):
    """Stochastic NAS: soft Gumbel-softmax samples with an annealed temperature."""

    name = "snas"
    description = "SNAS: soft Gumbel-softmax sampling with an annealed temperature"
    Config = SNASConfig
    tau: float = 1.0

    def on_epoch_start(self, epoch, supernet) -> None:
        cfg = self.config
        self.tau = temperature(epoch, cfg.epochs, cfg.tau_max, cfg.tau_min, cfg.tau_schedule)

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        if self.phase == "eval":
            return MixWeights(torch.softmax(alpha, dim=-1))
        return MixWeights(gumbel_softmax(alpha, self.tau))

    def epoch_metrics(self, supernet) -> dict[str, float]:
        return {"tau": self.tau}


@hookimpl
def dnas_register_strategies():
    return [SNAS]
