"""ProxylessNAS (Cai et al., 2019): binarised paths with the binary-gate gradient.

Each forward pass activates sampled paths only. With ``paths: 1`` one candidate per
layer is sampled from ``p = softmax(alpha)`` and computed; its gate is 1 in value and
carries ``d g_s / d alpha_i = p_s (delta_is - p_i)``, the binary-gate estimator with one
path. With ``paths: 2`` (the paper's memory-saving variant) two candidates are sampled
without replacement, both are computed, one is active (gate 1) with probability given by
the softmax over the pair, and the gradient of every gate
``dL/dg_j = <dL/dy, o_j>`` reaches alpha through the pair's softmax:
``dL/dalpha_i = sum_j dL/dg_j q_j (delta_ij - q_i)``. Two-path mode needs a space that
computes zero-valued gates (supernet option ``active_paths``; the mobile space does).

The weight step trains one sampled path per layer. The architecture loss adds the
expected-latency regulariser ``latency_lambda * E[LAT] / LAT_0`` with ``E[LAT]`` under
``softmax(alpha)`` and ``LAT_0`` its value at the start of the search (so the weight is
free of units). With ``constraints.max_latency_ms`` the shared hinge penalty and the
latency-constrained derivation apply on top.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from dnas_core import MixWeights, hookimpl
from dnas_core import distributed as ddp
from dnas_core.space import Network

from ._hardware import LatencyAwareStrategy
from .differentiable import DifferentiableConfig


class ProxylessConfig(DifferentiableConfig):
    paths: Literal[1, 2] = Field(2, description="paths sampled per layer in the architecture step (1 or 2)")
    arch_lr: float = Field(6e-3, gt=0, description="architecture learning rate (Adam; ProxylessNAS: 6e-3)")
    arch_weight_decay: float = Field(0.0, ge=0)
    latency_lambda: float = Field(0.1, ge=0, description="weight of the expected-latency regulariser E[LAT]/LAT_0")


def _one_path(alpha: torch.Tensor) -> MixWeights:
    p = torch.softmax(alpha, dim=-1)
    # rank 0's draws on every rank of a data-parallel run: all take the same path
    index = ddp.from_rank_zero(torch.multinomial(p.detach(), 1)).squeeze(-1)
    hard = torch.zeros_like(p).scatter_(-1, index.unsqueeze(-1), 1.0)
    return MixWeights(hard - p.detach() + p, index)


def _two_paths(alpha: torch.Tensor) -> MixWeights:
    p = torch.softmax(alpha.detach(), dim=-1)
    pair = ddp.from_rank_zero(torch.multinomial(p, 2, replacement=False))
    mask = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, pair, True)
    q = torch.softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)
    active = ddp.from_rank_zero(torch.multinomial(q.detach(), 1))
    gate = torch.zeros_like(q).scatter_(-1, active, 1.0)
    return MixWeights(gate - q.detach() + q, active=mask)


class ProxylessNAS(LatencyAwareStrategy):
    """Binarised paths, binary-gate gradients, expected-latency regulariser."""

    name = "proxylessnas"
    description = "ProxylessNAS: sampled binary paths (1 or 2), binary-gate gradient, expected-latency loss"
    Config = ProxylessConfig
    samples_paths = True
    _lat0: float | None = None

    def supernet_options(self) -> dict[str, Any]:
        return {"active_paths": True} if self.config.paths == 2 else {}

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        if self.phase == "eval":
            index = alpha.argmax(dim=-1)
            return MixWeights(torch.zeros_like(alpha).scatter_(-1, index.unsqueeze(-1), 1.0), index)
        if self.phase == "arch" and self.config.paths == 2:
            return _two_paths(alpha)
        return _one_path(alpha)

    def arch_regularizer(self, supernet) -> torch.Tensor | None:
        if not self.config.latency_lambda:
            return None
        net = self._run_net
        expected = self.expected_latency(net).of_probabilities(net)
        if self._lat0 is None:
            self._lat0 = float(expected.detach())
        return self.config.latency_lambda * expected / self._lat0

    def arch_loss(self, net: Network, x: Any, y: torch.Tensor, loss_fn, backend) -> torch.Tensor:
        self._run_net = net
        return super().arch_loss(net, x, y, loss_fn, backend)

    def extra_state(self) -> dict[str, Any]:
        return {"lat0": self._lat0}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._lat0 = state.get("lat0")


@hookimpl
def dnas_register_strategies():
    return [ProxylessNAS]
