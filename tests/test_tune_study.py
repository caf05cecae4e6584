"""Studies end to end on real storages: pruning, resuming, retrying a killed worker's
trial, and several worker processes sharing one study (journal file, PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dnas_core import hookimpl
from dnas_core.errors import StopRun
from dnas_core.orchestrator import Orchestrator
from dnas_core.rundir import RunDir
from dnas_core.tune import make_storage, run_worker, tune
from dnas_core.tune_config import TuneConfig

ROOT = Path(__file__).resolve().parents[1]

# Trials of a second or two: 100 training / 100 validation digits, a 4-channel cell.
MANIFEST = {
    "name": "tiny",
    "seed": 0,
    "task": {"type": "digits", "val_fraction": 0.5, "limit_train": 200, "limit_test": 50},
    "space": {"type": "nb201", "C": 4, "N": 1, "retrain_C": 4, "retrain_N": 1},
    "strategy": {"type": "darts", "epochs": 2, "batch_size": 32},
    "train": {"epochs": 0},
    "backend": {"type": "cpu", "threads": 1},
    "export": {"type": "onnx"},
}
ARCH_LR = {"strategy.arch_lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}


def manifest(tmp_path: Path, **tune) -> Path:
    p = tmp_path / "tiny.yaml"
    data = {**MANIFEST, "output": {"root": str(tmp_path / "runs")},
            "tune": {"params": ARCH_LR, "pruner": {"type": "none"}, **tune}}
    p.write_text(yaml.safe_dump(data))
    return p


def load(store: str, name: str = "tiny") -> optuna.Study:
    cfg = TuneConfig.model_validate({"params": ARCH_LR})
    return optuna.load_study(study_name=name, storage=make_storage(store, cfg))


def search_epochs(run_dir: str | Path) -> list[int]:
    return [r["epoch"] for r in RunDir(run_dir).metrics() if r["stage"] == "search"]


def test_pruned_trials_stop_early_and_a_study_resumes(tmp_path, pm):
    # An impossible accuracy floor prunes every trial after its first search epoch.
    m = manifest(tmp_path, n_trials=2, pruner={"type": "threshold", "lower": 1.01, "n_warmup_steps": 0})
    sdir = tmp_path / "study"
    summary = tune(m, study_dir=str(sdir), report=False, pm=pm)
    assert summary["states"] == {"pruned": 2}
    study = load(str(sdir / "journal.log"))
    for t in study.trials:
        run_dir = t.user_attrs["run_dir"]
        assert Path(run_dir).parent == sdir / "trials"
        assert RunDir(run_dir).status()["status"] == "pruned"
        assert search_epochs(run_dir) == [0]  # stopped after epoch 0 of 2
        assert list(t.intermediate_values) == [0]
    # Starting again with a larger budget continues the same study.
    summary = tune(m, study_dir=str(sdir), n_trials=3, report=False, pm=pm)
    assert summary["trials"] == 3 and summary["states"] == {"pruned": 3}
    assert len({t.params["strategy.arch_lr"] for t in load(str(sdir / "journal.log")).trials}) == 3
    # trials.csv keeps final objectives apart from what a pruned trial last reported
    import csv

    from dnas_core.tune import study_summary, write_study_report

    study = load(str(sdir / "journal.log"))
    cfg = TuneConfig.model_validate(yaml.safe_load(m.read_text())["tune"])
    write_study_report(study, cfg, sdir, study_summary(study, cfg, str(sdir / "journal.log"), sdir))
    with open(sdir / "report" / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(r["state"] == "pruned" for r in rows)
    assert all(r[k] == "" for r in rows for k in r if k.startswith("value_"))
    assert all(float(r["last_intermediate"]) >= 0 for r in rows)


class _KillAtEpoch1:
    """Stands in for a worker killed mid-search: its run ends in epoch 1, after the
    checkpoint of epoch 0."""

    @hookimpl
    def dnas_epoch_end(self, run, stage, epoch, metrics):
        if stage == "search" and epoch == 1:
            raise StopRun("worker killed")


def _study_with_a_running_trial(tmp_path):
    """A one-trial study (journal storage, 1 s heartbeats) whose trial 0 a worker has
    started (RUNNING, its parameter drawn): (manifest, study dir, storage, study, trial,
    the drawn arch_lr)."""
    m = manifest(tmp_path, n_trials=1, heartbeat_s=1, grace_s=1)
    sdir = tmp_path / "study"
    store = str(sdir / "journal.log")
    cfg = TuneConfig.model_validate(yaml.safe_load(m.read_text())["tune"])
    study = optuna.create_study(storage=make_storage(store, cfg), study_name="tiny", direction="maximize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna: ask() outside optimize()
        trial = study.ask()
    lr = trial.suggest_float("strategy.arch_lr", 1e-4, 3e-2, log=True)
    return m, sdir, store, study, trial, lr


def test_killed_workers_trial_is_retried_and_resumes_its_run(tmp_path, pm):
    # The "killed" worker: trial 0 is running, its run stopped in search epoch 1 and its
    # heartbeat stopped long ago.
    m, sdir, store, study, trial, lr = _study_with_a_running_trial(tmp_path)
    run0 = sdir / "trials" / "trial-0000"
    killer = _KillAtEpoch1()
    pm.register(killer, name="test-killer")
    try:
        with pytest.raises(StopRun):
            Orchestrator.new(m, [f"strategy.arch_lr={lr!r}"], run0, pm).run()
    finally:
        pm.unregister(killer)
    study._storage.set_trial_system_attr(trial._trial_id, "dnas:heartbeat", time.time() - 60)
    assert RunDir(run0).load_checkpoint("search")["epoch"] == 0

    ran = run_worker(m, [], store, "tiny", sdir, n_trials=1, pm=pm)

    assert ran == 1
    trials = load(store).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.params == trials[0].params
    assert retry.user_attrs["run_dir"] == str(run0)  # the same run, resumed, not restarted
    assert RunDir(run0).status()["status"] == "completed"
    assert search_epochs(run0) == [0, 1]
    last = [r for r in RunDir(run0).metrics() if r["stage"] == "search"][-1]
    assert retry.value == pytest.approx(last["val_accuracy"])


def _tune_stopped_by(plugin, tmp_path, pm):
    """A one-trial study whose first start ``plugin`` stops with a KeyboardInterrupt:
    the manifest and the study folder."""
    m = manifest(tmp_path, n_trials=1)
    sdir = tmp_path / "study"
    pm.register(plugin, name=f"test-stop:{id(plugin)}")
    try:
        with pytest.raises(KeyboardInterrupt):
            tune(m, study_dir=str(sdir), report=False, pm=pm)
    finally:
        pm.unregister(plugin)
    return m, sdir


class _CtrlCAtEpoch1:
    """A user pressing Ctrl-C during search epoch 1 of the first trial."""

    @hookimpl
    def dnas_epoch_end(self, run, stage, epoch, metrics):
        if stage == "search" and epoch == 1:
            raise KeyboardInterrupt


def test_a_trial_interrupted_with_ctrl_c_is_retried_by_the_next_start(tmp_path, pm):
    """Optuna marks an interrupted trial FAIL, which used to cost a trial of the budget
    and abandon its checkpointed run; running the same command again now finishes it."""
    m, sdir = _tune_stopped_by(_CtrlCAtEpoch1(), tmp_path, pm)
    run0 = sdir / "trials" / "trial-0000"
    assert RunDir(run0).load_checkpoint("search")["epoch"] == 0

    summary = tune(m, study_dir=str(sdir), report=False, pm=pm)

    trials = load(str(sdir / "journal.log")).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert summary["trials"] == 2 and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].user_attrs["run_dir"] == str(run0)  # resumed, not restarted
    assert search_epochs(run0) == [0, 1]
    # a third start has nothing left to do: the budget of one trial is used
    assert tune(m, study_dir=str(sdir), report=False, pm=pm)["trials"] == 2


class _CtrlCAtRunEnd:
    """A Ctrl-C while the first trial's finished run announces its end."""

    @hookimpl
    def dnas_run_end(self, run, status, result):
        if status == "completed":
            raise KeyboardInterrupt


