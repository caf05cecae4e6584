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


def test_trust_region_grows_on_successes_shrinks_on_failures_and_restarts():
    from dnas_plugins.strategies.generative import LatentTrustRegion

    def better(a, b):
        return a > b

    tr = LatentTrustRegion(length=0.4, length_init=0.4, length_min=0.1, length_max=0.8, success_tol=2, failure_tol=3)
    lo, hi = np.zeros(2), np.full(2, 10.0)
    assert [b.tolist() for b in tr.box(lo, hi)] == [[0, 0], [10, 10]]  # no local run yet: the whole box
    tr.begin(np.array([5.0, 9.0]), 1.0)
    box_lo, box_hi = tr.box(lo, hi)
    assert np.allclose(box_lo, [3, 7]) and np.allclose(box_hi, [7, 10])  # 0.4 of the range, clipped to the box
    assert tr.update(np.array([5.5, 9.0]), 2.0, better) == "moved" and tr.center == [5.5, 9.0]
    assert tr.update(np.array([6.0, 9.0]), 3.0, better) == "grown" and tr.length == 0.8
    assert tr.update(np.array([1.0, 1.0]), 4.0, better) == "moved"
    assert tr.update(np.array([1.0, 1.0]), 5.0, better) == "grown" and tr.length == 0.8  # capped at length_max
    changes = [tr.update(np.array([0.0, 0.0]), 0.0, better) for _ in range(9)]
    assert changes == ["", "", "shrunk"] * 3 and tr.length == 0.1 and tr.center == [1.0, 1.0]
    assert tr.update(np.array([0.0, 0.0]), 0.0, better) == ""  # a failure resets the success count only
    tr.update(np.array([0.0, 0.0]), 0.0, better)
    assert tr.update(np.array([0.0, 0.0]), 0.0, better) == "restart"
    assert tr.center is None and tr.best is None and tr.length == 0.4 and tr.restarts == 1
    again = LatentTrustRegion(length=1, length_init=1, length_min=1, length_max=1, success_tol=1, failure_tol=1)
    again.load_state_dict(tr.state_dict())
    assert again == tr


@pytest.mark.parametrize("name", ["vae_bo", "gan_search"])
def test_generative_strategies_never_propose_an_evaluated_genotype(name):
    """Every proposal is a new genotype (checked against all evaluated hashes), so no
    duplicate is told and every query is new; VAE-BO's sampler proposes inside the
    trust region once it has started."""
    from dnas_plugins.generators import GraphGAN, GraphVAE
    from dnas_plugins.strategies.generative import VAEBO, GANSearch
    from dnas_plugins.strategies.query import run_queries

    space = _space()
    if name == "vae_bo":
        strat = VAEBO(queries=40, pretrain_samples=500)  # a VAE that decodes valid cells
        strat.generator = GraphVAE(epochs=10, hidden=32, latent_dim=8, batch_size=64, lr=4e-3)
    else:
        strat = GANSearch(queries=40, initial=8, per_round=4, top_k=4, candidates=60)
        strat.generator = GraphGAN(steps=3, hidden=16)
    asked, told, in_region = [], [], []
    ask, tell = strat.ask, strat.tell

    def spy_ask(state):
        g = ask(state)
        asked.append((g.hash(), state.is_seen(g)))
        if name == "vae_bo" and strat.tr.center is not None and strat.pending is not None:
            z, (lo, hi) = strat.pending[2], strat.region()
            assert np.all(hi - lo < np.subtract(strat.bounds[1], strat.bounds[0]))  # a box inside the latent range
            in_region.append(bool(np.all(z >= lo - 1e-9) and np.all(z <= hi + 1e-9)))
        return g

    def spy_tell(state, g, score, new):
        told.append(new)
        tell(state, g, score, new)

    strat.ask, strat.tell = spy_ask, spy_tell
    ev = _table_evaluator()
    state = run_queries(strat, space, ev, 40, seed=1)
    assert len(asked) == 40 and not any(seen for _, seen in asked) and all(told)
    assert len({h for h, _ in asked}) == 40 == len({h["genotype"]["hash"] for h in state.history})
    if name == "vae_bo":
        assert in_region and all(in_region)


def test_vae_bo_gp_sampler_polishes_the_acquisition_with_the_configured_runs():
    """``sampler: gp`` uses Optuna's GPSampler with ``gp_local_search`` L-BFGS-B runs per
    proposal (the cost that made it slow), and still proposes only unseen genotypes."""
    import optuna
    from dnas_plugins.generators import GraphVAE
    from dnas_plugins.strategies.generative import VAEBO
    from dnas_plugins.strategies.query import run_queries

    strat = VAEBO(queries=20, pretrain_samples=300, sampler="gp", gp_local_search=3)
    strat.generator = GraphVAE(epochs=5, hidden=32, latent_dim=8, batch_size=64, lr=4e-3)
    state = run_queries(strat, _space(), _table_evaluator(), 20, seed=0)
    assert isinstance(strat.study.sampler, optuna.samplers.GPSampler)
    assert strat.study.sampler._n_local_search == 3
    assert len({h["genotype"]["hash"] for h in state.history}) == 20


