"""A CSV logger: one row per epoch, for spreadsheets and quick plotting."""

from __future__ import annotations

import csv
import io
from typing import Any

from pydantic import Field

from dnas_core import Callback, ComponentConfig, hookimpl
from dnas_core.rundir import atomic_write_text


class CSVLoggerConfig(ComponentConfig):
    filename: str = Field("metrics.csv", pattern=r"^[A-Za-z0-9_.-]+\.csv$", description="file inside the run directory")


class CSVLogger(Callback):
    """Writes every epoch's scalar metrics (architecture weights excluded) to a CSV
    file, rewritten atomically after each epoch so that its columns are always the
    union of what has been logged."""

    name = "csv"
    description = "per-epoch metrics as CSV in the run directory"
    Config = CSVLoggerConfig

    def __init__(self, config: Any = None, **kw: Any):
        super().__init__(config, **kw)
        self.rows: list[dict[str, Any]] = []

    @hookimpl
    def dnas_run_start(self, run) -> None:
        # On a resumed run, start from what metrics.jsonl already holds.
        self.rows = [self._row(r) for r in run.run_dir.metrics()]

    @hookimpl
    def dnas_epoch_end(self, run, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        # A resumed stage replays the epochs after its last checkpoint: their old rows go
        # (metrics.jsonl drops them the same way), so no epoch appears twice.
        self.rows = [r for r in self.rows if not (r.get("stage") == stage and r.get("epoch", -1) >= epoch)]
        self.rows.append(self._row({"stage": stage, "epoch": epoch, **metrics}))
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(run.run_dir.file(self.config.filename), buf.getvalue())

    @staticmethod
    def _row(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if not k.startswith("arch/")}


@hookimpl
def dnas_register_callbacks():
    return [CSVLogger]
