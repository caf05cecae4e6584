"""Evaluators: caching by genotype hash, query counting, the three kinds on real data."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch


def _space(**cfg):
    from dnas_search_spaces.nb201 import NB201Space

    return NB201Space(NB201Space.Config(**cfg))


def test_table_evaluator_caches_and_counts(shared_data):
    from dnas_plugins.evaluators import NB201TableEvaluator
    from dnas_search_spaces.nb201.table import load_table

    space = _space()
    ev = NB201TableEvaluator(dataset="imagenet16")
    ev.setup(None)
    g = space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    a = ev.evaluate(g)
    b = ev.evaluate(g)
    assert a == b == load_table().lookup(g).imagenet16
    assert ev.queries == 1 and ev.cache_hits == 1 and ev.cached(g) == a
    other = space.sample(np.random.default_rng(5))
    ev.evaluate(other)
    assert ev.stats()["queries"] == 2
    state = ev.state_dict()
    fresh = NB201TableEvaluator(dataset="imagenet16")
    fresh.load_state_dict(state)
    assert fresh.cached(g) == a and fresh.queries == 2
    assert ev.task_descriptor()["num_outputs"] == 120


def test_table_evaluator_rejects_another_space(shared_data):
    from dnas_core import IncompatibleError
    from dnas_plugins.evaluators import NB201TableEvaluator

    run = types.SimpleNamespace(space=types.SimpleNamespace(name="mobile"))
    with pytest.raises(IncompatibleError, match="mobile"):
        NB201TableEvaluator().setup(run)


def _digits_run(tmp_path, **space_cfg):
    from dnas_core import get_plugin_manager
    from dnas_core.rundir import RunDir

    pm = get_plugin_manager()
    task = pm.registries.tasks.create("digits", {"limit_train": 240, "limit_test": 60})
    run_dir = RunDir.create(tmp_path / "run")
    run = types.SimpleNamespace(task=task, space=_space(C=4, N=1, **space_cfg), seed=0,
                                device=torch.device("cpu"), data=task.data(0), run_dir=run_dir,
                                save_checkpoint=run_dir.save_checkpoint, load_checkpoint=run_dir.load_checkpoint)
    return run


def test_short_training_scores_on_validation_and_caches(tmp_path):
    from dnas_plugins.evaluators import ShortTrainingEvaluator

    run = _digits_run(tmp_path)
    ev = ShortTrainingEvaluator(epochs=6, batch_size=16, lr=0.1)
    ev.setup(run)
    good = run.space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    empty = run.space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    s_good = ev.evaluate(good)
    assert ev.evaluate(good) == s_good and ev.queries == 1 and ev.seconds > 0
    s_empty = ev.evaluate(empty)
    # A cell of convolutions learns digits; a cell of 'none' passes nothing to the head.
    assert s_good > s_empty + 0.2, (s_good, s_empty)


def test_weight_sharing_trains_once_and_scores_paths(tmp_path):
    from dnas_plugins.evaluators import WeightSharingEvaluator

    run = _digits_run(tmp_path)
    ev = WeightSharingEvaluator(epochs=6, batch_size=16, lr=0.1, bn_batches=2)
    ev.setup(run)
    assert ev.setup_seconds > 0 and run.run_dir.load_checkpoint("weight_sharing") is not None
    conv = run.space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    none = run.space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    s_conv, s_none = ev.evaluate(conv), ev.evaluate(none)
    assert ev.queries == 2 and ev.evaluate(conv) == s_conv and ev.cache_hits == 1
    assert s_conv > s_none, (s_conv, s_none)
    # The supernet runs the genotype's path only: one op per edge, weight one.
    mix = ev.net.body.weight_fn(ev.net.body.alpha)
    assert mix.index.tolist() == list(run.space.arch_indices(none)[0]) and float(mix.weights.sum()) == 6.0
    # A second evaluator of the same run reuses the trained supernet from the checkpoint.
    again = WeightSharingEvaluator(epochs=6, batch_size=16, lr=0.1, bn_batches=2)
    again.setup(run)
    assert again.evaluate(conv) == pytest.approx(s_conv)