@pytest.mark.parametrize("design", ["space", "latent"])
def test_vae_bo_initial_design_opens_every_local_run(design):
    """``initial_design: space``: the first ``n_startup`` queries of the search and of
    every local run after a trust-region restart are uniform draws from the space (the
    loop's random stream, not sampler proposals), and the trust region opens after
    them. ``latent``: they are the sampler's (decoded) points of the whole latent box."""
    from dnas_plugins.generators import GraphVAE
    from dnas_plugins.strategies.generative import VAEBO
    from dnas_plugins.strategies.query import run_queries

    from dnas_core.seeding import derive_seed

    space, n = _space(), 4
    # A trust region that halves below its minimum after two failures: restarts happen.
    strat = VAEBO(queries=40, pretrain_samples=500, n_startup=n, initial_design=design, tr_failure_tol=2,
                  tr_length_min=0.3)
    strat.generator = GraphVAE(epochs=10, hidden=32, latent_dim=8, batch_size=64, lr=4e-3)
    queries = []  # (proposed by the sampler, trust region open, restarts so far) per query
    ask = strat.ask

    def spy_ask(state):
        g = ask(state)
        proposed = strat.pending is not None and strat.pending[1] == g.hash()
        queries.append((proposed, strat.tr.center is not None, strat.tr.restarts))
        return g

    strat.ask = spy_ask
    state = run_queries(strat, space, _table_evaluator(), 40, seed=3)
    assert strat.tr.restarts >= 1
    # Each local run (the first, and one after every restart) opens with n queries
    # outside any trust region, then works inside one.
    runs = [[q for q in queries if q[2] == r] for r in range(strat.tr.restarts + 1)]
    for run in runs[:-1]:
        assert [open_ for _, open_, _ in run[:n]] == [False] * n and all(open_ for _, open_, _ in run[n:])
    if design == "space":
        assert not any(proposed for run in runs for proposed, _, _ in run[:n])
        rng = np.random.default_rng(derive_seed(3, "search", "vae_bo"))
        first = []
        while len(first) < n:  # the loop's stream: unseen uniform draws
            g = space.sample(rng)
            first += [g.hash()] if g.hash() not in first else []
        assert [h["genotype"]["hash"] for h in state.history[:n]] == first
    else:
        assert all(proposed for proposed, _, _ in runs[0][:n])


@pytest.mark.parametrize("negatives", [True, False])
def test_gan_rounds_pass_the_evaluated_cells_outside_the_top_set_as_negatives(negatives):
    """Each round fits the GAN on the top_k best cells so far and, unless
    ``negatives: false``, on every other evaluated cell as a negative."""
    from dnas_plugins.generators import GraphGAN
    from dnas_plugins.strategies.generative import GANSearch
    from dnas_plugins.strategies.query import run_queries

    strat = GANSearch(queries=20, initial=8, per_round=4, top_k=3, candidates=40, negatives=negatives)
    strat.generator = GraphGAN(steps=2, hidden=16)
    fits, fit = [], strat.generator.fit

    def spy_fit(graphs, scores=None, negatives=()):
        fits.append((len(graphs), len(negatives)))
        return fit(graphs, scores, negatives=negatives)

    strat.generator.fit = spy_fit
    run_queries(strat, _space(), _table_evaluator(), 20, seed=0)
    # Rounds start after 8, 12 and 16 queries.
    assert fits == [(3, (q - 3) if negatives else 0) for q in (8, 12, 16)]


def test_gan_rounds_are_filled_by_the_generator_not_by_random_cells():
    """A generated graph whose adjacency is not the NAS-Bench-201 DAG keeps its operations
    and takes the top set's DAG. Without that, most generated graphs failed to decode
    and rounds were silently filled with random cells (random search under another name)."""
    from dnas_plugins.generators import GraphGAN
    from dnas_plugins.strategies.generative import GANSearch
    from dnas_plugins.strategies.query import run_queries

    strat = GANSearch(queries=40, initial=10, per_round=10)
    strat.generator = GraphGAN()
    rounds, round_fn = [], strat._round

    def spy_round(state):
        round_fn(state)
        rounds.append(dict(strat.last_fit))

    strat._round = spy_round
    run_queries(strat, _space(), _table_evaluator(), 40, seed=0)
    assert len(rounds) == 3
    assert all(r["random_fill"] == 0 and r["fresh_candidates"] >= 10 for r in rounds), rounds
