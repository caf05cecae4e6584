"""The TensorBoard and MLflow callbacks, for real, with local file/SQLite stores.

Skipped when the optional package is not installed (`pip install 'dnas[tensorboard]'`
/ `pip install 'dnas[mlflow]'`)."""

from __future__ import annotations

import sys

import pytest

from dnas_core import UsageError, get_plugin_manager
from dnas_core.orchestrator import Orchestrator

from conftest import MINI_MANIFEST


def test_tensorboard_event_files(finished_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(finished_run / "tensorboard"), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("search/train_loss")] == [0, 1]
    assert [e.step for e in acc.Scalars("retrain/train_loss")] == [0, 1]
    assert "test/accuracy" in tags["scalars"]
    assert "arch/cell/1<-0" in tags["histograms"] and len(acc.Histograms("arch/cell/1<-0")) == 2
    images = acc.Images("arch/cell")
    assert len(images) == 2 and images[0].width == 5 * 12 and images[0].height == 6 * 12


def test_mlflow_run_params_metrics_artifacts(finished_run):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{finished_run.parent}/mlflow.db")
    exp = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.epochs"] == "2" and run.data.params["task.type"] == "digits"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "search/train_loss")] == [0, 1]
    assert "test/accuracy" in run.data.metrics and "arch/cell/1_from_0/skip_connect" in run.data.metrics
    assert run.data.tags["dnas.genotype"].startswith("|")
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "result.json", "genotype.json", "plots"} <= names


def test_mlflow_nested_under_an_active_parent(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    try:
        orch = Orchestrator.new(MINI_MANIFEST, [f"callbacks=[{{type: mlflow, tracking_uri: '{uri}', experiment: nest}}]"],
                                tmp_path / "run")
        (cb,) = orch.callbacks
        mlflow.set_experiment("nest")
        with mlflow.start_run(run_name="study") as parent:
            cb.dnas_run_start(run=orch.ctx)
            cb.dnas_epoch_end(run=orch.ctx, stage="search", epoch=0, metrics={"train_loss": 1.5, "arch/c/1<-0/op": 0.2})
            cb.dnas_run_end(run=orch.ctx, status="failed", result={"error": "RunFailed: boom"})
        child = cb.client.get_run(cb.run_id)
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FAILED" and child.data.tags["dnas.error"] == "RunFailed: boom"
        assert child.data.metrics["search/train_loss"] == 1.5
        # a trial process gets its parent from the environment (same store: one migration)
        with monkeypatch.context() as m:
            m.setenv("DNAS_MLFLOW_PARENT_RUN_ID", parent.info.run_id)
            orch2 = Orchestrator.new(MINI_MANIFEST, [f"callbacks=[{{type: mlflow, tracking_uri: '{uri}', experiment: nest}}]"],
                                     tmp_path / "run2")
            (cb2,) = orch2.callbacks
            cb2.dnas_run_start(run=orch2.ctx)
            assert cb2.client.get_run(cb2.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("name,module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")])
def test_missing_extra_names_the_pip_install(name, module, monkeypatch, pm):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(UsageError, match=rf"pip install 'dnas\[{name}\]'"):
        pm.registries.callbacks.create(name, {})


def test_a_logger_that_cannot_be_built_leaves_a_failed_run_not_a_half_made_one(tmp_path, monkeypatch, pm):
    """The run folder is created before the components; one that cannot be built (a
    logger whose package is missing) must leave status.json saying why, as any other
    start-up failure does, not a folder that `dnas show` calls 'unknown'."""
    import yaml

    from dnas_core.orchestrator import Orchestrator
    from dnas_core.rundir import RunDir
    from dnas_core.testing import tiny_manifest

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({**tiny_manifest(), "callbacks": [{"type": "tensorboard"}]}))
    with pytest.raises(UsageError, match="tensorboard"):
        Orchestrator.new(m, [], tmp_path / "run", pm)
    status = RunDir(tmp_path / "run").status()
    assert status["status"] == "failed" and "pip install 'dnas[tensorboard]'" in status["error"]
