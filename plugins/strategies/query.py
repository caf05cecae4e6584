"""The shared loop of query-based strategies (random search, regularised evolution,
latent-space BO, the GAN loop).

A query-based strategy proposes genotypes (:meth:`QueryStrategy.ask`) and learns from
their scores (:meth:`QueryStrategy.tell`); an :class:`dnas_core.Evaluator` chosen in
the strategy's config answers the queries. The loop (:func:`run_queries`)

* skips genotypes already evaluated (their cached score is told again, at no query
  cost) and, after ``max_duplicates`` duplicates in a row, queries a random unseen
  genotype instead, so a converged proposer cannot stall the search;
* stops after ``queries`` answered queries;
* starts from warm-start genotypes (the best of the ``extends_runs`` records) when there
  are any: evolution takes them into its first population, BO and the GAN loop
  query them first.

Inside a run (:meth:`QueryStrategy.search`) every query is logged with
``run.log_epoch`` (``epoch`` = query index), the state is checkpointed every
``checkpoint_every`` queries (plain values and tensors only) and a resumed run
continues from the last checkpoint. At the end the evaluations and the generator
weights go to the run store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pydantic import Field, field_validator

from dnas_core import ComponentConfig, Evaluator, Genotype, SearchOutcome, SearchSpace, Strategy
from dnas_core.progress import log
from dnas_core.registry import Registry
from dnas_core.seeding import derive_seed


class QueryConfig(ComponentConfig):
    queries: int = Field(100, ge=1, description="evaluator queries (genotypes evaluated) the search may spend")
    evaluator: dict[str, Any] = Field(
        default_factory=lambda: {"type": "nb201_table", "dataset": "cifar10"},
        description="the evaluator answering queries: {type: <evaluator name>, ...its settings}")
    warm_start_top: int = Field(10, ge=0, description="best genotypes of the extends_runs records to start from")
    checkpoint_every: int = Field(10, ge=1, description="checkpoint every N queries")
    max_duplicates: int = Field(50, ge=1, description="duplicate proposals in a row before a random unseen genotype is queried")

    @field_validator("evaluator")
    @classmethod
    def _has_type(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("type"), str) or not value["type"]:
            raise ValueError("needs a 'type' naming an installed evaluator (see `dnas plugins`)")
        return value


@dataclass
class SearchState:
    """What the loop and the strategy share during one search."""

    space: SearchSpace
    evaluator: Evaluator
    rng: np.random.Generator
    seed: int
    warm: list[Genotype] = field(default_factory=list)
    store: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[Genotype, float] | None = None

    def record(self, genotype: Genotype, score: float) -> None:
        self.history.append({"genotype": genotype.to_json(), "score": float(score)})
        if self.best is None or self.evaluator.better(score, self.best[1]):
            self.best = (genotype, float(score))

    def evaluated(self) -> list[tuple[Genotype, float]]:
        return [(Genotype.from_json(h["genotype"]), h["score"]) for h in self.history]

    def top(self, k: int) -> list[tuple[Genotype, float]]:
        """The ``k`` best evaluations so far, best first."""
        rev = self.evaluator.direction == "maximize"
        return sorted(self.evaluated(), key=lambda gs: gs[1], reverse=rev)[:k]

    def is_seen(self, genotype: Genotype) -> bool:
        return self.evaluator.cached(genotype) is not None

    def random_unseen(self, tries: int = 2000) -> Genotype | None:
        for _ in range(tries):
            g = self.space.sample(self.rng)
            if not self.is_seen(g):
                return g
        return None

    def curve(self) -> list[float]:
        """Best score after each query."""
        out, best = [], None
        for h in self.history:
            s = h["score"]
            best = s if best is None or self.evaluator.better(s, best) else best
            out.append(best)
        return out


class QueryStrategy(Strategy):
    """Base of query-based strategies: implement :meth:`ask` and :meth:`tell`."""

    Config = QueryConfig

    # -- what subclasses implement ----------------------------------------------------
    def start(self, state: SearchState) -> None:
        """Prepare before the first query (train a generator, open a study, ...)."""

    def ask(self, state: SearchState) -> Genotype:
        raise NotImplementedError

    def tell(self, state: SearchState, genotype: Genotype, score: float, new: bool) -> None:
        """Learn from a score; ``new`` is false when ``genotype`` was evaluated before
        (a duplicate proposal told its cached score)."""

    def strategy_state(self) -> dict[str, Any]:
        """Resumable state (tensors and plain values)."""
        return {}

    def load_strategy_state(self, state: SearchState, saved: dict[str, Any]) -> None:
        pass

    def generator_tensors(self) -> dict[str, dict[str, Any]]:
        """Generator weights worth keeping in the run store, by run-store key."""
        return {}

    def round_metrics(self) -> dict[str, float]:
        """Extra figures logged with each query (generator losses, ...)."""
        return {}

    # -- the run ----------------------------------------------------------------------
    def make_evaluator(self, registry: Registry) -> Evaluator:
        spec = dict(self.config.evaluator)
        name = spec.pop("type")
        if name not in registry:
            from dnas_core import ManifestError

            raise ManifestError(f"strategy.evaluator.type: {registry._unknown_message(name)}")
        cfg = registry.validate_config(name, spec, where="strategy.evaluator")
        return registry.get(name)(cfg)

    def search(self, run: Any) -> SearchOutcome:
        from dnas_core import runstore

        cfg = self.config
        evaluator = self.make_evaluator(run.pm.registries.evaluators)
        evaluator.setup(run)
        store = runstore.RunStore.from_run(run)
        warm = store.top_genotypes(run.space.name, cfg.warm_start_top) if len(store) and cfg.warm_start_top else []
        if run.manifest.extends_runs and cfg.warm_start_top:
            if warm:
                log(f"[search] warm start: the {len(warm)} best {run.space.name} genotypes of extends_runs are "
                    "queried first")
            else:
                import warnings

                warnings.warn(f"extends_runs: none of the listed runs searched the {run.space.name} space; the "
                              "search starts from scratch", stacklevel=2)
        ckpt = run.load_checkpoint("search")
        if ckpt is not None:
            run.run_dir.truncate_metrics("search", len(ckpt["history"]))
        with run.progress("search", cfg.queries, 1, start_epoch=len(ckpt["history"]) if ckpt else 0) as bar:
            def on_query(state: SearchState) -> None:
                q = len(state.history)
                metrics = {"score": state.history[-1]["score"], "best": state.best[1], "queries": evaluator.queries,
                           "eval_seconds": round(evaluator.seconds, 4), **self.round_metrics()}
                bar.step()
                run.log_epoch("search", q - 1, metrics, progress=bar)
                if q % cfg.checkpoint_every == 0 or q == cfg.queries:
                    run.save_checkpoint("search", self._checkpoint(state))

            state = run_queries(self, run.space, evaluator, cfg.queries, seed=run.seed, warm=warm, store=store,
                                on_query=on_query, resume=ckpt)
        runstore.save_search(run, state.history, evaluator.metric, evaluator.direction,
                             task=evaluator.task_descriptor(run))
        for key, tensors in self.generator_tensors().items():
            runstore.save_tensors(run, key, tensors)
        if state.best is None:
            from dnas_core import RunFailed

            raise RunFailed(f"{self.name}: no genotype was evaluated")
        genotype, score = state.best
        summary = {"queries": evaluator.queries, "best_score": score, "metric": evaluator.metric,
                   "evaluator": {"type": evaluator.name, **evaluator.stats()}, "warm_start": len(warm),
                   "best_curve": state.curve()}
        pretrain = getattr(self, "pretrain_stats", None)  # generator strategies: how their model was obtained
        if pretrain:
            summary["generator_pretrain"] = dict(pretrain)
        return SearchOutcome(genotype=genotype, summary=summary)

    def _checkpoint(self, state: SearchState) -> dict[str, Any]:
        return {"history": list(state.history), "evaluator": state.evaluator.state_dict(),
                "rng": state.rng.bit_generator.state, "strategy": self.strategy_state(),
                "warm": [g.to_json() for g in state.warm]}


def run_queries(strategy: QueryStrategy, space: SearchSpace, evaluator: Evaluator, budget: int, seed: int = 0,
                warm: list[Genotype] | None = None, store: Any = None,
                on_query: Callable[[SearchState], None] | None = None,
                resume: dict[str, Any] | None = None) -> SearchState:
    """Run ``strategy`` until ``evaluator`` has answered ``budget`` queries. Usable
    without a run (benchmarks call it directly); the evaluator must be set up."""
    rng = np.random.default_rng(derive_seed(seed, "search", strategy.name))
    state = SearchState(space=space, evaluator=evaluator, rng=rng, seed=seed, warm=list(warm or []), store=store)
    if resume is not None:
        evaluator.load_state_dict(resume["evaluator"])
        state.warm = [Genotype.from_json(g) for g in resume.get("warm", [])]
        for h in resume["history"]:
            state.record(Genotype.from_json(h["genotype"]), h["score"])
        rng.bit_generator.state = resume["rng"]
        strategy.load_strategy_state(state, resume["strategy"])
    else:
        strategy.start(state)
    max_dup = getattr(strategy.config, "max_duplicates", 50)
    streak = 0
    while evaluator.queries < budget:
        g = strategy.ask(state)
        cached = evaluator.cached(g)
        if cached is not None:
            strategy.tell(state, g, cached, new=False)
            streak += 1
            if streak < max_dup:
                continue
            g = state.random_unseen()
            if g is None:
                break  # (nearly) the whole space has been evaluated
        streak = 0
        score = evaluator.evaluate(g)
        state.record(g, score)
        strategy.tell(state, g, score, new=True)
        if on_query is not None:
            on_query(state)
    return state
