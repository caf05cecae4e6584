"""MLflow logger: parameters, per-epoch metrics, artifacts; nested runs under a parent.

Optional extra: ``pip install 'dnas[mlflow]'``. The package is imported only when a
manifest lists ``callbacks: [{type: mlflow}]``.

* **Params**: the resolved manifest flattened to dotted keys (``strategy.epochs``).
* **Metrics**: every scalar of every epoch as ``<stage>/<metric>`` at step = epoch,
  architecture weights as ``arch/<tensor>/<edge>/<op>`` (``arch_weights: false`` turns
  those off), then ``test/<metric>`` and ``test/latency_ms``.
* **Artifacts** (``log_artifacts``): report.html, report.md, result.json,
  genotype.json, manifest.yaml, metrics.jsonl, export.json and plots/.
* **Nesting**: a dnas run is logged as a nested child of ``parent_run_id``, else of the
  run named by ``$DNAS_MLFLOW_PARENT_RUN_ID`` (how a study driver hands its parent run
  to trial processes), else of the MLflow run active in this process (for example a
  tuning driver started a parent run for an Optuna study); otherwise top-level.
* **Status**: FINISHED for a completed run, FAILED (with the error as a tag) otherwise.

``tracking_uri`` null uses MLflow's own default (``MLFLOW_TRACKING_URI`` if set); a
local store such as ``file:/path/mlruns`` or ``sqlite:///path/mlflow.db`` needs no
server.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from pydantic import Field

from dnas_core import Callback, ComponentConfig, hookimpl

from ._optional import require

#: Environment variable naming the parent MLflow run (for trial processes of a study).
PARENT_ENV = "DNAS_MLFLOW_PARENT_RUN_ID"
ARTIFACTS = ("report.html", "report.md", "result.json", "genotype.json", "manifest.yaml", "metrics.jsonl", "export.json")


class MLflowConfig(ComponentConfig):
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (null: MLflow's default)")
    experiment: str = Field("dnas", min_length=1, description="experiment name (created when missing)")
    run_name: Optional[str] = Field(None, description="MLflow run name (default: the manifest's name)")
    arch_weights: bool = Field(True, description="log the architecture weights of every search epoch")
    log_artifacts: bool = Field(True, description="upload the report, result and plots at the end")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags of the MLflow run")
    parent_run_id: Optional[str] = Field(
        None, description="log as a nested run of this MLflow run (default: $DNAS_MLFLOW_PARENT_RUN_ID, else the "
        "run active in this process, else none)")


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists keep their index."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = str(obj)[:6000]
    return out


class MLflowLogger(Callback):
    """Logs a dnas run to MLflow (a nested run when a parent run is active)."""

    name = "mlflow"
    description = "MLflow tracking: params, metrics, artifacts; nested runs under an active parent"
    Config = MLflowConfig

    def __init__(self, config: Any = None, **kw: Any):
        super().__init__(config, **kw)
        self.mlflow = require("mlflow", "mlflow")
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self.mlflow.tracking.MlflowClient(tracking_uri=self.config.tracking_uri)
        return self._client

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 900):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 900])

    @hookimpl
    def dnas_run_start(self, run) -> None:
        mlflow, cfg = self.mlflow, self.config
        exp = self.client.get_experiment_by_name(cfg.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(cfg.experiment)
        parent_id = cfg.parent_run_id or os.environ.get(PARENT_ENV) or None
        if parent_id is None and mlflow.active_run() is not None:
            parent_id = mlflow.active_run().info.run_id
        tags = {"dnas.run_dir": str(run.run_dir.path.resolve()), "dnas.task": run.task.name,
                "dnas.space": run.space.name, "dnas.strategy": run.strategy.name, **cfg.tags}
        if parent_id is not None:
            self.parent_run_id = parent_id
            tags["mlflow.parentRunId"] = parent_id
        found = []
        if run.resumed:  # continue the MLflow run of the interrupted dnas run
            quoted = tags["dnas.run_dir"].replace("'", "\\'")
            found = self.client.search_runs([exp_id], filter_string=f"tags.`dnas.run_dir` = '{quoted}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            created = self.client.create_run(exp_id, run_name=cfg.run_name or run.manifest.name, tags=tags)
            self.run_id = created.info.run_id
        run.state["mlflow_run_id"] = self.run_id
        params = flatten(run.manifest.model_dump(mode="json"))
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[i:i + 90])

    @hookimpl
    def dnas_epoch_end(self, run, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        values = {}
        for k, v in metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if k.startswith("arch/"):
                if self.config.arch_weights:
                    values[k.replace("<-", "_from_")] = v
            else:
                values[f"{stage}/{k}"] = v
        if values:
            self._log_metrics(values, epoch)

    @hookimpl
    def dnas_search_end(self, run, genotype, summary) -> None:
        self.client.set_tag(self.run_id, "dnas.genotype", run.space.format(genotype)[:5000])
        self.client.set_tag(self.run_id, "dnas.genotype_hash", genotype.hash())

    @hookimpl
    def dnas_run_end(self, run, status: str, result: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        final = {f"test/{k}": v for k, v in (result.get("test_metrics") or {}).items() if isinstance(v, (int, float))}
        if result.get("latency_ms") is not None:
            final["test/latency_ms"] = result["latency_ms"]
        if result.get("params") is not None:
            final["params"] = result["params"]
        if final:
            self._log_metrics(final, 0)
        if self.config.log_artifacts:
            rd = run.run_dir
            for name in ARTIFACTS:
                if rd.exists(name):
                    self.client.log_artifact(self.run_id, str(rd.file(name)))
            if rd.exists("plots"):
                self.client.log_artifacts(self.run_id, str(rd.file("plots")), artifact_path="plots")
        if status != "completed":
            self.client.set_tag(self.run_id, "dnas.error", str(result.get("error", ""))[:5000])
        mlflow_status = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, status=mlflow_status)


@hookimpl
def dnas_register_callbacks():
    return [MLflowLogger]
