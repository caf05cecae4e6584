"""Gumbel sampling and the temperature schedule shared by GDAS and SNAS (and any
strategy that samples architectures). Not a plugin itself."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from dnas_core import distributed as ddp

from .differentiable import DifferentiableConfig


class GumbelConfig(DifferentiableConfig):
    tau_max: float = Field(10.0, gt=0, description="Gumbel temperature at the first epoch")
    tau_min: float = Field(0.1, gt=0, description="Gumbel temperature at the last epoch")
    tau_schedule: Literal["linear", "exponential"] = Field(
        "linear", description="how the temperature goes from tau_max to tau_min over the epochs")


def temperature(epoch: int, epochs: int, tau_max: float, tau_min: float, schedule: str = "linear") -> float:
    """tau_max at epoch 0, tau_min at the last epoch."""
    t = epoch / max(1, epochs - 1)
    if schedule == "exponential":
        return math.exp(math.log(tau_max) + t * (math.log(tau_min) - math.log(tau_max)))
    return tau_max - t * (tau_max - tau_min)


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples (finite: the uniform is kept away from 0 and 1). In a
    data-parallel run every rank uses rank 0's, so that all sample the same path (and
    issue the same collectives) even when their random generators have drifted apart."""
    u = torch.rand_like(like).clamp_(1e-10, 1.0 - 1e-7)
    return ddp.from_rank_zero(-torch.log(-torch.log(u)))


def gumbel_softmax(alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """Soft Gumbel-softmax sample of each row of ``alpha`` (logits)."""
    return torch.softmax((torch.log_softmax(alpha, dim=-1) + gumbel_noise(alpha)) / tau, dim=-1)


def gumbel_hard(alpha: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GDAS sampling: the one-hot Gumbel-max choice per row, with the gradient of the
    soft sample (straight-through). Returns ``(weights, index)``: ``weights`` is exactly
    one-hot in the forward pass."""
    soft = gumbel_softmax(alpha, tau)
    index = soft.argmax(dim=-1)
    hard = torch.zeros_like(soft).scatter_(-1, index.unsqueeze(-1), 1.0)
    return hard - soft.detach() + soft, index
