"""The baselines every query-efficiency comparison needs: random search and
regularised (aging) evolution (Real et al., 2019). Both work on any space: random
search through ``space.sample``, evolution by mutating the graph encoding (one node's
operation, sometimes one edge) and keeping mutants the space can decode."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from pydantic import Field

from dnas_core import Genotype, SearchSpace, hookimpl

from .query import QueryConfig, QueryStrategy, SearchState


class RandomSearch(QueryStrategy):
    """Query uniformly sampled unseen genotypes."""

    name = "random_search"
    description = "random search: uniformly sampled genotypes, scored by an evaluator"
    Config = QueryConfig

    def start(self, state: SearchState) -> None:
        # Random search by definition ignores what other runs learnt.
        state.warm = []

    def ask(self, state: SearchState) -> Genotype:
        g = state.random_unseen()
        return g if g is not None else state.space.sample(state.rng)


def mutate(space: SearchSpace, genotype: Genotype, rng: np.random.Generator, edge_prob: float = 0.2,
           tries: int = 100) -> Genotype:
    """A valid genotype one graph edit away from ``genotype``: a node's operation
    changed or (with probability ``edge_prob``) one edge flipped. Falls back to a
    random sample if no edit decodes."""
    base = space.encode(genotype)
    n, f = base.ops.shape
    for _ in range(tries):
        adj, ops = base.adjacency.copy(), base.ops.copy()
        if rng.random() < edge_prob and n > 2:
            i, j = sorted(rng.choice(n, size=2, replace=False))
            adj[i, j] = 1 - adj[i, j]
        else:
            i = int(rng.integers(n))
            cur = int(ops[i].argmax())
            new = int(rng.integers(f - 1))
            new += new >= cur
            ops[i] = 0
            ops[i, new] = 1
        try:
            child = space.decode(type(base)(adj, ops, base.op_names))
        except ValueError:
            continue
        if child != genotype:
            return child
    return space.sample(rng)


class EvolutionConfig(QueryConfig):
    population: int = Field(20, ge=2, description="population size (the oldest member dies each cycle)")
    sample_size: int = Field(5, ge=1, description="tournament size; its best member is mutated")
    edge_prob: float = Field(0.2, ge=0, le=1, description="probability that a mutation flips an edge instead of an op")


class RegularizedEvolution(QueryStrategy):
    """Aging evolution: tournament selection, one mutation, the oldest member dies."""

    name = "evolution"
    description = "regularised (aging) evolution over the graph encoding"
    Config = EvolutionConfig

    def start(self, state: SearchState) -> None:
        self.population: deque[tuple[Genotype, float]] = deque()
        self.initial: list[Genotype] = list(state.warm[: self.config.population])

    def ask(self, state: SearchState) -> Genotype:
        cfg = self.config
        if len(self.population) < cfg.population:
            if self.initial:
                return self.initial.pop(0)
            g = state.random_unseen()
            return g if g is not None else state.space.sample(state.rng)
        members = list(self.population)
        picks = state.rng.choice(len(members), size=min(cfg.sample_size, len(members)), replace=False)
        rev = state.evaluator.direction == "maximize"
        parent = sorted((members[i] for i in picks), key=lambda gs: gs[1], reverse=rev)[0][0]
        return mutate(state.space, parent, state.rng, cfg.edge_prob)

    def tell(self, state: SearchState, genotype: Genotype, score: float, new: bool) -> None:
        if not new:
            return
        self.population.append((genotype, score))
        if len(self.population) > self.config.population:
            self.population.popleft()

    def strategy_state(self) -> dict[str, Any]:
        return {"population": [[g.to_json(), s] for g, s in self.population],
                "initial": [g.to_json() for g in self.initial]}

    def load_strategy_state(self, state: SearchState, saved: dict[str, Any]) -> None:
        self.population = deque((Genotype.from_json(g), float(s)) for g, s in saved["population"])
        self.initial = [Genotype.from_json(g) for g in saved["initial"]]


@hookimpl
def dnas_register_strategies():
    return [RandomSearch, RegularizedEvolution]
