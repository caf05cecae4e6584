"""Hardware and size constraints (the manifest's ``constraints:`` section).

:class:`Constraints` answers, for any genotype of a space: its parameter count, its
FLOPs, its predicted latency (from the latency table of :mod:`dnas_core.latency`),
whether it meets ``max_params`` / ``max_flops`` / ``max_latency_ms``, and a penalty
for how far it misses them. Query-based strategies filter or penalise candidates
with it; differentiable strategies get :class:`SupernetConstraint`, a differentiable
expected-latency penalty and a latency-constrained derivation.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one example
(batch 1): two FLOPs per multiply-accumulate of convolutions and matrix products.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from . import distributed
from .errors import IncompatibleError, UsageError
from .genotype import Genotype
from .latency import ExpectedLatency, LatencyTable, MeasureSettings, build_latency_table
from .progress import log
from .space import Network, SearchSpace


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module: nn.Module, example: Any) -> float:
    """FLOPs of one forward pass of ``module`` on ``example``."""
    from torch.utils.flop_counter import FlopCounterMode

    module = module.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        module(*example) if isinstance(example, (tuple, list)) else module(example)
    return float(counter.get_total_flops())


def _backend_for(run: Any, section: dict[str, Any] | None):
    """The backend that measures latency: ``constraints.latency_backend`` or the run's."""
    if section is None:
        return run.backend
    section = dict(section)
    name = section.pop("type", None)
    reg = run.pm.registries.backends
    if name is None:
        raise UsageError(f"constraints.latency_backend.type: missing (choose one of: {', '.join(reg.list())})")
    if name not in reg:
        raise UsageError(f"constraints.latency_backend.type: {reg._unknown_message(str(name))}")
    cls = reg.get(name)
    if not cls.is_available():
        raise UsageError(f"constraints.latency_backend.type: backend {name!r} is not available on this machine")
    config = reg.validate_config(name, section, where="constraints.latency_backend")
    backend = cls(config)
    backend.setup()
    return backend


def latency_settings(constraints: Any) -> MeasureSettings:
    """How the manifest's ``constraints:`` section asks for the latency table."""
    return MeasureSettings(batch_size=constraints.latency_batch_size, repeats=constraints.latency_repeats,
                           fit_networks=constraints.latency_fit_networks)


class Constraints:
    """The constraints of one run (or given directly) over one space and task."""

    def __init__(self, space: SearchSpace, task: Any, max_latency_ms: float | None = None,
                 max_params: int | None = None, max_flops: float | None = None,
                 latency_table: LatencyTable | None = None, latency_source: Any = None):
        self.space, self.task = space, task
        self.max_latency_ms, self.max_params, self.max_flops = max_latency_ms, max_params, max_flops
        self._table = latency_table
        #: A callable returning the latency table when first needed.
        self._latency_source = latency_source
        self._cache: dict[str, dict[str, float]] = {}

    @classmethod
    def from_run(cls, run: Any) -> Constraints:
        """The manifest's constraints; the latency table is built (or read from the
        cache) on first use, on ``constraints.latency_backend`` or the run's backend."""
        c = run.manifest.constraints
        settings = latency_settings(c)

        def source() -> LatencyTable:
            backend = _backend_for(run, getattr(c, "latency_backend", None))
            return build_latency_table(run.space, run.task, backend, settings)

        run.task.data(run.seed)
        return cls(run.space, run.task, c.max_latency_ms, c.max_params, c.max_flops, latency_source=source)

    # -- what is constrained ------------------------------------------------------------
    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_params, self.max_flops))

    @property
    def latency_table(self) -> LatencyTable:
        if self._table is None:
            if self._latency_source is None:
                raise UsageError("no latency table: give one, or build Constraints.from_run")
            if not self.space.supports_latency():
                raise IncompatibleError(
                    f"constraints.max_latency_ms: search space {self.space.name!r} has no latency model "
                    "(it does not implement latency_ops / genotype_ops / arch_op_keys)")
            # Data-parallel: rank 0 alone times the operators (ranks timing at once on
            # shared cores would each get a different, noisier table) and hands its
            # table to the others, so every rank optimises the same latency term.
            self._table = distributed.broadcast_object(self._latency_source() if distributed.is_main() else None)
        return self._table

    # -- measures -----------------------------------------------------------------------
    def _network(self, genotype: Genotype) -> nn.Module:
        torch.manual_seed(0)
        return self.space.build_network(genotype, self.task).eval()

    def measure(self, genotype: Genotype, latency: bool | None = None) -> dict[str, float]:
        """Params, FLOPs and (when a latency limit is set or ``latency=True``) the
        predicted latency of ``genotype``; cached by genotype hash."""
        key = genotype.hash()
        out = self._cache.setdefault(key, {})
        if "params" not in out:
            net = self._network(genotype)
            out["params"] = float(count_params(net))
            spec = self.task.io_spec()
            example = torch.zeros((1, *spec.input_shape), dtype=spec.input_dtype)
            out["flops"] = count_flops(net, example)
        want_latency = self.max_latency_ms is not None if latency is None else latency
        if want_latency and "latency_ms" not in out:
            out["latency_ms"] = self.latency_table.predict(self.space, genotype, self.task)
        return dict(out)

    def params(self, genotype: Genotype) -> int:
        return int(self.measure(genotype, latency=False)["params"])

    def flops(self, genotype: Genotype) -> float:
        return self.measure(genotype, latency=False)["flops"]

    def latency_ms(self, genotype: Genotype) -> float:
        return self.measure(genotype, latency=True)["latency_ms"]

    # -- verdicts -------------------------------------------------------------------------
    def limits(self) -> dict[str, float]:
        out = {}
        if self.max_latency_ms is not None:
            out["latency_ms"] = float(self.max_latency_ms)
        if self.max_params is not None:
            out["params"] = float(self.max_params)
        if self.max_flops is not None:
            out["flops"] = float(self.max_flops)
        return out

    def violations(self, genotype: Genotype) -> dict[str, tuple[float, float]]:
        """``{name: (value, limit)}`` of every limit ``genotype`` exceeds."""
        limits = self.limits()
        if not limits:
            return {}
        values = self.measure(genotype)
        return {k: (values[k], lim) for k, lim in limits.items() if values[k] > lim}

    def feasible(self, genotype: Genotype) -> bool:
        return not self.violations(genotype)

    def penalty(self, genotype: Genotype) -> float:
        """Sum over the violated limits of the relative excess ``value / limit - 1``
        (0 for a feasible genotype): subtract it, scaled, from a maximised metric."""
        return float(sum(v / lim - 1.0 for v, lim in self.violations(genotype).values()))

    def filter(self, genotypes: Iterable[Genotype]) -> list[Genotype]:
        return [g for g in genotypes if self.feasible(g)]

    def sample_feasible(self, rng: Any, max_tries: int = 1000) -> Genotype:
        """A random genotype of the space that meets every limit (rejection sampling)."""
        for _ in range(max_tries):
            g = self.space.sample(rng)
            if self.feasible(g):
                return g
        raise UsageError(f"constraints: no architecture of {self.space.name!r} met {self.limits()} in "
                         f"{max_tries} random samples; loosen the limits")


