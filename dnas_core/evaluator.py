"""The evaluator abstraction: how a query-based search gets the score of a genotype.

A query-based strategy (random search, evolution, latent-space BO, the GAN loop)
never trains or looks anything up itself: it asks an :class:`Evaluator`. An evaluator

* is set up once per search with :meth:`Evaluator.setup` (the run's task and space:
  a weight-sharing evaluator trains its supernet there);
* answers :meth:`Evaluator.evaluate` with one float, higher is better when
  ``direction == "maximize"``;
* caches every answer by :meth:`Genotype.hash`, so asking twice costs one query;
* counts the queries it really answered and the wall time they took
  (:meth:`Evaluator.stats`), which is what query-efficiency benchmarks compare.

Subclasses implement :meth:`Evaluator.score` only.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from .components import Component
from .genotype import Genotype


class Evaluator(Component):
    """Base class of evaluators. Implement :meth:`score` (and :meth:`setup` if the
    evaluator needs the task or trains something first)."""

    #: ``"maximize"`` or ``"minimize"``: the direction of :meth:`score`.
    direction: ClassVar[str] = "maximize"

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._cache: dict[str, float] = {}
        self.queries = 0
        self.cache_hits = 0
        self.seconds = 0.0
        self.setup_seconds = 0.0
        self._ready = False

    # -- what subclasses implement ------------------------------------------------------
    def prepare(self, run: Any) -> None:
        """Get ready to score genotypes of ``run.space`` on ``run.task`` (train a
        supernet, open a table, ...). ``run`` is a :class:`dnas_core.RunContext` or any
        object with ``task``, ``space``, ``seed`` and ``device``; may be ``None`` for
        evaluators that need neither. Default: nothing."""

    def score(self, genotype: Genotype) -> float:
        """The score of one genotype (uncached, uncounted: :meth:`evaluate` does that)."""
        raise NotImplementedError

    @property
    def metric(self) -> str:
        """The name of what :meth:`score` returns (for logs and the run store)."""
        return "score"

    def task_descriptor(self, run: Any) -> dict[str, Any]:
        """The task the scores belong to, for the run store. Default: the run's task;
        a tabular benchmark evaluator names its benchmark data set instead."""
        return run.task.descriptor()

    # -- the public interface -------------------------------------------------------------
    def setup(self, run: Any) -> None:
        """Call :meth:`prepare` once (timed in ``stats()['setup_seconds']``)."""
        if self._ready:
            return
        t0 = time.perf_counter()
        self.prepare(run)
        self.setup_seconds += time.perf_counter() - t0
        self._ready = True

    def evaluate(self, genotype: Genotype) -> float:
        """The cached score of ``genotype``; a cache miss counts one query."""
        key = genotype.hash()
        if key in self._cache:
            self.cache_hits += 1
            return self._cache[key]
        t0 = time.perf_counter()
        value = float(self.score(genotype))
        self.seconds += time.perf_counter() - t0
        self.queries += 1
        self._cache[key] = value
        return value

    def cached(self, genotype: Genotype) -> float | None:
        """The score of an already evaluated genotype, else ``None`` (costs nothing)."""
        return self._cache.get(genotype.hash())

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b

    def stats(self) -> dict[str, float]:
        return {"queries": self.queries, "cache_hits": self.cache_hits,
                "seconds": round(self.seconds, 4), "setup_seconds": round(self.setup_seconds, 4)}

    # -- checkpoints (plain values only: loadable with torch.load(weights_only=True)) ----
    def state_dict(self) -> dict[str, Any]:
        return {"cache": dict(self._cache), "queries": self.queries, "cache_hits": self.cache_hits,
                "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cache = {str(k): float(v) for k, v in state["cache"].items()}
        self.queries = int(state["queries"])
        self.cache_hits = int(state["cache_hits"])
        self.seconds = float(state["seconds"])
