"""``dnas tune``: Optuna studies over a manifest's hyperparameters.

Every trial is an ordinary run (the orchestrator with dotted overrides drawn by the
sampler) in its own run directory ``<study dir>/trials/trial-NNNN``; the trial's
``run_dir`` user attribute links the two. While the search stage trains, its
per-epoch validation metric is reported to the trial; when the pruner says so the run
stops (status ``pruned``) and the trial is marked pruned.

Storage: by default an Optuna journal file in the study directory (no server; safe
for several local worker processes), or any Optuna RDB URL (PostgreSQL, MySQL,
SQLite) for workers on several machines. Running trials send heartbeats; a trial
whose worker was killed is marked failed after the grace period and retried
(Optuna's ``RetryHeartbeatStaleTrialCallback``), resuming its run directory from
the last checkpoint. Starting ``dnas tune`` again on the same storage and study name
continues the study.

Follow one study top to bottom in :func:`tune`; a worker's loop is
:func:`run_worker`; one trial is :meth:`_Objective.__call__`.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import DnasError, RunFailed, StopRun, UsageError
from .manifest import ManifestBase, apply_overrides, load_manifest, read_yaml, validate_manifest
from .markers import hookimpl
from .plugin_manager import DnasPluginManager, get_plugin_manager
from .progress import log
from .rundir import RunDir, atomic_write_json, atomic_write_text
from .seeding import derive_seed
from .tune_config import RESULT_FIELDS, CategoricalParam, FloatParam, IntParam, TuneConfig

try:  # optuna is a dependency of dnas, but keep `import dnas_core` free of it
    import optuna
    from optuna.storages import BaseStorage, JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import FrozenTrial, TrialState
except ImportError as _exc:  # pragma: no cover
    raise UsageError("dnas tune needs optuna: pip install 'optuna>=4.0'") from _exc

# Optuna 4.9 renamed the retry callback and the RDB storage's argument for it.
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
_STALE_KW = ("heartbeat_stale_trial_callback"
             if "heartbeat_stale_trial_callback" in optuna.storages.RDBStorage.__init__.__code__.co_varnames
             else "failed_trial_callback")

#: Trial states that use up the budget of a study (see :func:`budget_used`).
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
_HEARTBEAT_ATTR = "dnas:heartbeat"
#: Set on a trial whose run was interrupted (Ctrl-C) to that trial's own number: Optuna
#: marks it FAIL, and the next start of the study retries it (see :func:`recover_interrupted`).
_INTERRUPTED_ATTR = "dnas:interrupted"


class TrialPruned(StopRun):
    """The pruner stopped this trial's run (becomes :class:`optuna.TrialPruned`)."""


