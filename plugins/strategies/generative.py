"""Generator-based query strategies.

* ``vae_bo``: Bayesian optimisation in the latent space of an architecture VAE
  (arch2vec-style). The VAE is trained without labels on sampled architectures (or
  its weights come from an earlier run); Optuna's TPE or GP sampler proposes latent
  coordinates, each is decoded, mapped to a genotype by the space, de-duplicated by
  hash and evaluated. Genotypes the sampler did not propose (warm-start seeds,
  random fall-backs) are told to the study at their encoded latent coordinates.
* ``gan_search``: the GA-NAS loop. After an initial random set, every round retrains
  the architecture GAN's discriminator on the best ``top_k`` architectures found so far
  against generated ones (and the generator to fool it), generates ``candidates``
  graphs, keeps the valid unseen ones and queries the ``per_round`` the discriminator
  rates most top-like.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import optuna
from pydantic import Field

from dnas_core import Genotype, hookimpl
from dnas_core.seeding import derive_seed

from .query import QueryConfig, QueryStrategy, SearchState


def _make_generator(spec: dict[str, Any], expected: str) -> Any:
    from dnas_core import ManifestError, get_plugin_manager

    spec = dict(spec)
    name = spec.pop("type", expected)
    if name != expected:
        raise ManifestError(f"strategy.generator.type: this strategy needs a {expected!r} generator, got {name!r}")
    reg = get_plugin_manager().registries.generators
    cfg = reg.validate_config(name, spec, where="strategy.generator")
    return reg.get(name)(cfg)


def _decode(state: SearchState, graph: Any) -> Genotype | None:
    try:
        return state.space.decode(graph)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------
# Latent-space Bayesian optimisation
# ---------------------------------------------------------------------------------


class VAEBOConfig(QueryConfig):
    generator: dict[str, Any] = Field(default_factory=lambda: {"type": "graph_vae"},
                                      description="the graph_vae settings: {type: graph_vae, latent_dim: ..., ...}")
    pretrain_samples: int = Field(2000, ge=10, description="random genotypes the VAE learns from (no scores used)")
    sampler: Literal["tpe", "gp"] = Field("tpe", description="Optuna sampler over latent coordinates")
    n_startup: int = Field(10, ge=1, description="random latent points before the sampler models the scores")


class VAEBO(QueryStrategy):
    """Bayesian optimisation (Optuna TPE/GP) over an architecture VAE's latent space."""

    name = "vae_bo"
    description = "latent-space BO: Optuna TPE/GP over an architecture VAE's latent coordinates"
    Config = VAEBOConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        #: Set before the search to reuse a trained VAE (benchmarks); else built from config.
        self.generator: Any = None
        self.pretrain_stats: dict[str, float] = {}

    def start(self, state: SearchState) -> None:
        cfg = self.config
        if self.generator is None:
            self.generator = _make_generator(cfg.generator, "graph_vae")
        if self.generator.model is None and state.store is not None and len(state.store):
            saved = state.store.tensors(f"generator/{self.generator.name}")
            if saved is not None:
                self.generator.load_state_dict(saved)
                self.pretrain_stats = {"warm_started": 1.0}
        sample_rng = np.random.default_rng(derive_seed(state.seed, "vae_bo", "pretrain"))
        graphs = self._pretrain_graphs(state, sample_rng)
        if self.generator.model is None:
            self.pretrain_stats = self.generator.fit(graphs)
        mu = self.generator.encode(graphs)
        self.bounds = (np.clip(mu.min(0), -6, 0).tolist(), np.clip(mu.max(0), 0, 6).tolist())
        self.queue = list(state.warm)
        self._open_study(state)

    def _pretrain_graphs(self, state: SearchState, rng: np.random.Generator) -> list[Any]:
        seen, graphs = set(), []
        for _ in range(self.config.pretrain_samples * 3):
            g = state.space.sample(rng)
            if g.hash() not in seen:
                seen.add(g.hash())
                graphs.append(state.space.encode(g))
            if len(graphs) >= self.config.pretrain_samples:
                break
        return graphs

    def _open_study(self, state: SearchState) -> None:
        cfg = self.config
        seed = derive_seed(state.seed, "vae_bo", "sampler") % (2**31)
        if cfg.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=cfg.n_startup)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction=state.evaluator.direction, sampler=sampler)
        lo, hi = self.bounds
        self.dists = {f"z{i}": optuna.distributions.FloatDistribution(lo[i], hi[i]) for i in range(len(lo))}
        self.pending: tuple[Any, str] | None = None
        self.trials: list[tuple[dict[str, float], float]] = []

    def ask(self, state: SearchState) -> Genotype:
        if self.queue:
            return self.queue.pop(0)
        trial = self.study.ask(self.dists)
        z = np.array([trial.params[k] for k in self.dists])
        g = _decode(state, self.generator.decode(z[None])[0])
        if g is not None and not state.is_seen(g):
            self.pending = (trial, g.hash())
            return g
        if g is not None:
            # Decodes to an evaluated genotype: the sampler learns its known score (free) ...
            score = state.evaluator.cached(g)
        else:
            # ... or that an invalid point is as bad as the worst seen.
            worst = [v for _, v in self.trials]
            score = (min(worst) if state.evaluator.direction == "maximize" else max(worst)) if worst else None
        if score is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, score)
            self.trials.append((dict(trial.params), float(score)))
        # ... and the query goes to the nearest unseen genotype around the proposed point
        # (told to the sampler at its own latent mean).
        return self._nearest_unseen(state, z)

    def _nearest_unseen(self, state: SearchState, z: np.ndarray) -> Genotype:
        scales = 0.05 * 1.25 ** np.arange(24)
        noise = state.rng.standard_normal((len(scales), 8, len(z)))
        points = (z[None, None, :] + scales[:, None, None] * noise).reshape(-1, len(z))
        for graph in self.generator.decode(points):
            g = _decode(state, graph)
            if g is not None and not state.is_seen(g):
                return g
        g = state.random_unseen()
        return g if g is not None else state.space.sample(state.rng)

    def tell(self, state: SearchState, genotype: Genotype, score: float, new: bool) -> None:
        if self.pending is not None and self.pending[1] == genotype.hash():
            trial, _ = self.pending
            self.pending = None
            self.study.tell(trial, score)
            self.trials.append((dict(trial.params), float(score)))
            return
        # A genotype the sampler did not propose: place it at its latent mean.
        z = self.generator.encode([state.space.encode(genotype)])[0]
        params = {k: float(np.clip(z[i], d.low, d.high)) for i, (k, d) in enumerate(self.dists.items())}
        self.study.add_trial(optuna.trial.create_trial(params=params, distributions=self.dists, value=score))
        self.trials.append((params, float(score)))

    def strategy_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "bounds": [list(self.bounds[0]), list(self.bounds[1])],
                "trials": [[p, v] for p, v in self.trials], "queue": [g.to_json() for g in self.queue]}

    def load_strategy_state(self, state: SearchState, saved: dict[str, Any]) -> None:
        if self.generator is None:
            self.generator = _make_generator(self.config.generator, "graph_vae")
        self.generator.load_state_dict(saved["generator"])
        self.bounds = (list(saved["bounds"][0]), list(saved["bounds"][1]))
        self._open_study(state)
        for params, value in saved["trials"]:
            self.study.add_trial(optuna.trial.create_trial(params=dict(params), distributions=self.dists, value=value))
            self.trials.append((dict(params), float(value)))
        self.queue = [Genotype.from_json(g) for g in saved["queue"]]

    def generator_tensors(self) -> dict[str, dict[str, Any]]:
        return {f"generator/{self.generator.name}": self.generator.state_dict()} if self.generator else {}


