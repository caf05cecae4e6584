"""The run-store plugin: when a run completes, write its ``runstore.json`` record (task
descriptor and statistics features, genotypes evaluated with their scores, the final
architecture and its test metrics) so that later runs can name it in
``extends_runs:`` (see :mod:`dnas_core.runstore`)."""

from __future__ import annotations

from typing import Any

from dnas_core import hookimpl
from dnas_core.runstore import write_record


@hookimpl
def dnas_run_end(run: Any, status: str, result: dict[str, Any]) -> None:
    if status != "completed":
        return
    from dnas_plugins.generators.task_embedding import task_features

    try:
        features = task_features(task=run.task, data=run.data).tolist()
    except Exception:  # noqa: BLE001 - a task without usable statistics still gets a record
        features = None
    write_record(run, result, task_features=features)