def test_a_trial_stopped_after_its_run_completed_is_not_trained_again(tmp_path, pm):
    """Its retry reads the finished run's result instead of training a new run."""
    m, sdir = _tune_stopped_by(_CtrlCAtRunEnd(), tmp_path, pm)
    run0 = sdir / "trials" / "trial-0000"
    assert RunDir(run0).status()["status"] == "completed"

    tune(m, study_dir=str(sdir), report=False, pm=pm)

    trials = load(str(sdir / "journal.log")).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["run_dir"] == str(run0)
    assert not (sdir / "trials" / "trial-0001").exists()  # nothing trained again
    assert trials[1].value is not None and trials[1].user_attrs["values"]


def test_a_running_trial_of_a_dead_local_worker_is_failed_and_retried(tmp_path):
    from dnas_core.tune import recover_interrupted

    m = manifest(tmp_path, n_trials=1)
    cfg = TuneConfig.model_validate(yaml.safe_load(m.read_text())["tune"])
    store = str(tmp_path / "journal.log")
    study = optuna.create_study(storage=make_storage(store, cfg), study_name="tiny", direction="maximize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna: ask() outside optimize()
        dead = study.ask()
        alive = study.ask()
    for t in (dead, alive):
        t.suggest_float("strategy.arch_lr", 1e-4, 3e-2, log=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that has exited (SIGTERM / SIGKILL leave the trial RUNNING like this)
    dead.set_user_attr("worker", f"{os.uname().nodename}:{gone.pid}")
    alive.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")

    assert recover_interrupted(study, cfg) == [dead.number]

    trials = load(store).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].system_attrs["failed_trial"] == dead.number
    assert recover_interrupted(study, cfg) == []  # queued once


def _two_workers(tmp_path: Path, storage: str | None) -> None:
    m = manifest(tmp_path, n_trials=2)
    sdir = tmp_path / "study"
    cmd = [sys.executable, "-m", "dnas_core", "tune", str(m), "--study-dir", str(sdir), "--workers", "2"]
    if storage:
        cmd += ["--storage", storage, "--study", f"tiny-{os.getpid()}-{time.time_ns()}"]
    env = {**os.environ, "DNAS_PROGRESS": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    study = load(storage or str(sdir / "journal.log"), summary["study"])
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    # Both processes worked on the one study; together their trials are the study.
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2, workers
    assert 2 <= len(done) <= 3  # the budget, plus at most one trial started in the same instant
    assert len(trials) == len(done)
    for i in range(2):
        log = (sdir / "logs" / f"worker-{i}.log").read_text()
        assert "Traceback" not in log
    for t in done:
        assert RunDir(t.user_attrs["run_dir"]).status()["status"] == "completed"
        assert t.value == pytest.approx(t.user_attrs["values"]["search.val_accuracy"])
    assert (sdir / "report" / "report.md").is_file()
    assert any(p.name.startswith("history_") for p in (sdir / "report" / "plots").iterdir())


def test_two_worker_processes_share_a_journal_study(tmp_path):
    _two_workers(tmp_path, None)


def test_two_worker_processes_share_a_postgresql_study(tmp_path):
    url = os.environ.get("DNAS_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DNAS_TEST_POSTGRES_URL is not set (start a server with scripts/start_postgres.sh)")
    _two_workers(tmp_path, url)


def test_recovery_respects_max_retry():
    from dnas_core.tune import _INTERRUPTED_ATTR, recover_interrupted

    study = optuna.create_study(direction="maximize")
    dist = {"strategy.arch_lr": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)}
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"strategy.arch_lr": 1e-3}, distributions=dist,
                                        system_attrs={_INTERRUPTED_ATTR: 0}))
    none_left = TuneConfig.model_validate({"params": ARCH_LR, "max_retry": 0})
    assert recover_interrupted(study, none_left) == [] and len(study.trials) == 1  # not claimed, not queued
    assert recover_interrupted(study, TuneConfig.model_validate({"params": ARCH_LR})) == [0]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]