# ---------------------------------------------------------------------------------
# The GAN loop
# ---------------------------------------------------------------------------------


class GANSearchConfig(QueryConfig):
    generator: dict[str, Any] = Field(default_factory=lambda: {"type": "graph_gan"},
                                      description="the graph_gan settings: {type: graph_gan, steps: ..., ...}")
    initial: int = Field(20, ge=1, description="random genotypes queried before the first GAN round")
    top_k: int = Field(10, ge=1, description="best genotypes so far that the discriminator treats as real")
    per_round: int = Field(10, ge=1, description="queries per round")
    candidates: int = Field(500, ge=1, description="graphs generated per round, ranked by the discriminator")


class GANSearch(QueryStrategy):
    """The GA-NAS loop: retrain the GAN on the top set each round, query what the
    discriminator rates highest among the generated unseen graphs."""

    name = "gan_search"
    description = "GAN loop (GA-NAS spirit): discriminator of the top set ranks generated candidates"
    Config = GANSearchConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.generator: Any = None
        self.last_fit: dict[str, float] = {}

    def start(self, state: SearchState) -> None:
        if self.generator is None:
            self.generator = _make_generator(self.config.generator, "graph_gan")
        if self.generator.gen is None and state.store is not None and len(state.store):
            saved = state.store.tensors(f"generator/{self.generator.name}")
            if saved is not None:
                self.generator.load_state_dict(saved)
        self.generator.ensure_built(state.space.encode(state.space.sample(np.random.default_rng(0))))
        self.queue: list[Genotype] = list(state.warm)

    def ask(self, state: SearchState) -> Genotype:
        cfg = self.config
        if not self.queue:
            if len(state.history) < cfg.initial:
                g = state.random_unseen()
                return g if g is not None else state.space.sample(state.rng)
            self._round(state)
        if self.queue:
            return self.queue.pop(0)
        g = state.random_unseen()
        return g if g is not None else state.space.sample(state.rng)

    def _round(self, state: SearchState) -> None:
        cfg = self.config
        top = [state.space.encode(g) for g, _ in state.top(cfg.top_k)]
        self.last_fit = self.generator.fit(top)
        fresh: dict[str, tuple[Genotype, Any]] = {}
        # A generator collapsed onto the top set proposes little that is new: widen its
        # sampling until there are enough unseen candidates to rank.
        for spread in (1.0, 2.0, 4.0, 8.0):
            for graph in self.generator.generate(cfg.candidates, state.rng, spread=spread):
                g = _decode(state, graph)
                if g is not None and not state.is_seen(g) and g.hash() not in fresh:
                    fresh[g.hash()] = (g, graph)
            if len(fresh) >= 3 * cfg.per_round:
                break
        self.last_fit["fresh_candidates"] = float(len(fresh))
        self.queue = []
        if fresh:
            items = list(fresh.values())
            rating = self.generator.discriminate([graph for _, graph in items])
            order = np.argsort(-rating, kind="stable")
            self.queue = [items[i][0] for i in order[: cfg.per_round]]
        # A round always spends per_round queries (random unseen ones fill a short round),
        # so the GAN is retrained once per round, not once per query.
        while len(self.queue) < cfg.per_round:
            g = state.random_unseen()
            if g is None or g in self.queue:
                break
            self.queue.append(g)

    def round_metrics(self) -> dict[str, float]:
        return dict(self.last_fit)

    def strategy_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "queue": [g.to_json() for g in self.queue]}

    def load_strategy_state(self, state: SearchState, saved: dict[str, Any]) -> None:
        if self.generator is None:
            self.generator = _make_generator(self.config.generator, "graph_gan")
        self.generator.load_state_dict(saved["generator"])
        self.queue = [Genotype.from_json(g) for g in saved["queue"]]

    def generator_tensors(self) -> dict[str, dict[str, Any]]:
        return {f"generator/{self.generator.name}": self.generator.state_dict()} if self.generator else {}


@hookimpl
def dnas_register_strategies():
    return [VAEBO, GANSearch]
