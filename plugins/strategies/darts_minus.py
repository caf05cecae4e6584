"""DARTS- (Chu et al., 2021): an auxiliary skip connection on every edge, with a
weight that decays from ``aux_start`` (1) to 0 over the search.

The auxiliary skip gives the residual path that makes skip connections attractive
for free, so the searched skip op has to earn its weight on its own merit. Since the
skip op is the identity, an auxiliary skip of weight ``b`` on an edge is the same as
adding ``b`` to that edge's skip weight after the softmax: no change to the space is
needed, and the logits' gradients are those of DARTS with the extra path. At the end
``b = 0``: the supernet is plain DARTS again.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from dnas_core import MixWeights, hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class DARTSMinusConfig(DifferentiableConfig):
    aux_start: float = Field(1.0, ge=0, description="weight of the auxiliary skip at the first epoch")
    aux_schedule: Literal["linear", "cosine"] = Field("linear", description="decay of the auxiliary skip to 0")
    skip_op: str = Field("skip_connect", description="name of the space's skip operation (column of the logits)")


class DARTSMinus(DifferentiableStrategy):
    """DARTS with a decaying auxiliary skip connection."""

    name = "darts_minus"
    description = "DARTS-: auxiliary skip connection with a weight decaying to 0"
    Config = DARTSMinusConfig
    aux: float = 1.0
    _skip_cols: dict[int, int] | None = None  # logits width -> skip column

    def on_epoch_start(self, epoch, supernet) -> None:
        import math

        cfg = self.config
        t = epoch / max(1, cfg.epochs - 1)
        self.aux = cfg.aux_start * ((1 - t) if cfg.aux_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * t)))
        if self._skip_cols is None:
            self._skip_cols = {}
            for (name, _, cols), p in zip(supernet.arch_labels(), supernet.arch_parameters(), strict=True):
                if cfg.skip_op in cols:
                    self._skip_cols[p.shape[-1]] = list(cols).index(cfg.skip_op)
            if not self._skip_cols:
                from dnas_core import IncompatibleError

                raise IncompatibleError(f"darts_minus: the space has no {cfg.skip_op!r} operation to add an "
                                        "auxiliary skip to (set strategy.skip_op)")

    def on_selection_start(self, supernet) -> None:
        # The derived cell has no auxiliary skip, so perturbation selection measures the
        # supernet without it. After a full search it has already decayed to 0; after an
        # early stop (stop_at_skips) it has not, and switching the skip column off would
        # also switch the auxiliary path off.
        self.aux = 0.0

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        w = torch.softmax(alpha, dim=-1)
        col = (self._skip_cols or {}).get(alpha.shape[-1])
        if self.aux and col is not None:
            bonus = torch.zeros_like(w)
            bonus[..., col] = self.aux
            w = w + bonus
        return MixWeights(w)

    def epoch_metrics(self, supernet) -> dict[str, float]:
        return {"aux_skip_weight": self.aux}


@hookimpl
def dnas_register_strategies():
    return [DARTSMinus]
