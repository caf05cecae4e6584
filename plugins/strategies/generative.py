"""Generator-based query strategies.

* ``vae_bo``: Bayesian optimisation in the latent space of an architecture VAE
  (arch2vec-style). The VAE is trained without labels on sampled architectures (or
  its weights come from an earlier run); Optuna's TPE or GP sampler proposes latent
  coordinates, each is decoded, mapped to a genotype by the space, de-duplicated by
  hash and evaluated. Genotypes the sampler did not propose (warm-start seeds,
  random fall-backs) are told to the study at their encoded latent coordinates.
  After an initial design (``n_startup`` genotypes drawn uniformly from the space)
  the sampler works inside a TuRBO trust region around the incumbent's latent point
  (LOL-BO): an unsupervised latent space is smooth locally (cells one edit apart lie
  close), not globally, so a local model of one region is what a few dozen scores can teach a sampler.
* ``gan_search``: the GA-NAS loop. After an initial random set, every round retrains
  the architecture GAN's discriminator on the best ``top_k`` architectures found so far
  against generated ones (and the generator to fool it), generates ``candidates``
  graphs, keeps the valid unseen ones and queries the ``per_round`` the discriminator
  rates most top-like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import optuna
from pydantic import Field

from dnas_core import Genotype, hookimpl
from dnas_core.progress import log
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


def _decode_snapped(state: SearchState, graph: Any, adjacencies: list[np.ndarray]) -> tuple[Genotype | None, bool]:
    """Decode ``graph``; if its adjacency is not a valid cell, keep its operations and try
    the adjacencies of ``adjacencies`` (the top set's), closest first. On a space whose
    cells share one DAG (NAS-Bench-201) that is the DAG itself: the generator then only
    has to get the operations right. Returns (genotype or None, whether it was snapped)."""
    g = _decode(state, graph)
    if g is not None or not adjacencies:
        return g, False
    from dnas_core.genotype import GraphEncoding

    mine = graph.adjacency > 0.5
    same_size = [a for a in adjacencies if a.shape == mine.shape]
    for adj in sorted(same_size, key=lambda a: int(((a > 0.5) != mine).sum())):
        g = _decode(state, GraphEncoding(adj, graph.ops, graph.op_names))
        if g is not None:
            return g, True
    return None, False


# ---------------------------------------------------------------------------------
# Latent-space Bayesian optimisation
# ---------------------------------------------------------------------------------


class VAEBOConfig(QueryConfig):
    generator: dict[str, Any] = Field(default_factory=lambda: {"type": "graph_vae"},
                                      description="the graph_vae settings: {type: graph_vae, latent_dim: ..., ...}")
    pretrain_samples: int = Field(2000, ge=10, description="random genotypes the VAE learns from (no scores used)")
    sampler: Literal["tpe", "gp"] = Field("tpe", description="Optuna sampler over latent coordinates")
    n_startup: int = Field(10, ge=1, description="queries of the initial design that opens each local run "
                           "(the trust region starts at their best), and trials before the sampler models the scores")
    initial_design: Literal["space", "latent"] = Field(
        "space", description="where the n_startup queries come from: genotypes drawn uniformly from the space "
        "(told to the sampler at their latent means) or decoded from uniform points of the latent box")
    trust_region: bool = Field(True, description="sample inside a TuRBO-style box around the incumbent's latent point")
    tr_length: float = Field(0.4, gt=0, description="initial side of the trust region, as a share of the latent range")
    tr_length_min: float = Field(0.1, gt=0, description="a trust region shrunk below this restarts (about the "
                                 "latent distance of genotypes one edit apart: smaller boxes decode to one)")
    tr_length_max: float = Field(1.6, gt=0, description="largest side of the trust region")
    tr_success_tol: int = Field(3, ge=1, description="improvements in a row that double the trust region")
    tr_failure_tol: int = Field(8, ge=1, description="queries without improvement in a row that halve it")
    gp_local_search: int = Field(2, ge=1, description="gp sampler: L-BFGS-B runs that polish each acquisition "
                                 "optimum (Optuna's default 10 costs five times as much)")


@dataclass
class LatentTrustRegion:
    """A TuRBO trust region (Eriksson et al., 2019) in latent space, as LOL-BO
    (Maus et al., 2022) uses it over a VAE: a box centred on the best latent point
    of the current local run, ``length`` times the latent range wide. It doubles
    after ``success_tol`` improvements in a row and halves after ``failure_tol``
    queries without one; shrunk below ``length_min`` the local run ends and the next
    one starts from the whole latent box (``center`` is ``None`` until its first
    query; ``started_at`` is the query count when it started). Scores are compared
    in the evaluator's direction by ``better``."""

    length: float
    length_init: float
    length_min: float
    length_max: float
    success_tol: int
    failure_tol: int
    center: list[float] | None = None
    best: float | None = None
    successes: int = 0
    failures: int = 0
    restarts: int = 0
    started_at: int = 0

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The region inside the global latent box ``[lo, hi]`` (the whole box before
        the local run has a centre)."""
        if self.center is None:
            return lo, hi
        half = 0.5 * self.length * (hi - lo)
        c = np.asarray(self.center)
        return np.maximum(lo, c - half), np.minimum(hi, c + half)

    def begin(self, z: np.ndarray, score: float) -> None:
        """Start a local run centred on latent point ``z`` (score ``score``)."""
        self.center, self.best = [float(v) for v in z], float(score)
        self.length, self.successes, self.failures = self.length_init, 0, 0

    def update(self, z: np.ndarray, score: float, better: Callable[[float, float], bool]) -> str:
        """Count one answered query at latent point ``z``; returns what changed:
        ``"moved"`` (new best, same size), ``"grown"``, ``"shrunk"``, ``"restart"``
        or ``""``."""
        if self.best is None or better(score, self.best):
            self.best, self.center = float(score), [float(v) for v in z]
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.success_tol:
                self.length, self.successes = min(2 * self.length, self.length_max), 0
                return "grown"
            return "moved"
        self.successes, self.failures = 0, self.failures + 1
        if self.failures < self.failure_tol:
            return ""
        self.length, self.failures = self.length / 2, 0
        if self.length >= self.length_min:
            return "shrunk"
        self.length, self.center, self.best, self.restarts = self.length_init, None, None, self.restarts + 1
        return "restart"

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class VAEBO(QueryStrategy):
    """Bayesian optimisation (Optuna TPE/GP) over an architecture VAE's latent space,
    inside a trust region around the incumbent (LOL-BO style)."""

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
                log(f"[search] warm start: the {self.generator.name} generator of extends_runs is reused, not retrained")
        sample_rng = np.random.default_rng(derive_seed(state.seed, "vae_bo", "pretrain"))
        graphs = self._pretrain_graphs(state, sample_rng)
        if self.generator.model is None:
            self.pretrain_stats = self.generator.fit(graphs)
        mu = self.generator.encode(graphs)
        # The range of the encoded training set: the latent scale is set by the VAE's
        # (small) KL weight, not N(0, 1), so no fixed clip fits every VAE.
        self.bounds = (mu.min(0).tolist(), mu.max(0).tolist())
        self.queue = list(state.warm)
        #: Every score the sampler may learn from, at its latent point: answered
        #: queries and the free cached / invalid ones (duplicate or invalid decodes).
        self.trials: list[tuple[list[float], float]] = []
        self.tr = self._new_trust_region()
        self.studies = 0
        self._open_study(state)

    def _new_trust_region(self) -> LatentTrustRegion | None:
        cfg = self.config
        if not cfg.trust_region:
            return None
        return LatentTrustRegion(length=cfg.tr_length, length_init=cfg.tr_length, length_min=cfg.tr_length_min,
                                 length_max=cfg.tr_length_max, success_tol=cfg.tr_success_tol,
                                 failure_tol=cfg.tr_failure_tol)

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

    def region(self) -> tuple[np.ndarray, np.ndarray]:
        """The latent box the sampler proposes in now (the trust region, or the
        range of the encoded training set without one)."""
        lo, hi = np.asarray(self.bounds[0], dtype=float), np.asarray(self.bounds[1], dtype=float)
        return self.tr.box(lo, hi) if self.tr is not None else (lo, hi)

    def _open_study(self, state: SearchState) -> None:
        """A fresh study over :meth:`region`, told every known score inside it. Optuna
        samplers need one fixed search space per study, so a moved or resized trust
        region gets a new study (the TuRBO local model sees the points in its region)."""
        cfg = self.config
        seed = derive_seed(state.seed, "vae_bo", "sampler", self.studies) % (2**31)
        self.studies += 1
        if cfg.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup)
            # Optuna polishes the acquisition optimum with 10 L-BFGS-B runs: most of a
            # proposal's time here (0.20 s of 0.24 s over a 100-query run). The point is then
            # decoded to a discrete cell, where a finer optimum buys little. The attribute
            # is private (Optuna 5 names its acquisition optimiser as the place to tune,
            # without a compatibility promise); where it is missing the default stays.
            if hasattr(sampler, "_n_local_search"):
                sampler._n_local_search = cfg.gp_local_search
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=cfg.n_startup)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction=state.evaluator.direction, sampler=sampler)
        lo, hi = self.region()
        self.dists = {f"z{i}": optuna.distributions.FloatDistribution(float(lo[i]), float(hi[i]))
                      for i in range(len(lo))}
        inside = [optuna.trial.create_trial(params=dict(zip(self.dists, z, strict=True)), distributions=self.dists,
                                            value=v)
                  for z, v in self.trials if all(lo[i] <= z[i] <= hi[i] for i in range(len(lo)))]
        self.study.add_trials(inside)
        self.pending: tuple[Any, str, np.ndarray] | None = None
        self.stale = False

    def ask(self, state: SearchState) -> Genotype:
        if self.queue:
            return self.queue.pop(0)
        if self._in_initial_design(state):
            g = state.random_unseen()
            if g is not None:
                return g
        if self.stale:
            self._open_study(state)
        trial = self.study.ask(self.dists)
        z = np.array([trial.params[k] for k in self.dists])
        g = _decode(state, self.generator.decode(z[None])[0])
        if g is not None and not state.is_seen(g):
            self.pending = (trial, g.hash(), z)
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
            self.trials.append(([float(v) for v in z], float(score)))
        # ... and the query goes to the nearest unseen genotype around the proposed point
        # (told to the sampler at its own latent mean).
        return self._nearest_unseen(state, z)

    def _in_initial_design(self, state: SearchState) -> bool:
        """Whether the next query belongs to a uniform initial design over the space:
        the first ``n_startup`` queries of each local run (of the search, without a
        trust region). Uniform draws are the unbiased design whatever the VAE (its own
        training set or an earlier run's): points decoded from a uniform latent box
        depend on how the decoder divides the box (on NAS-Bench-201, 5,000 of them
        decode to 3,827 distinct cells, 5,000 uniform draws are 4,269)."""
        cfg = self.config
        if cfg.initial_design != "space":
            return False
        if self.tr is None:
            return len(state.history) < cfg.n_startup
        return self.tr.center is None and len(state.history) - self.tr.started_at < cfg.n_startup

    def _nearest_unseen(self, state: SearchState, z: np.ndarray) -> Genotype:
        lo, hi = self.region()
        # Start at a small share of the region's width: a small trust region looks close by.
        scales = 0.05 * float(np.mean(hi - lo)) * 1.25 ** np.arange(24)
        noise = state.rng.standard_normal((len(scales), 8, len(z)))
        points = (z[None, None, :] + scales[:, None, None] * noise).reshape(-1, len(z))
        for graph in self.generator.decode(points):
            g = _decode(state, graph)
            if g is not None and not state.is_seen(g):
                return g
        g = state.random_unseen()
        return g if g is not None else state.space.sample(state.rng)

    def tell(self, state: SearchState, genotype: Genotype, score: float, new: bool) -> None:
        # The trust region is centred on the latent mean of the best genotype.
        mean = self.generator.encode([state.space.encode(genotype)])[0]
        if self.pending is not None and self.pending[1] == genotype.hash():
            trial, _, z = self.pending
            self.pending = None
            self.study.tell(trial, score)
            self.trials.append(([float(v) for v in z], float(score)))
        else:
            # A genotype the sampler did not propose: place it at its latent mean.
            lo, hi = self.bounds
            z = [float(np.clip(mean[i], lo[i], hi[i])) for i in range(len(lo))]
            self.trials.append((z, float(score)))
            if not self.stale:
                box_lo, box_hi = self.region()
                if all(box_lo[i] <= z[i] <= box_hi[i] for i in range(len(z))):
                    self.study.add_trial(optuna.trial.create_trial(
                        params=dict(zip(self.dists, z, strict=True)), distributions=self.dists, value=score))
        if not new or self.tr is None:
            return
        lo, hi = self.bounds
        if self.tr.center is not None:
            change = self.tr.update(np.clip(mean, lo, hi), score, state.evaluator.better)
            if change == "restart":
                self.tr.started_at = len(state.history)
            self.stale = self.stale or bool(change)
        elif len(state.history) - self.tr.started_at >= self.config.n_startup:
            # A local run starts at the best of its first n_startup queries (its initial
            # design: uniform over the space, or over the whole latent box).
            since = state.history[self.tr.started_at:]
            rev = state.evaluator.direction == "maximize"
            top = sorted(since, key=lambda h: h["score"], reverse=rev)[0]
            best = state.space.encode(Genotype.from_json(top["genotype"]))
            self.tr.begin(np.clip(self.generator.encode([best])[0], lo, hi), top["score"])
            self.stale = True

    def strategy_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "bounds": [list(self.bounds[0]), list(self.bounds[1])],
                "trials": [[list(z), v] for z, v in self.trials], "queue": [g.to_json() for g in self.queue],
                "trust_region": self.tr.state_dict() if self.tr is not None else None, "studies": self.studies}

    def load_strategy_state(self, state: SearchState, saved: dict[str, Any]) -> None:
        if self.generator is None:
            self.generator = _make_generator(self.config.generator, "graph_vae")
        self.generator.load_state_dict(saved["generator"])
        self.bounds = (list(saved["bounds"][0]), list(saved["bounds"][1]))
        # Checkpoints of the single-study version kept Optuna params ({"z0": ...}).
        self.trials = [([float(v) for v in (z.values() if isinstance(z, dict) else z)], float(s))
                       for z, s in saved["trials"]]
        self.tr = self._new_trust_region()
        if self.tr is not None and saved.get("trust_region"):
            self.tr.load_state_dict(saved["trust_region"])
        self.studies = int(saved.get("studies", 0))
        self._open_study(state)
        self.queue = [Genotype.from_json(g) for g in saved["queue"]]

    def generator_tensors(self) -> dict[str, dict[str, Any]]:
        return {f"generator/{self.generator.name}": self.generator.state_dict()} if self.generator else {}


# ---------------------------------------------------------------------------------
# The GAN loop
# ---------------------------------------------------------------------------------


class GANSearchConfig(QueryConfig):
    generator: dict[str, Any] = Field(default_factory=lambda: {"type": "graph_gan"},
                                      description="the graph_gan settings: {type: graph_gan, steps: ..., ...}")
    initial: int = Field(10, ge=1, description="random genotypes queried before the first GAN round")
    top_k: int = Field(10, ge=1, description="best genotypes so far that the discriminator treats as real")
    per_round: int = Field(5, ge=1, description="queries per round (smaller: the top set is updated more often)")
    candidates: int = Field(500, ge=1, description="graphs generated per round, ranked by the discriminator")
    negatives: bool = Field(True, description="the discriminator also sees the evaluated architectures outside "
                                              "the top set as fakes (it learns what weak graphs look like)")


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
        ranked = state.top(len(state.history))
        top = [state.space.encode(g) for g, _ in ranked[: cfg.top_k]]
        rest = [state.space.encode(g) for g, _ in ranked[cfg.top_k:]] if cfg.negatives else []
        self.last_fit = self.generator.fit(top, negatives=rest)
        fresh: dict[str, tuple[Genotype, Any]] = {}
        adjacencies = list({a.adjacency.tobytes(): a.adjacency for a in top}.values())
        generated = snapped = 0
        # A generator collapsed onto the top set proposes little that is new: widen its
        # sampling until there are enough unseen candidates to rank.
        for spread in (1.0, 2.0, 4.0, 8.0):
            for graph in self.generator.generate(cfg.candidates, state.rng, spread=spread):
                generated += 1
                g, was_snapped = _decode_snapped(state, graph, adjacencies)
                snapped += was_snapped
                if g is not None and not state.is_seen(g) and g.hash() not in fresh:
                    # the discriminator rates the graph as decoded (snapped adjacency included)
                    fresh[g.hash()] = (g, state.space.encode(g))
            if len(fresh) >= 3 * cfg.per_round:
                break
        self.last_fit["fresh_candidates"] = float(len(fresh))
        self.last_fit["snapped_share"] = snapped / max(generated, 1)
        self.queue = []
        if fresh:
            items = list(fresh.values())
            rating = self.generator.discriminate([graph for _, graph in items])
            order = np.argsort(-rating, kind="stable")
            self.queue = [items[i][0] for i in order[: cfg.per_round]]
        # A round always spends per_round queries (random unseen ones fill a short round),
        # so the GAN is retrained once per round, not once per query.
        filled = 0
        while len(self.queue) < cfg.per_round:
            g = state.random_unseen()
            if g is None or g in self.queue:
                break
            self.queue.append(g)
            filled += 1
        self.last_fit["random_fill"] = float(filled)  # proposals the generator did not make

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
