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

    from dnas_core.runstore import SEARCH_FILE

    # A query search scored by an evaluator (e.g. the NAS-Bench-201 table) searched for
    # the evaluator's task, not for the task the derived network is retrained on: its
    # record, and so the embedding that conditions later searches, describes that task.
    rd = run.run_dir
    scored = rd.read_json(SEARCH_FILE).get("task") if rd.exists(SEARCH_FILE) else None
    try:
        if isinstance(scored, dict) and scored.get("task") not in (None, run.task.name):
            features = task_features(descriptor=scored).tolist()  # another task: its descriptor only
        else:
            features = task_features(task=run.task, data=run.data).tolist()
    except Exception:  # noqa: BLE001 - a task without usable statistics still gets a record
        features = None
    write_record(run, result, task_features=features)
