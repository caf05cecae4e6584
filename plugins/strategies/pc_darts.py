"""PC-DARTS (Xu et al., 2020): partial channel connections and edge normalisation.

Only ``1/K`` of each edge's channels go through the mixed operation (the rest bypass
it and are shuffled back in), which cuts the supernet's memory and compute by about K;
the edge-normalisation weights ``beta`` stabilise the search against the sampling of
channels. The space builds the partial supernet (``build_supernet(task,
partial_channels=K)``); a space without that option is rejected with a clear error.
The training loop is first-order DARTS.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dnas_core import hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class PCDARTSConfig(DifferentiableConfig):
    partial_channels: int = Field(4, ge=1, description="K: 1/K of the channels are searched on every edge (PC-DARTS: 4)")
    edge_normalization: bool = Field(True, description="learn softmax-normalised weights of the incoming edges of each node")
    arch_lr: float = Field(6e-4, gt=0, description="architecture learning rate (PC-DARTS: 6e-4)")
    warmup_epochs: int = Field(0, ge=0, description="weight-only epochs first (PC-DARTS uses 15 of 50 on CIFAR)")


class PCDARTS(DifferentiableStrategy):
    """Partially-connected DARTS."""

    name = "pc_darts"
    description = "PC-DARTS: partial channel connections (1/K) with edge normalisation"
    Config = PCDARTSConfig

    def supernet_options(self) -> dict[str, Any]:
        cfg = self.config
        return {"partial_channels": cfg.partial_channels, "edge_normalization": cfg.edge_normalization}


@hookimpl
def dnas_register_strategies():
    return [PCDARTS]
