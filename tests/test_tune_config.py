"""The tune: section, the storages' heartbeat and retry, and the trial budget (no runs)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState, create_trial

from dnas_core import ManifestError, UsageError
from dnas_core.tune import HeartbeatJournalStorage, budget_used, load_tune_config, make_storage, trial_manifest
from dnas_core.tune_config import TuneConfig

BASE = {
    "name": "tiny",
    "task": {"type": "digits", "limit_train": 200, "limit_test": 50},
    "space": {"type": "nb201", "C": 4, "N": 1},
    "strategy": {"type": "darts", "epochs": 2, "batch_size": 32},
}


def write(tmp_path: Path, tune: dict, **extra) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({**BASE, **extra, "tune": tune}))
    return p


def test_valid_section_parses_every_distribution(tmp_path, pm):
    tune = {"params": {"strategy.arch_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                       "strategy.epochs": {"type": "int", "low": 1, "high": 3},
                       "strategy.batch_size": {"type": "categorical", "choices": [16, 32]}},
            "objectives": [{"metric": "search.val_accuracy", "direction": "maximize"},
                           {"metric": "params", "direction": "minimize"}],
            "pruner": {"type": "none"}, "sampler": {"type": "nsga2"}}
    manifest, cfg = load_tune_config(write(tmp_path, tune), [], pm)
    assert cfg.directions == ["maximize", "minimize"]
    assert set(cfg.params) == {"strategy.arch_lr", "strategy.epochs", "strategy.batch_size"}
    assert manifest.tune == cfg


@pytest.mark.parametrize("spec, message", [
    ({"type": "float", "low": 1.0, "high": 0.1}, "must not exceed high"),
    ({"type": "float", "low": 0.0, "high": 0.1, "log": True}, "needs low > 0"),
    ({"type": "gaussian", "low": 0.0, "high": 0.1}, "tune.params.strategy.arch_lr"),
    ({"type": "categorical", "choices": []}, "choices"),
])
def test_bad_distribution_names_the_field(tmp_path, pm, spec, message):
    with pytest.raises(ManifestError, match=message):
        load_tune_config(write(tmp_path, {"params": {"strategy.arch_lr": spec}}), [], pm)


def test_misspelt_parameter_path_is_named(tmp_path, pm):
    tune = {"params": {"strategy.arch_lrr": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    with pytest.raises(UsageError, match=r"tune\.params\.strategy\.arch_lrr.*arch_lrr"):
        load_tune_config(write(tmp_path, tune), [], pm)


def test_value_outside_the_fields_range_is_caught_before_any_trial(tmp_path, pm):
    tune = {"params": {"strategy.batch_size": {"type": "int", "low": 1, "high": 8}}}  # batch_size >= 2
    with pytest.raises(UsageError, match=r"tune\.params\.strategy\.batch_size: value 1"):
        load_tune_config(write(tmp_path, tune), [], pm)


def test_pruning_a_multi_objective_study_is_refused():
    with pytest.raises(ValueError, match="cannot prune multi-objective"):
        TuneConfig.model_validate({"params": {"seed": {"type": "int", "low": 0, "high": 3}},
                                   "objectives": [{"metric": "search.val_accuracy"}, {"metric": "params", "direction": "minimize"}]})


def test_study_owned_sections_cannot_be_tuned():
    with pytest.raises(ValueError, match="cannot be tuned"):
        TuneConfig.model_validate({"params": {"output.root": {"type": "categorical", "choices": ["a"]}}})


def test_prune_metric_defaults_to_the_search_objective():
    cfg = TuneConfig.model_validate({"params": {"seed": {"type": "int", "low": 0, "high": 3}},
                                     "objectives": [{"metric": "search.val_loss", "direction": "minimize"}]})
    assert cfg.resolved_prune_metric() == "val_loss"


@pytest.mark.parametrize("metric, direction, expected", [
    ("test.loss", "minimize", "val_loss"),  # was val_accuracy: the pruner saw accuracy as a loss
    ("test.accuracy", "maximize", "val_accuracy"),
    ("retrain.val_accuracy", "maximize", "val_accuracy"),
    ("params", "minimize", None),  # no per-epoch counterpart: not pruned
    ("latency_ms", "maximize", None),
])
def test_default_prune_metric_moves_with_the_objective(metric, direction, expected):
    cfg = TuneConfig.model_validate({"params": {"seed": {"type": "int", "low": 0, "high": 3}},
                                     "objectives": [{"metric": metric, "direction": direction}]})
    assert cfg.resolved_prune_metric() == expected


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), st.booleans(), st.none(),
                 st.text(alphabet="abcxyz_-.01e", max_size=8)))
def test_override_values_read_back_unchanged(value):
    """A sampled value must reach the trial's manifest file unchanged (as text
    overrides, YAML 1.1 would read 1e-05 as a string, "0" as a number, ...)."""
    data = trial_manifest({"strategy": {"type": "darts"}}, {"strategy.x": value, "a.b": value})
    back = yaml.safe_load(yaml.safe_dump(data))
    for got in (back["strategy"]["x"], back["a"]["b"]):
        assert got == value and type(got) is type(value)
    assert back["strategy"]["type"] == "darts"


def _trial(state, **system_attrs):
    t = create_trial(state=state, value=0.0 if state == TrialState.COMPLETE else None)
    for k, v in system_attrs.items():
        t._system_attrs[k] = v
    return t


def test_budget_counts_a_killed_trial_and_its_retries_once():
    trials = [_trial(TrialState.COMPLETE), _trial(TrialState.FAIL), _trial(TrialState.PRUNED),
              _trial(TrialState.RUNNING, failed_trial=1), _trial(TrialState.WAITING, failed_trial=1)]
    assert budget_used(trials) == 3


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_stale_trial_on_journal_storage_is_failed_and_retried(tmp_path):
    cfg = TuneConfig.model_validate({"params": {"seed": {"type": "int", "low": 0, "high": 3}},
                                     "heartbeat_s": 1, "grace_s": 1})
    storage = make_storage(str(tmp_path / "journal.log"), cfg)
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    alive, dead = study.ask(), study.ask()
    for t in (alive, dead):
        t.suggest_int("seed", 0, 3)
    storage.set_trial_system_attr(dead._trial_id, "dnas:heartbeat", time.time() - 60)  # its worker was killed
    storage.record_heartbeat(alive._trial_id)
    # A second process opening the same file sees the same trials.
    other = optuna.load_study(study_name="s", storage=make_storage(str(tmp_path / "journal.log"), cfg))
    optuna.storages.fail_stale_trials(other)
    states = {t.number: t.state for t in other.get_trials()}
    assert states[dead.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    retry = [t for t in other.get_trials() if t.state == TrialState.WAITING]
    assert len(retry) == 1
    assert retry[0].system_attrs["failed_trial"] == dead.number
    assert retry[0].params == {"seed": dead.params["seed"]}
