"""SDARTS-RS (Chen & Hsieh, 2020): random smoothing of the architecture weights.

In the weight step the mixing weights are ``softmax(alpha) + U(-eps, eps)`` (a fresh
perturbation every step), so the supernet weights are trained to work in a
neighbourhood of the current architecture; the architecture step uses the clean
weights. This flattens the validation loss landscape in ``alpha``, the curvature that
precedes DARTS's collapse. ``eps`` ramps linearly from ``epsilon_start`` to
``epsilon``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dnas_core import MixWeights, hookimpl
from dnas_core import distributed as ddp

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class SDARTSConfig(DifferentiableConfig):
    epsilon: float = Field(0.3, ge=0, description="half-width of the uniform perturbation at the last epoch")
    epsilon_start: float = Field(0.03, ge=0, description="half-width at the first epoch (linear ramp)")


class SDARTSRS(DifferentiableStrategy):
    """Smooth DARTS, random-smoothing variant."""

    name = "sdarts_rs"
    description = "SDARTS-RS: uniform random perturbation of the architecture weights in the weight step"
    Config = SDARTSConfig
    eps: float = 0.03

    def on_epoch_start(self, epoch, supernet) -> None:
        cfg = self.config
        t = epoch / max(1, cfg.epochs - 1)
        self.eps = cfg.epsilon_start + t * (cfg.epsilon - cfg.epsilon_start)

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        w = torch.softmax(alpha, dim=-1)
        if self.phase == "weight" and self.eps:
            # rank 0's noise on every rank of a data-parallel run, as GDAS's samples
            w = w + ddp.from_rank_zero(torch.rand_like(w) * 2 - 1) * self.eps
        return MixWeights(w)

    def epoch_metrics(self, supernet) -> dict[str, float]:
        return {"sdarts/epsilon": self.eps}


@hookimpl
def dnas_register_strategies():
    return [SDARTSRS]
