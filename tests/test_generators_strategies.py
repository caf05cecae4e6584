"""Query-based strategies: the strategy contract, resume, warm start and checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dnas_core.testing import StrategyContract, tiny_manifest

TABLE = {"type": "nb201_table", "dataset": "cifar10"}


@pytest.fixture(autouse=True)
def _needs_table(shared_data):
    """Every strategy here queries the NAS-Bench-201 table from the shared data."""


class TestRandomSearch(StrategyContract):
    def manifest(self):
        return tiny_manifest(strategy={"type": "random_search", "queries": 12, "evaluator": TABLE})


class TestEvolution(StrategyContract):
    def manifest(self):
        return tiny_manifest(strategy={"type": "evolution", "queries": 16, "population": 6, "sample_size": 3,
                                       "evaluator": TABLE})


class TestVAEBO(StrategyContract):
    def manifest(self):
        return tiny_manifest(strategy={"type": "vae_bo", "queries": 14, "pretrain_samples": 150, "n_startup": 5,
                                       "generator": {"type": "graph_vae", "epochs": 3, "hidden": 16, "latent_dim": 4},
                                       "evaluator": TABLE})


class TestGANSearch(StrategyContract):
    def manifest(self):
        return tiny_manifest(strategy={"type": "gan_search", "queries": 16, "initial": 8, "per_round": 4,
                                       "top_k": 4, "candidates": 40,
                                       "generator": {"type": "graph_gan", "steps": 3, "hidden": 16},
                                       "evaluator": TABLE})


def _space():
    from dnas_search_spaces.nb201 import NB201Space

    return NB201Space()


def _table_evaluator():
    from dnas_plugins.evaluators import NB201TableEvaluator

    ev = NB201TableEvaluator(dataset="cifar100")
    ev.setup(None)
    return ev


@pytest.mark.parametrize("name", ["evolution", "gan_search"])
def test_resume_from_a_checkpoint_gives_the_same_search(name):
    """A search resumed from its checkpoint (after a weights_only round trip) queries
    exactly what the uninterrupted search queries."""
    from dnas_plugins.generators import GraphGAN
    from dnas_plugins.strategies.generative import GANSearch
    from dnas_plugins.strategies.query import run_queries
    from dnas_plugins.strategies.sampling import RegularizedEvolution

    def make():
        if name == "evolution":
            return RegularizedEvolution(queries=30, population=8, sample_size=3)
        s = GANSearch(queries=30, initial=8, per_round=5, top_k=4, candidates=40)
        s.generator = GraphGAN(steps=3, hidden=16)
        return s

    space = _space()
    full = run_queries(make(), space, _table_evaluator(), 30, seed=3)
    saved = {}
    strat = make()

    def grab(state):
        if len(state.history) == 13:
            saved["ckpt"] = strat._checkpoint(state)

    run_queries(strat, space, _table_evaluator(), 13, seed=3, on_query=grab)
    buf = io.BytesIO()
    torch.save(saved["ckpt"], buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = run_queries(make(), space, _table_evaluator(), 30, seed=3, resume=ckpt)
    assert [h["genotype"]["hash"] for h in resumed.history] == [h["genotype"]["hash"] for h in full.history]


def test_duplicates_cost_no_query_and_the_loop_ends():
    """A proposer stuck on one genotype: the loop tells it the cached score for free and
    falls back to unseen random genotypes, so the budget is still spent."""
    from dnas_plugins.strategies.query import QueryStrategy, run_queries

    space = _space()
    fixed = space.sample(np.random.default_rng(0))

    class Stuck(QueryStrategy):
        name = "stuck"
        told = 0

        def ask(self, state):
            return fixed

        def tell(self, state, genotype, score, new):
            Stuck.told += 1

    ev = _table_evaluator()
    state = run_queries(Stuck(max_duplicates=3), space, ev, 5, seed=0)
    assert ev.queries == 5 and len({h["genotype"]["hash"] for h in state.history}) == 5
    # Every query after the first followed 3 duplicate proposals, each told its cached score.
    assert Stuck.told == 5 + 3 * 4


def test_evolution_beats_random_search_on_the_table():
    """Regularised evolution exploits the table's structure: over 6 seeds of 60 queries
    its median best CIFAR-100 accuracy is above random search's."""
    from dnas_plugins.strategies.query import run_queries
    from dnas_plugins.strategies.sampling import RandomSearch, RegularizedEvolution

    space = _space()
    rs = [run_queries(RandomSearch(), space, _table_evaluator(), 60, seed=s).best[1] for s in range(6)]
    ev = [run_queries(RegularizedEvolution(population=10, sample_size=3), space, _table_evaluator(), 60, seed=s).best[1]
          for s in range(6)]
    assert np.median(ev) > np.median(rs)


def test_unknown_evaluator_is_a_clear_error(tmp_path):
    import yaml

    from dnas_core import ManifestError
    from dnas_core.orchestrator import run_manifest

    m = tiny_manifest(strategy={"type": "random_search", "queries": 3, "evaluator": {"type": "nb201_tabel"}})
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError, match="nb201_table"):
        run_manifest(p, out=tmp_path / "run")


def test_evaluator_config_errors_name_the_field(tmp_path):
    import yaml

    from dnas_core import ManifestError
    from dnas_core.orchestrator import run_manifest

    m = tiny_manifest(strategy={"type": "random_search", "queries": 3,
                                "evaluator": {"type": "nb201_table", "dataset": "cifar1000"}})
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError, match="strategy.evaluator.dataset"):
        run_manifest(p, out=tmp_path / "run")
