"""A test-only strategy plugin that makes one rank of a data-parallel search fail:
``strategy: {type: darts_rank_fault, fail_rank: R, mode: raise | abort}`` is first-order
DARTS whose rank ``R`` fails as search epoch 1 starts, with an error the run records
(``raise``) or by dying at once (``abort``), as on a crash inside a collective.
Installed for subprocesses with ``install(folder)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from dnas_plugins.strategies.darts import DARTS, DARTSConfig

from dnas_core import distributed as ddp
from dnas_core import hookimpl
from dnas_core.errors import RunFailed
from dnas_core.testing.faults import install_plugin_module


class RankFaultConfig(DARTSConfig):
    fail_rank: int = 1
    mode: Literal["raise", "abort"] = "raise"


class DARTSRankFault(DARTS):
    name = "darts_rank_fault"
    description = "DARTS whose chosen rank fails in search epoch 1 (dnas's own tests)"
    Config = RankFaultConfig

    def on_epoch_start(self, epoch, supernet) -> None:
        super().on_epoch_start(epoch, supernet)
        if epoch == 1 and ddp.rank() == self.config.fail_rank:
            if self.config.mode == "abort":
                os.abort()
            raise RunFailed(f"injected failure on rank {self.config.fail_rank}")


@hookimpl
def dnas_register_strategies():
    return [DARTSRankFault]


def install(folder: Path) -> Path:
    """This module as a plugin for the subprocesses that get ``folder`` on PYTHONPATH."""
    return install_plugin_module(__file__, folder, "rank_fault_test")