class SupernetConstraint:
    """The latency limit for a differentiable search over one supernet.

    :meth:`penalty` is ``relu(E[latency] / max_latency_ms - 1)`` for the mixing weights
    (by default the softmax of the logits), differentiable in the logits; :meth:`derive`
    turns the trained supernet into a genotype whose predicted latency meets the limit:
    the most likely choice, then, while it is too slow, the switch (in one row) that
    saves the most latency per unit of log-probability given up.
    """

    def __init__(self, constraints: Constraints, supernet: Network):
        self.constraints = constraints
        self.limit = float(constraints.max_latency_ms)  # type: ignore[arg-type]
        self.expected = ExpectedLatency(constraints.latency_table, constraints.space, supernet, constraints.task)

    @classmethod
    def for_run(cls, run: Any, supernet: Network) -> SupernetConstraint | None:
        """``None`` unless the manifest sets ``max_latency_ms`` and the space has a
        latency model (a space without one gets a warning, not an error)."""
        if run.manifest.constraints.max_latency_ms is None:
            return None
        if not run.space.supports_latency():
            log(f"warning: constraints.max_latency_ms is set but search space {run.space.name!r} has no latency "
                "model; the differentiable search ignores it")
            return None
        return cls(Constraints.from_run(run), supernet)

    def expected_ms(self, supernet: Network, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        if weights is None:
            return self.expected.of_probabilities(supernet)
        return self.expected(weights)

    def penalty(self, supernet: Network, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        return torch.relu(self.expected_ms(supernet, weights) / self.limit - 1.0)

    @torch.no_grad()
    def _choice(self, supernet: Network, limit: float) -> list[torch.Tensor]:
        logp = [torch.log_softmax(a.detach().float(), dim=-1).cpu() for a in supernet.body.arch_parameters()]
        costs = [c.cpu() for c in self.expected.costs]
        choice = [lp.argmax(-1) for lp in logp]
        while self.expected.of_choice(choice) > limit:
            best, best_ratio = None, math.inf
            for t, (lp, cost) in enumerate(zip(logp, costs, strict=True)):
                for r in range(lp.shape[0]):
                    cur = int(choice[t][r])
                    for c in range(lp.shape[1]):
                        saved = float(cost[r, cur] - cost[r, c])
                        if saved <= 1e-9:
                            continue
                        ratio = float(lp[r, cur] - lp[r, c]) / saved
                        if ratio < best_ratio:
                            best, best_ratio = (t, r, c), ratio
            if best is None:
                break
            t, r, c = best
            choice[t][r] = c
        return choice

    @torch.no_grad()
    def derive(self, space: SearchSpace, supernet: Network) -> tuple[Genotype, dict[str, Any]]:
        """A genotype meeting the latency limit (by prediction) and how it was found."""
        arch = supernet.body.arch_parameters()
        saved = [a.detach().clone() for a in arch]
        table, task = self.constraints.latency_table, self.constraints.task
        unconstrained = space.derive(supernet)
        info: dict[str, Any] = {"max_latency_ms": self.limit,
                                "argmax_genotype": str(unconstrained),
                                "argmax_predicted_ms": table.predict(space, unconstrained, task)}
        limit, genotype = self.limit, unconstrained
        try:
            for _ in range(6):
                if table.predict(space, genotype, task) <= self.limit:
                    break
                choice = self._choice(supernet, limit)
                for a, ch in zip(arch, choice, strict=True):
                    a.copy_(torch.nn.functional.one_hot(ch, a.shape[1]).to(a) * 100.0)
                genotype = space.derive(supernet)
                for a, s in zip(arch, saved, strict=True):
                    a.copy_(s)
                pred = table.predict(space, genotype, task)
                limit *= min(0.98, self.limit / max(pred, 1e-9))
        finally:
            for a, s in zip(arch, saved, strict=True):
                a.copy_(s)
        info["predicted_ms"] = table.predict(space, genotype, task)
        info["meets_limit"] = info["predicted_ms"] <= self.limit
        info["changed"] = genotype != unconstrained
        if not info["meets_limit"]:
            log(f"warning: no architecture reachable from the supernet meets max_latency_ms={self.limit} "
                f"(fastest found: {info['predicted_ms']:.3f} ms predicted)")
        return genotype, info