@pytest.mark.parametrize("still_beating", [False, True], ids=["killed", "alive-elsewhere"])
def test_restarting_right_after_a_kill_retries_the_trial_once_its_heartbeat_lapses(still_beating, tmp_path):
    """A trial whose worker on this host is gone, with a heartbeat only a moment old (the
    study restarted right after the kill): the restart waits out one heartbeat interval
    and retries it, instead of counting it as running and stopping with nothing done.
    A trial that keeps beating (its worker lives in another PID namespace) is left alone."""
    import threading

    from dnas_core.tune import _HEARTBEAT_ATTR, recover_interrupted

    cfg = TuneConfig.model_validate({"params": ARCH_LR, "heartbeat_s": 1, "grace_s": 60})
    study = optuna.create_study(storage=make_storage(str(tmp_path / "journal.log"), cfg), study_name="tiny",
                                direction="maximize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # optuna: ask() outside optimize()
        trial = study.ask()
    trial.suggest_float("strategy.arch_lr", 1e-4, 3e-2, log=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    trial.set_user_attr("worker", f"{os.uname().nodename}:{gone.pid}")
    storage = study._storage
    storage.set_trial_system_attr(trial._trial_id, _HEARTBEAT_ATTR, time.time())
    stop = threading.Event()

    def beat():
        while not stop.wait(0.2):
            storage.set_trial_system_attr(trial._trial_id, _HEARTBEAT_ATTR, time.time())

    beater = threading.Thread(target=beat, daemon=True)
    if still_beating:
        beater.start()
    t0 = time.monotonic()
    try:
        again = recover_interrupted(study, cfg)
    finally:
        stop.set()
    waited = time.monotonic() - t0
    states = [t.state for t in study.get_trials(deepcopy=False)]
    if still_beating:
        assert again == [] and states == [TrialState.RUNNING]
    else:
        assert again == [0] and states == [TrialState.FAIL, TrialState.WAITING]
    assert waited < 5


def test_a_retry_of_a_retry_resumes_the_latest_run(tmp_path, pm):
    """Trial 0's worker died before creating its run; its retry, trial 1, created
    trial-0001 and was killed after a checkpoint; the next retry (trial 2) must resume
    trial-0001, not start a third run from scratch."""
    import warnings

    from dnas_core.tune import RetryCallback

    m, sdir, store, study, trial, _ = _study_with_a_running_trial(tmp_path)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # died without a run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryCallback(max_retry=3)(study, study._storage.get_trial(trial._trial_id))

    # the first retry runs, creates trial-0001, and is killed in search epoch 1
    killer = _KillAtEpoch1()
    pm.register(killer, name="test-killer")
    try:
        with pytest.raises(StopRun):
            run_worker(m, [], store, "tiny", sdir, n_trials=1, pm=pm)
    finally:
        pm.unregister(killer)
    run1 = sdir / "trials" / "trial-0001"
    assert RunDir(run1).load_checkpoint("search")["epoch"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryCallback(max_retry=3)(study, study._storage.get_trial(load(store).trials[1]._trial_id))

    run_worker(m, [], store, "tiny", sdir, n_trials=1, pm=pm)

    trials = load(store).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].user_attrs["run_dir"] == str(run1)  # resumed, not restarted
    assert not (sdir / "trials" / "trial-0002").exists()
    assert search_epochs(run1) == [0, 1]


def test_a_prune_metric_the_search_does_not_log_stops_the_study(tmp_path, pm):
    """A misspelt prune_metric would leave every trial unpruned without a word: the
    first trial fails, naming the field and what the search does log, and the worker
    stops."""
    from dnas_core.errors import UsageError

    m = manifest(tmp_path, n_trials=2, prune_metric="val_acc",
                 pruner={"type": "threshold", "lower": 1.01, "n_warmup_steps": 0})
    sdir = tmp_path / "study"
    with pytest.raises(UsageError, match=r"tune.prune_metric: the search logs no 'val_acc'.*val_accuracy"):
        tune(m, study_dir=str(sdir), report=False, pm=pm)
    trials = load(str(sdir / "journal.log")).trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert RunDir(trials[0].user_attrs["run_dir"]).status()["status"] == "failed"


def test_the_tune_overrides_set_up_the_study_as_they_do_the_trials(tmp_path, pm):
    """``tune.overrides`` reach the trials' manifests, and also what the study takes
    from the manifest: the base seed of ``vary_seed`` and Hyperband's epochs."""
    from dnas_core.tune import load_tune_config

    m = manifest(tmp_path, n_trials=2, vary_seed=True, overrides=["seed=100", "strategy.epochs=1", "name=renamed"])
    manifest_, _ = load_tune_config(m, [], pm)
    assert manifest_.seed == 100 and manifest_.strategy.epochs == 1
    assert manifest_.name == "tiny"  # the study's name (and folder) stay: a restarted study is found again
    sdir = tmp_path / "study"
    tune(m, study_dir=str(sdir), report=False, pm=pm)
    seeds = sorted(yaml.safe_load(p.read_text())["seed"] for p in (sdir / "manifests").glob("trial-*.yaml"))
    assert seeds == [100, 101]


def test_terminating_tune_with_workers_stops_them_and_marks_their_trials_interrupted(tmp_path):
    """SIGTERM to ``dnas tune --workers 2`` reaches its workers: none goes on training
    after it has gone, and their trials are marked interrupted, so that the next start
    retries them (resuming their runs)."""
    import signal

    from dnas_core.tune import _INTERRUPTED_ATTR

    m = manifest(tmp_path, n_trials=2)
    data = yaml.safe_load(m.read_text())
    data["strategy"]["epochs"] = 200
    m.write_text(yaml.safe_dump(data))
    sdir = tmp_path / "study"
    env = {**os.environ, "DNAS_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "dnas_core", "tune", str(m), "--study-dir", str(sdir),
                             "--workers", "2", "--no-report"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    runs = [sdir / "trials" / f"trial-{i:04d}" for i in range(2)]
    try:
        deadline = time.time() + 240
        while not all((r / "metrics.jsonl").exists() and RunDir(r).metrics() for r in runs):
            assert proc.poll() is None and time.time() < deadline, "the trials never logged an epoch"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    counts = [len(RunDir(r).metrics()) for r in runs]
    time.sleep(3)  # orphaned workers would go on logging epochs
    try:
        assert [len(RunDir(r).metrics()) for r in runs] == counts
    finally:
        with contextlib.suppress(ProcessLookupError):  # the workers share the launcher's process group
            os.killpg(proc.pid, signal.SIGKILL)
    trials = load(str(sdir / "journal.log")).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all(t.system_attrs.get(_INTERRUPTED_ATTR) == t.number for t in trials)
    assert all(RunDir(r).status()["status"] == "interrupted" for r in runs)


def test_an_objective_the_run_does_not_produce_stops_the_study_in_one_line(tmp_path):
    """A misspelt objective key is found when the first trial ends: the study stops
    with one error line (and Optuna's warning about the trial), no Python traceback."""
    m = manifest(tmp_path, n_trials=2, objectives=[{"metric": "search.val_acuracy"}])
    res = subprocess.run([sys.executable, "-m", "dnas_core", "tune", str(m), "--study-dir", str(tmp_path / "study"),
                          "--no-report"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "DNAS_PROGRESS": "0"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "tune.objectives: metric 'search.val_acuracy' is not produced by the run" in res.stderr
    assert len(load(str(tmp_path / "study" / "journal.log")).trials) == 1  # stopped after the first


def test_an_objective_of_no_known_form_is_refused_before_any_trial():
    with pytest.raises(ValueError, match=r"'val_accuracy' is neither <stage>.<key>"):
        TuneConfig.model_validate({"params": ARCH_LR, "objectives": [{"metric": "val_accuracy"}]})


def test_a_derived_prune_metric_the_strategy_does_not_log_leaves_the_trial_unpruned(tmp_path, pm):
    """The objective test.accuracy derives the prune metric val_accuracy, which a search
    without supernet evaluation does not log: the trials run unpruned (as before the
    check for a misspelt prune_metric), they do not stop the study."""
    m = manifest(tmp_path, n_trials=1, objectives=[{"metric": "test.accuracy"}],
                 pruner={"type": "threshold", "lower": 1.01, "n_warmup_steps": 0}, overrides=["strategy.eval_supernet=false"])
    summary = tune(m, study_dir=str(tmp_path / "study"), report=False, pm=pm)
    assert summary["states"] == {"complete": 1}


def test_a_derived_prune_metric_missing_during_warm_up_still_prunes_afterwards(tmp_path, pm):
    """search.arch_loss is not logged in warm-up epochs (no architecture steps): the
    trial is pruned on the first epoch that logs it, not left unpruned."""
    m = manifest(tmp_path, n_trials=1, objectives=[{"metric": "search.arch_loss", "direction": "minimize"}],
                 pruner={"type": "threshold", "upper": -1.0, "n_warmup_steps": 0},
                 overrides=["strategy.warmup_epochs=1"])
    summary = tune(m, study_dir=str(tmp_path / "study"), report=False, pm=pm)
    assert summary["states"] == {"pruned": 1}
    trial = load(str(tmp_path / "study" / "journal.log")).trials[0]
    assert list(trial.intermediate_values) == [1]  # epoch 0 was warm-up
