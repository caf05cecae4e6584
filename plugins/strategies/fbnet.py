"""FBNet (Wu et al., 2019): differentiable latency-aware search.

Every forward pass mixes all candidates of each layer with Gumbel-softmax samples of
the architecture distribution (temperature ``tau_max`` annealed to ``tau_min``), and
the architecture loss is the paper's

    L = CE * alpha * log(LAT)^beta

where ``LAT`` is the expected latency of the sampled mixture, the sum over layers and
candidates of the sample weight times the candidate's latency from the per-operator
table measured by the hardware backend (in microseconds here, so that the log stays
positive for sub-millisecond networks). With ``constraints.max_latency_ms`` the shared
hinge penalty and the latency-constrained derivation apply on top.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from dnas_core import MixWeights, hookimpl
from dnas_core.space import Network

from ._gumbel import GumbelConfig, gumbel_hard, gumbel_softmax, temperature
from ._hardware import LatencyAwareStrategy


class FBNetConfig(GumbelConfig):
    tau_max: float = Field(5.0, gt=0, description="Gumbel temperature at the first epoch (FBNet: 5)")
    tau_min: float = Field(0.5, gt=0, description="Gumbel temperature at the last epoch")
    tau_schedule: Literal["linear", "exponential"] = Field("exponential", description="FBNet decays it exponentially")
    arch_lr: float = Field(0.01, gt=0, description="architecture learning rate (Adam; FBNet: 0.01)")
    arch_weight_decay: float = Field(5e-4, ge=0)
    latency_alpha: float = Field(0.2, gt=0, description="alpha of CE * alpha * log(LAT)^beta (FBNet: 0.2)")
    latency_beta: float = Field(0.6, ge=0, description="beta of CE * alpha * log(LAT)^beta (FBNet: 0.6)")
    hard: bool = Field(False, description="straight-through one-hot samples (one candidate computed per layer)")


class FBNet(LatencyAwareStrategy):
    """Gumbel-softmax mixing with the multiplicative log-latency loss of FBNet."""

    name = "fbnet"
    description = "FBNet: Gumbel-softmax sampling, loss CE * alpha * log(LAT)^beta from a latency table"
    Config = FBNetConfig
    tau: float = 5.0

    @property
    def samples_paths(self) -> bool:  # type: ignore[override]
        return self.config.hard

    def on_epoch_start(self, epoch, supernet) -> None:
        cfg = self.config
        self.tau = temperature(epoch, cfg.epochs, cfg.tau_max, cfg.tau_min, cfg.tau_schedule)

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        if self.phase == "eval":  # evaluate the supernet as the currently most likely network
            index = alpha.argmax(dim=-1)
            return MixWeights(torch.zeros_like(alpha).scatter_(-1, index.unsqueeze(-1), 1.0), index)
        if self.config.hard:
            weights, index = gumbel_hard(alpha, self.tau)
            self.remember(alpha, weights)
            return MixWeights(weights, index)
        weights = gumbel_softmax(alpha, self.tau)
        self.remember(alpha, weights)
        return MixWeights(weights)

    def latency_loss_factor(self, net: Network) -> torch.Tensor:
        """alpha * log(LAT_us)^beta of the current forward pass's samples."""
        cfg = self.config
        lat_us = 1000.0 * self.expected_latency(net)(self.sampled_weights(net))
        return cfg.latency_alpha * torch.log(lat_us.clamp_min(1.0 + 1e-6)) ** cfg.latency_beta

    def arch_loss(self, net: Network, x: Any, y: torch.Tensor, loss_fn: nn.Module, backend: Any) -> torch.Tensor:
        with backend.autocast():
            ce = loss_fn(net(x).float(), y)
        loss = ce * self.latency_loss_factor(net)
        reg = self.arch_regularizer(net.body)
        if reg is not None:
            loss = loss + reg
        if getattr(self, "_latency_constraint", None) is not None:
            loss = loss + self.config.latency_weight * self.latency_penalty(net)
        return loss

    def latency_penalty(self, net: Network) -> torch.Tensor:
        return self._latency_constraint.penalty(net, self.sampled_weights(net))

    def epoch_metrics(self, supernet) -> dict[str, float]:
        return {**super().epoch_metrics(supernet), "tau": self.tau}


@hookimpl
def dnas_register_strategies():
    return [FBNet]
