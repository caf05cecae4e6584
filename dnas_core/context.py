"""The run context: what every stage and strategy of one run can reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .backend import Backend
from .distributed import is_main
from .manifest import ManifestBase
from .plugin_manager import DnasPluginManager
from .progress import Progress, log
from .rundir import RunDir
from .space import SearchSpace
from .strategy import Strategy
from .task import Task, TaskData


@dataclass
class RunContext:
    """One run: the validated manifest, its components and its directory.

    Strategies use :meth:`save_checkpoint` / :meth:`load_checkpoint` for resumable
    state, :meth:`log_epoch` for per-epoch metrics (written to ``metrics.jsonl``,
    shown in the progress output and passed to the ``dnas_epoch_end`` hook) and
    :meth:`progress` for a progress bar.
    """

    manifest: ManifestBase
    run_dir: RunDir
    pm: DnasPluginManager
    task: Task
    space: SearchSpace
    strategy: Strategy
    backend: Backend
    resumed: bool = False
    #: Errors raised by observer plugins; reported in the run's result, never fatal.
    plugin_errors: list[str] = field(default_factory=list)
    #: Free-form state that stages hand to later stages (e.g. the search summary).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.manifest.seed

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def data(self) -> TaskData:
        return self.task.data(self.seed)

    # -- checkpoints ----------------------------------------------------------------
    def save_checkpoint(self, stage: str, state: dict[str, Any]) -> None:
        self.run_dir.save_checkpoint(stage, state)

    def load_checkpoint(self, stage: str) -> dict[str, Any] | None:
        return self.run_dir.load_checkpoint(stage)

    # -- observation ----------------------------------------------------------------
    def notify(self, hook: str, **kwargs: Any) -> None:
        if not is_main():  # data-parallel followers are silent; rank 0 reports
            return
        for err in self.pm.notify(hook, run=self, **kwargs):
            self.plugin_errors.append(str(err))
            log(f"warning: {err}")

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, Any], progress: Progress | None = None) -> None:
        record = {"stage": stage, "epoch": epoch, **metrics}
        if self.resumed:
            # A killed process may have logged this epoch (or later ones) without
            # checkpointing it: the record written now replaces those.
            self.run_dir.truncate_metrics(stage, epoch)
        self.run_dir.append_metrics(record)
        if progress is not None:
            progress.end_epoch(epoch, {k: v for k, v in metrics.items() if not k.startswith("arch/")})
        self.notify("dnas_epoch_end", stage=stage, epoch=epoch, metrics=metrics)

    def progress(self, stage: str, epochs: int, steps_per_epoch: int, start_epoch: int = 0) -> Progress:
        return Progress(stage, epochs, steps_per_epoch, start_epoch=start_epoch)