# --------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal-file storage with the heartbeat that only its RDB storage has.

    A running trial's heartbeat is a system attribute holding the wall time of its
    last beat; a trial whose last beat (or start) is older than ``grace_period``
    seconds is stale. Workers on one machine share its clock, which is all a journal
    file on a local disk needs.
    """

    def __init__(self, path: str | Path, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 heartbeat_stale_trial_callback: Any = None):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(str(path)))
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period or (3 * heartbeat_interval if heartbeat_interval else None)
        self._stale_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the trial finished between two beats

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self._grace_period is None:
            return []
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(_HEARTBEAT_ATTR)
            if last is None and t.datetime_start is not None:
                last = t.datetime_start.timestamp()
            if last is not None and now - float(last) > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def is_rdb_url(storage: str) -> bool:
    return "://" in storage


def make_storage(storage: str, cfg: TuneConfig) -> BaseStorage:
    """An Optuna storage with heartbeats and retry of killed workers' trials.

    ``storage`` is an RDB URL (``postgresql://user@host:port/db``, ``sqlite:///f.db``)
    or the path of a journal file (optionally written ``journal:PATH``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        retry = RetryCallback(max_retry=cfg.max_retry)
    grace = cfg.grace_s or 3 * cfg.heartbeat_s
    if is_rdb_url(storage):
        storage = _postgres_driver(storage)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage, heartbeat_interval=cfg.heartbeat_s, grace_period=grace,
                    engine_kwargs={"pool_pre_ping": True}, **{_STALE_KW: retry},
                )
        except ImportError as exc:
            raise UsageError(f"storage {_redact(storage)}: the database driver is missing ({exc}); "
                             "for PostgreSQL: pip install psycopg2-binary") from None
        except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds
            raise UsageError(f"storage {_redact(storage)}: cannot connect: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    path = storage[len("journal:"):] if storage.startswith("journal:") else storage
    return HeartbeatJournalStorage(path, cfg.heartbeat_s, grace, retry)


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; use psycopg2 when
    only that driver is installed."""
    import importlib.util

    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


# --------------------------------------------------------------------------------------
# Sampler, pruner, parameters
# --------------------------------------------------------------------------------------


def make_sampler(cfg: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    s = cfg.sampler
    kind = s.type
    if kind == "auto":
        kind = "tpe" if len(cfg.objectives) == 1 else "nsga2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, multivariate=True,
                                              constant_liar=True)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if kind == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)


def make_pruner(cfg: TuneConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=max(max_epochs, p.min_resource),
                                              reduction_factor=p.reduction_factor)
    if p.type == "threshold":
        return optuna.pruners.ThresholdPruner(lower=p.lower, upper=p.upper, n_warmup_steps=p.n_warmup_steps)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, cfg: TuneConfig) -> dict[str, Any]:
    """Draw every parameter of ``cfg.params`` for ``trial``."""
    out: dict[str, Any] = {}
    for key, spec in cfg.params.items():
        if isinstance(spec, FloatParam):
            out[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, IntParam):
            out[key] = trial.suggest_int(key, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, CategoricalParam):
            out[key] = trial.suggest_categorical(key, spec.choices)
    return out


def set_path(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of manifest ``data`` with the dotted ``key`` set to ``value`` (the value
    is placed as is, never re-parsed from text, so ``"0"`` stays a string)."""
    import copy

    out = copy.deepcopy(data)
    parts = key.split(".")
    node: Any = out
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if not isinstance(node.get(part), (dict, list)):
            if node.get(part) is not None:
                raise UsageError(f"tune.params.{key}: {'.'.join(parts[: i + 1])} is not a section")
            node[part] = {}
        node = node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return out


def trial_manifest(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    for key, value in params.items():
        base = set_path(base, key, value)
    return base


# --------------------------------------------------------------------------------------
# Objective values from a finished run
# --------------------------------------------------------------------------------------


def run_values(run_dir: Path, result: dict[str, Any]) -> dict[str, float]:
    """Every value an objective may name, from a finished run directory."""
    values: dict[str, float] = {}
    last: dict[str, dict[str, Any]] = {}
    for rec in RunDir(run_dir).metrics():
        last[str(rec.get("stage"))] = rec
    for stage, rec in last.items():
        for k, v in rec.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("arch/"):
                values[f"{stage}.{k}"] = float(v)
    for k, v in (result.get("test_metrics") or {}).items():
        if isinstance(v, (int, float)):
            values[f"test.{k}"] = float(v)
    for k in RESULT_FIELDS:
        if isinstance(result.get(k), (int, float)):
            values[k] = float(result[k])
    return values


def objective_values(cfg: TuneConfig, values: dict[str, float]) -> list[float]:
    out = []
    for obj in cfg.objectives:
        if obj.metric not in values:
            known = ", ".join(sorted(values)) or "none"
            raise UsageError(f"tune.objectives: metric {obj.metric!r} is not produced by the run (available: {known})")
        out.append(values[obj.metric])
    return out


# --------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------


class PruneMetricMissing(StopRun):
    """The search logs no metric of the name the pruner watches: a configuration error
    that ends the trial and stops the worker (every trial would run unpruned)."""


class PruningReporter:
    """Registered as a plugin for one trial's run: reports the search stage's
    per-epoch metric to the trial and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str | None, multi_objective: bool, cfg: TuneConfig | None = None):
        self.trial = trial
        self.metric = metric
        self.enabled = not multi_objective and metric is not None  # None: no per-epoch counterpart
        self.cfg = cfg
        self.reported = 0

    @hookimpl
    def dnas_epoch_end(self, run, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled or stage != "search":
            return
        if self.metric not in metrics:
            self._missing(run, epoch, metrics)
            return
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            raise TrialPruned(f"search {self.metric} is {value} at epoch {epoch}")
        self.trial.report(value, epoch)
        self.reported += 1
        if self.trial.should_prune():
            raise TrialPruned(f"pruned at search epoch {epoch} ({self.metric}={value:.4g})")

    def _missing(self, run, epoch: int, metrics: dict[str, float]) -> None:
        """An epoch record without the pruner's metric. A ``prune_metric`` named in the
        manifest that the search does not log (a typo) would leave every trial unpruned:
        the first epoch after the strategy's warm-up, if it has not appeared, stops the
        study. One derived from the objective may just not exist for this strategy (a
        query-based search logs no ``val_accuracy``): pruning is off, said once."""
        cfg = self.cfg
        if cfg is None or cfg.pruner.type == "none" or self.reported:
            return
        if epoch < int(getattr(run.manifest.strategy, "warmup_epochs", 0) or 0):
            return  # e.g. arch_loss: no architecture steps during warm-up
        if not cfg.prune_metric:
            log(f"[tune] the search logs no {self.metric!r} (the prune metric derived from the objective "
                f"{cfg.objectives[0].metric}): this trial is not pruned (set tune.prune_metric to prune on a "
                "metric it logs)")
            self.enabled = False
            return
        logged = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and "/" not in k)
        raise PruneMetricMissing(f"tune.prune_metric: the search logs no {self.metric!r}, so the "
                                 f"{cfg.pruner.type} pruner would never see a value; it logs {', '.join(logged)}")


# --------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------


class _Objective:
    """Runs one trial: draw parameters, run the manifest, return the objective values."""

    def __init__(self, manifest_path: Path, overrides: list[str], cfg: TuneConfig, study_dir: Path,
                 pm: DnasPluginManager, base_seed: int):
        self.manifest_path = manifest_path
        self.overrides = list(overrides)
        self.cfg = cfg
        self.study_dir = study_dir
        self.pm = pm
        self.base_seed = base_seed

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        from .orchestrator import Orchestrator

        cfg = self.cfg
        params = suggest(trial, cfg)
        orch = None
        # the run to resume: that of the latest attempt that got as far as creating one
        # (a retry resumes its predecessor's run; one whose predecessor died before
        # creating its run, or ran on a machine without this study folder, made its own)
        retried, previous, status = None, None, None
        chain = retried_from(trial)
        for number in reversed(chain):
            folder = self.study_dir / "trials" / f"trial-{number:04d}"
            if RunDir(folder).exists("manifest.yaml"):
                retried, previous, status = number, folder, RunDir(folder).status().get("status")
                break
        if previous is not None:
            if status == "completed" and RunDir(previous).exists("result.json"):
                # stopped after its run had finished (while the run announced its end):
                # the result stands, nothing to train again
                log(f"[tune] trial {trial.number} retries trial {retried}, whose run completed: {previous}")
                trial.set_user_attr("run_dir", str(previous))
                return self._trial_value(trial, previous, RunDir(previous).read_json("result.json"))
            if status is not None and status != "completed":
                log(f"[tune] trial {trial.number} retries trial {retried}: resuming {previous}")
                orch = Orchestrator.resume(previous, self.pm)
        if orch is None:
            out = self.study_dir / "trials" / f"trial-{trial.number:04d}"
            data = trial_manifest(apply_overrides(read_yaml(self.manifest_path), [*self.overrides, *cfg.overrides]),
                                  # a retry's seed is the killed trial's
                                  {**params, **({"seed": self.base_seed + (chain[0] if chain else trial.number)}
                                                if cfg.vary_seed else {})})
            data.pop("tune", None)  # the trial is a plain run; the study holds the tuning set-up
            # The trial's manifest is written out (not passed as text overrides) so that
            # every sampled value reaches it unchanged.
            path = self.study_dir / "manifests" / f"trial-{trial.number:04d}.yaml"
            atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
            orch = Orchestrator.new(path, [], out, self.pm)
        run_dir = orch.run_dir.path
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        log(f"[tune] trial {trial.number}: {', '.join(f'{k}={v}' for k, v in params.items())} -> {run_dir}")
        reporter = PruningReporter(trial, cfg.resolved_prune_metric(), len(cfg.objectives) > 1, cfg)
        self.pm.register(reporter, name=f"tune-pruning:{trial.number}:{id(reporter)}")
        try:
            result = orch.run()
        except PruneMetricMissing as exc:
            orch.run_dir.set_status("failed", error=str(exc))
            raise UsageError(str(exc)) from None
        except TrialPruned as exc:
            orch.run_dir.set_status("pruned", reason=str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except KeyboardInterrupt:
            # Optuna marks the trial FAIL and re-raises; the mark makes the next start of
            # the study retry it, resuming this run directory, instead of losing it
            trial.study._storage.set_trial_system_attr(trial._trial_id, _INTERRUPTED_ATTR, trial.number)
            raise
        finally:
            self.pm.unregister(reporter)
        return self._trial_value(trial, run_dir, result)

    def _trial_value(self, trial: optuna.Trial, run_dir: Path, result: dict[str, Any]) -> float | list[float]:
        """The objective value(s) of a finished run; its figures go to the trial too."""
        values = run_values(run_dir, result)
        trial.set_user_attr("values", values)
        out_values = objective_values(self.cfg, values)
        return out_values[0] if len(out_values) == 1 else out_values


# --------------------------------------------------------------------------------------
# Study set-up and workers
# --------------------------------------------------------------------------------------


def load_tune_config(manifest_path: str | Path, overrides: list[str], pm: DnasPluginManager) -> tuple[ManifestBase, TuneConfig]:
    """The validated manifest and its ``tune:`` section; every tuned path is checked
    by validating the manifest with each parameter's bounds (a misspelt path fails
    here, naming it, rather than in every trial)."""
    manifest = load_manifest(manifest_path, pm.registries, overrides)
    cfg = manifest.tune
    if cfg is None:
        raise UsageError(f"{manifest_path}: no tune: section (it declares the parameters to tune)")
    if cfg.overrides:  # the manifest every trial starts from: its seed and epochs set up the study
        base = manifest
        manifest = load_manifest(manifest_path, pm.registries, [*overrides, *cfg.overrides])
        # but the study keeps its name and folder (an existing study must be found again)
        manifest.name, manifest.output = base.name, base.output
    data = apply_overrides(read_yaml(manifest_path), [*overrides, *cfg.overrides])
    for key, spec in cfg.params.items():
        probes = spec.choices if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
        for value in probes:
            probe = set_path(data, key, value)
            try:
                validate_manifest(probe, pm.registries, source=str(manifest_path))
            except DnasError as exc:
                raise UsageError(f"tune.params.{key}: value {value!r} makes the manifest invalid: {exc}") from None
    return manifest, cfg


def study_names(manifest: ManifestBase, cfg: TuneConfig, study: str | None, study_dir: str | None,
                storage: str | None) -> tuple[str, Path, str]:
    """(study name, study directory, storage) after command-line overrides."""
    name = study or cfg.study_name or manifest.name
    sdir = Path(study_dir or cfg.study_dir or Path(manifest.output.root) / f"tune-{name}")
    store = storage or cfg.storage or str(sdir / "journal.log")
    return name, sdir, store


def open_study(storage: BaseStorage, name: str, cfg: TuneConfig, seed: int, max_epochs: int) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, directions=cfg.directions,
                                sampler=make_sampler(cfg, seed), pruner=make_pruner(cfg, max_epochs),
                                load_if_exists=True)
    have = [d.name.lower() for d in study.directions]
    if have != cfg.directions:
        raise UsageError(f"study {name!r} already exists with directions {have}, the manifest asks for {cfg.directions}; "
                         "choose another --study name")
    return study


def retried_from(trial: optuna.Trial) -> list[int]:
    """The killed trials that ``trial`` retries, oldest first (the first is the trial
    that was killed, then each earlier retry of it); empty for a fresh trial."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number == trial.number:
            history = t.system_attrs.get("retry_history")  # set by the retry callback
            first = t.system_attrs.get("failed_trial")
            return [int(n) for n in history] if history else ([int(first)] if first is not None else [])
    return []


def budget_used(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count against ``n_trials``: finished or running ones, where a
    killed trial and its retries count once."""
    counted = [t for t in trials if t.state in _COUNTED]
    retries = [t for t in counted if t.system_attrs.get("failed_trial") is not None]
    return len(counted) - len(retries)


def _pid_is_dead(worker: str) -> bool:
    """True when ``worker`` ("host:pid", a trial's ``worker`` attribute) is a process of
    this host that no longer exists. Any doubt (another host, no permission) is False."""
    host, _, pid = worker.rpartition(":")
    if host != os.uname().nodename or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _heartbeat_missed(trial: FrozenTrial, cfg: TuneConfig) -> bool:
    """A journal-storage trial's heartbeat (a wall time) is older than one interval; so a
    worker whose pid merely looks dead (another PID namespace on a host of the same
    name) but still beats is left alone. Storages without the attribute (RDB): True."""
    beat = trial.system_attrs.get(_HEARTBEAT_ATTR)
    return beat is None or time.time() - float(beat) > cfg.heartbeat_s


def _await_heartbeat_lapse(storage: BaseStorage, trial: FrozenTrial, cfg: TuneConfig) -> FrozenTrial | None:
    """``trial`` (refreshed) once its last heartbeat is more than one interval old, or
    None if it beats again or stops running meanwhile. Right after a kill the last beat
    is recent: waiting out the rest of one interval (at most ``heartbeat_s``) tells a
    dead worker from a live one whose pid only looks dead."""
    announced = False
    while not _heartbeat_missed(trial, cfg):
        beat = float(trial.system_attrs[_HEARTBEAT_ATTR])
        if not announced:
            log(f"[tune] trial {trial.number}: its worker is gone; waiting up to {cfg.heartbeat_s} s for its "
                "heartbeat to lapse before retrying it")
            announced = True
        time.sleep(min(1.0, max(0.05, cfg.heartbeat_s - (time.time() - beat) + 0.05)))
        trial = storage.get_trial(trial._trial_id)
        if trial.state != TrialState.RUNNING or float(trial.system_attrs.get(_HEARTBEAT_ATTR, beat)) > beat:
            return None
    return trial


def recover_interrupted(study: optuna.Study, cfg: TuneConfig) -> list[int]:
    """Queue a retry of each trial that a stopped ``dnas tune`` left behind, so that
    running the same command again finishes it (resuming its run directory) within the
    same budget:

    * a trial interrupted with Ctrl-C (FAIL, marked by :class:`_Objective`);
    * a trial still RUNNING whose worker process on this host is gone (killed with
      SIGTERM or SIGKILL): it is failed now rather than after the heartbeat grace period
      (once its last heartbeat is one interval old, which takes at most ``heartbeat_s``
      right after the kill).

    Returns the numbers of the trials retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    storage = study._storage
    out = []
    for t in trials:
        if t.number in retried:
            continue
        if len(t.system_attrs.get("retry_history", [])) + 1 > cfg.max_retry:
            continue  # retried as often as allowed: it stays failed (RetryCallback would do nothing)
        if t.state == TrialState.RUNNING and _pid_is_dead(str(t.user_attrs.get("worker", ""))):
            t = _await_heartbeat_lapse(storage, t, cfg)
            if t is None:  # it beat again: its worker lives (in another PID namespace)
                continue
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            t = storage.get_trial(t._trial_id)
        elif not (t.state == TrialState.FAIL and t.system_attrs.get(_INTERRUPTED_ATTR) == t.number):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            RetryCallback(max_retry=cfg.max_retry)(study, t)
        out.append(t.number)
    return out


class _NoTraceback(logging.Filter):
    """Optuna logs a failed trial's exception with its traceback. dnas's own errors say
    what is wrong in their message (and the trial's status.json keeps the traceback):
    the warning stays, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DnasError):
            record.exc_info = None
            record.exc_text = None
        return True


def _one_line_for_dnas_errors() -> None:
    trial_logger = logging.getLogger("optuna.study._optimize")  # where optuna reports a failed trial
    if not any(isinstance(f, _NoTraceback) for f in trial_logger.filters):
        trial_logger.addFilter(_NoTraceback())


def _search_epochs(manifest: ManifestBase) -> int:
    return int(getattr(manifest.strategy, "epochs", 1) or 1)  # type: ignore[attr-defined]


def run_worker(manifest_path: str | Path, overrides: list[str], storage: str, study_name: str, study_dir: Path,
               n_trials: int, worker_index: int = 0, pm: DnasPluginManager | None = None) -> int:
    """One worker: run trials of the shared study until its budget is used.
    Returns how many trials this worker ran."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    pm = pm or get_plugin_manager()
    manifest, cfg = load_tune_config(manifest_path, overrides, pm)
    base = cfg.sampler.seed if cfg.sampler.seed is not None else manifest.seed
    study = open_study(make_storage(storage, cfg), study_name, cfg, base, _search_epochs(manifest))
    # Each worker, and each resumption of the study, draws its own random stream
    # (the same seed again would repeat the trials already run). With a database (which
    # machines may share) the host name keeps apart machines that start at the same
    # moment, whose worker 0 each sees the same number of trials; a journal file (one
    # machine) keeps a study reproducible on any machine.
    shared = "://" in storage
    stream = derive_seed(base, "tune", *([os.uname().nodename] if shared else []), worker_index, len(study.trials))
    study.sampler = make_sampler(cfg, stream % 2**31)
    objective = _Objective(Path(manifest_path), overrides, cfg, study_dir, pm, manifest.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _one_line_for_dnas_errors()
    t0 = time.monotonic()
    ran = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if budget_used(trials) >= n_trials and not waiting:
            break
        if cfg.timeout_s is not None and time.monotonic() - t0 > cfg.timeout_s:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=1, catch=(RunFailed,), gc_after_trial=True)
        ran += 1
    return ran


def tune(manifest_path: str | Path, overrides: list[str] | None = None, storage: str | None = None,
         study: str | None = None, study_dir: str | None = None, n_trials: int | None = None, workers: int = 1,
         report: bool = True, pm: DnasPluginManager | None = None) -> dict[str, Any]:
    """Run (or continue) a study with ``workers`` local processes; returns its summary."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    overrides = list(overrides or [])
    pm = pm or get_plugin_manager()
    manifest, cfg = load_tune_config(manifest_path, overrides, pm)
    name, sdir, store = study_names(manifest, cfg, study, study_dir, storage)
    budget = n_trials if n_trials is not None else cfg.n_trials
    sdir.mkdir(parents=True, exist_ok=True)
    # Create the study once here so that the workers only ever load it.
    study_obj = open_study(make_storage(store, cfg), name, cfg, 0, _search_epochs(manifest))
    log(f"[tune] study {name!r} on {_redact(store)}: budget {budget} trials, {workers} worker(s), dir {sdir}")
    for obj in cfg.objectives:
        stage = obj.metric.partition(".")[0]
        if "." in obj.metric and stage not in ("search", "retrain", "test"):
            log(f"[tune] objective {obj.metric}: stage {stage!r} is none of dnas's (search, retrain, test); "
                "a plugin must log it, else the first trial fails")
    if cfg.resolved_prune_metric() is None and cfg.pruner.type != "none" and len(cfg.objectives) == 1:
        log(f"[tune] objective {cfg.objectives[0].metric} has no per-epoch counterpart: trials are not pruned "
            "(set tune.prune_metric to prune on a search metric)")
    again = recover_interrupted(study_obj, cfg)
    if again:
        log(f"[tune] retrying interrupted trial(s) {', '.join(map(str, again))} (their runs resume)")
    if workers <= 1:
        run_worker(manifest_path, overrides, store, name, sdir, budget, 0, pm)
    else:
        _run_worker_processes(manifest_path, overrides, store, name, sdir, budget, workers)
    study_obj = optuna.load_study(study_name=name, storage=make_storage(store, cfg))
    summary = study_summary(study_obj, cfg, store, sdir)
    if report:
        summary["report"] = str(write_study_report(study_obj, cfg, sdir, summary))
    return summary


def _worker_env(i: int) -> dict[str, str]:
    """Worker ``i``'s environment: ``DNAS_TUNE_WORKER=i``, by which a cuda backend's
    plain ``device: cuda`` puts worker ``i`` on GPU ``i mod n`` (otherwise every worker
    would share the first GPU); an explicit ``cuda:K`` stays as it is."""
    return {**os.environ, "DNAS_TUNE_WORKER": str(i)}


def _run_worker_processes(manifest_path: str | Path, overrides: list[str], storage: str, name: str, sdir: Path,
                          budget: int, workers: int) -> None:
    logs = sdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i in range(workers):
            cmd = [sys.executable, "-m", "dnas_core", "tune", str(manifest_path), *overrides, "--storage", storage,
                   "--study", name, "--study-dir", str(sdir), "--n-trials", str(budget), "--worker-index", str(i),
                   "--no-report"]
            fh = open(logs / f"worker-{i}.log", "ab")
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env(i)), fh))
        log(f"[tune] {workers} workers started; logs in {logs}")
        codes = [p.wait() for p, _ in procs]
    except BaseException:
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        for p, _ in procs:
            p.wait()
        raise
    finally:
        for _, fh in procs:
            fh.close()
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        i, c = bad[0]
        tail = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise RunFailed(f"tune worker {i} exited with status {c} (see {logs / f'worker-{i}.log'}): {' '.join(tail)}")


# --------------------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------------------


def study_summary(study: optuna.Study, cfg: TuneConfig, storage: str, sdir: Path) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    best: list[FrozenTrial] = []
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trials if len(cfg.objectives) > 1 else [study.best_trial]
    return {
        "study": study.study_name,
        "storage": _redact(storage),
        "study_dir": str(sdir),
        "objectives": [o.model_dump() for o in cfg.objectives],
        "trials": len(trials),
        "states": {k: v for k, v in states.items() if v},
        "best": [{"number": t.number, "values": t.values, "params": t.params,
                  "run_dir": t.user_attrs.get("run_dir")} for t in best],
    }


def write_study_report(study: optuna.Study, cfg: TuneConfig, sdir: Path, summary: dict[str, Any]) -> Path:
    """``<study dir>/report/``: Optuna's plots as PNG, the trials as CSV, report.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = sdir / "report"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    names = [o.metric for o in cfg.objectives]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots: list[str] = []
    problems: list[str] = []

    def save(fname: str, fn) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn()
            fig = ax.ravel()[0].figure if hasattr(ax, "ravel") else ax.figure
            fig.savefig(out / "plots" / fname, dpi=110, bbox_inches="tight")
            plt.close(fig)
            plots.append(fname)
        except Exception as exc:  # noqa: BLE001 - a plot Optuna cannot draw yet is not fatal
            problems.append(f"{fname}: {type(exc).__name__}: {exc}")
            plt.close("all")

    if complete:
        for i, metric in enumerate(names):
            target = (lambda t, i=i: t.values[i]) if len(names) > 1 else None
            safe = metric.replace("/", "_")
            save(f"history_{safe}.png", lambda: ovm.plot_optimization_history(
                study, target=target, target_name=metric))
            if len(complete) >= 2 and len(cfg.params) >= 1:
                save(f"importances_{safe}.png", lambda: ovm.plot_param_importances(
                    study, target=target, target_name=metric))
        if len(names) > 1:
            save("pareto_front.png", lambda: ovm.plot_pareto_front(study, target_names=names[:3]))
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            save("intermediate_values.png", lambda: ovm.plot_intermediate_values(study))
    rows = []
    for t in study.get_trials(deepcopy=False):
        # a pruned trial's value is Optuna's last intermediate value, not a final objective:
        # it goes to its own column so that value_* holds final objectives only
        final = t.values if t.state == TrialState.COMPLETE else None
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"number": t.number, "state": t.state.name.lower(),
                     **{f"value_{n}": (final[i] if final else None) for i, n in enumerate(names)},
                     "last_intermediate": t.intermediate_values[last] if last is not None else None,
                     **{f"param_{k}": v for k, v in t.params.items()},
                     "duration_s": t.duration.total_seconds() if t.duration else None,
                     "run_dir": t.user_attrs.get("run_dir")})
    _write_csv(out / "trials.csv", rows)
    atomic_write_json(out / "summary.json", {**summary, "plots": plots, "plot_problems": problems})
    lines = [f"# Study `{study.study_name}`", "",
             f"Storage: `{summary['storage']}`. Trials: {summary['trials']} "
             f"({', '.join(f'{k} {v}' for k, v in summary['states'].items())}).", "",
             "Objectives: " + ", ".join(f"{o.metric} ({o.direction})" for o in cfg.objectives), ""]
    if summary["best"]:
        lines += ["## Best trial" + ("s (Pareto front)" if len(names) > 1 else ""), "",
                  "| trial | " + " | ".join(names) + " | tuned parameters | run directory |",
                  "|---|" + "---|" * len(names) + "---|---|"]
        for b in summary["best"]:
            vals = " | ".join(f"{v:.4g}" for v in b["values"])
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
            lines.append(f"| {b['number']} | {vals} | {params} | `{b['run_dir']}` |")
        lines += ["", f"Export the best network again with `dnas export {summary['best'][0]['run_dir']}`.", ""]
    for p in plots:
        lines += [f"![{p}](plots/{p})", ""]
    if problems:
        lines += ["Plots not drawn: " + "; ".join(problems), ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["number"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


__all__ = ["tune", "run_worker", "make_storage", "HeartbeatJournalStorage", "budget_used", "run_values",
           "write_study_report", "TrialPruned", "PruningReporter"]
