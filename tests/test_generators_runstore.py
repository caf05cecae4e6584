"""The run store: records written at run end, read back, and used for warm starts."""

from __future__ import annotations

import json
import types

import pytest
import torch
import yaml

from dnas_core.testing import tiny_manifest

TABLE = {"type": "nb201_table", "dataset": "cifar10"}


def _run(tmp_path, name, strategy, **extra):
    from dnas_core.orchestrator import run_manifest

    m = tiny_manifest(strategy=strategy, train={"epochs": 0}, **extra)
    m["export"] = None
    m["name"] = name
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(m))
    out = tmp_path / name
    run_manifest(p, out=out)
    return out


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, shared_data_module):
    tmp = tmp_path_factory.mktemp("store")
    return _run(tmp, "source", {"type": "evolution", "queries": 20, "population": 8, "sample_size": 3,
                                "evaluator": TABLE})


@pytest.fixture(scope="module")
def shared_data_module():
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def test_record_round_trip(source_run):
    from dnas_core.runstore import RunRecord

    data = json.loads((source_run / "runstore.json").read_text())
    assert data["task"]["task"] == "nb201/cifar10" and data["space"] == "nb201"
    assert len(data["evaluations"]) == 20 and data["final"]["hash"]
    assert data["task_features"] and len(data["task_features"]) == 7
    # the features describe the task the search was scored on (CIFAR-10: 3 channels, 32x32,
    # 50,000 images), not the digits the derived network is retrained on
    from dnas_plugins.generators.task_embedding import task_features

    assert data["task_features"] == pytest.approx(task_features(descriptor=data["task"]).tolist())
    assert data["task_features"][1] == 3.0
    rec = RunRecord.load(source_run)
    assert len(rec.evaluations) == 20 and rec.final is not None
    best_g, best_s = rec.ranked()[0]
    assert best_s == max(s for _, s in rec.evaluations)
    # The strategy's best is the run's final architecture.
    assert rec.final == best_g


def test_missing_record_is_a_clear_error(tmp_path):
    from dnas_core import UsageError
    from dnas_core.runstore import RunRecord

    with pytest.raises(UsageError, match="runstore.json"):
        RunRecord.load(tmp_path)


def test_warm_start_changes_the_initial_population(tmp_path, source_run):
    from dnas_core.runstore import RunRecord, RunStore

    strat = {"type": "evolution", "queries": 8, "population": 8, "sample_size": 3, "warm_start_top": 5,
             "evaluator": {"type": "nb201_table", "dataset": "cifar100"}}
    cold = RunRecord.load(_run(tmp_path, "cold", strat))
    warm = RunRecord.load(_run(tmp_path, "warm", strat, extends_runs=[str(source_run)]))
    top5 = RunStore.load([source_run]).top_genotypes("nb201", 5)
    assert [g for g, _ in warm.evaluations[:5]] == top5
    assert [g for g, _ in cold.evaluations[:5]] != top5
    assert json.loads((tmp_path / "warm" / "search_summary.json").read_text())["warm_start"] == 5


def test_a_warm_start_from_another_space_warns_instead_of_doing_nothing_silently(tmp_path, source_run):
    # the source searched nb201 by queries: nothing in it can start a DARTS-space supernet
    with pytest.warns(UserWarning, match="none of the listed runs holds a darts supernet"):
        _run(tmp_path, "other", {"type": "darts", "epochs": 1, "batch_size": 32}, extends_runs=[str(source_run)],
             space={"type": "darts", "C": 4, "layers": 2})


def test_generator_weights_are_stored_and_warm_start_the_next_run(tmp_path, shared_data_module):
    from dnas_core.runstore import RunStore

    strat = {"type": "vae_bo", "queries": 6, "pretrain_samples": 100, "n_startup": 3,
             "generator": {"type": "graph_vae", "epochs": 2, "hidden": 16, "latent_dim": 4}, "evaluator": TABLE}
    first = _run(tmp_path, "first", strat)
    saved = torch.load(first / "runstore.pt", map_location="cpu", weights_only=True)
    assert "generator/graph_vae" in saved
    second = _run(tmp_path, "second", {**strat, "generator": {**strat["generator"], "epochs": 50}},
                  extends_runs=[str(first)])
    again = RunStore.load([second]).tensors("generator/graph_vae")
    # Loaded, not retrained: the 50-epoch setting was never used.
    for k, v in saved["generator/graph_vae"]["model"].items():
        assert torch.equal(v, again["model"][k]), k


def test_supernet_warm_start_loads_the_body_only(tmp_path, shared_data_module):
    from dnas_core import get_plugin_manager
    from dnas_core.runstore import warm_start_supernet

    src = _run(tmp_path, "darts", {"type": "darts", "epochs": 1, "batch_size": 32})
    saved = torch.load(src / "runstore.pt", map_location="cpu", weights_only=True)["supernet/nb201"]
    pm = get_plugin_manager()
    task = pm.registries.tasks.create("digits", {"limit_train": 300, "limit_test": 100})
    task.data(0)
    space = pm.registries.spaces.create("nb201", {"C": 4, "N": 1})
    net = space.build_supernet(task)
    run = types.SimpleNamespace(manifest=types.SimpleNamespace(extends_runs=[str(src)]), space=space)
    loaded = warm_start_supernet(run, net)
    assert "body.alpha" in loaded and not any(k.startswith(("stem.", "head.")) for k in loaded)
    assert torch.equal(net.body.alpha.detach(), saved["body.alpha"])
