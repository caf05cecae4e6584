"""What the latency-aware strategies (FBNet, ProxylessNAS) share: the expected latency
of the mixing weights used in the current forward pass. Not a plugin itself.

The latency table comes from :class:`dnas_core.constraints.Constraints` (measured on
``constraints.latency_backend`` or the run's backend, cached on disk), so these
strategies need a space with a latency model even without a latency limit.
"""

from __future__ import annotations

from typing import Any

import torch

from dnas_core import IncompatibleError, SearchOutcome
from dnas_core.constraints import Constraints
from dnas_core.latency import ExpectedLatency
from dnas_core.space import Network

from .differentiable import DifferentiableStrategy


class LatencyAwareStrategy(DifferentiableStrategy):
    """A differentiable strategy with an expected-latency term in its architecture loss."""

    def _check_latency_model(self, run: Any) -> None:
        if not run.space.supports_latency():
            raise IncompatibleError(
                f"strategy {self.name!r} needs a search space with a latency model; {run.space.name!r} does not "
                "implement latency_ops / genotype_ops / arch_op_keys (try space.type: mobile or nb201)")

    def preflight(self, run: Any) -> None:
        self._check_latency_model(run)
        super().preflight(run)

    def search(self, run: Any) -> SearchOutcome:
        self._check_latency_model(run)
        self._run = run
        self._expected: ExpectedLatency | None = None
        self._sampled: dict[int, torch.Tensor] = {}
        return super().search(run)

    def expected_latency(self, net: Network) -> ExpectedLatency:
        if self._expected is None:
            constraint = getattr(self, "_latency_constraint", None)
            if constraint is not None:
                self._expected = constraint.expected
            else:
                c = Constraints.from_run(self._run)
                self._expected = ExpectedLatency(c.latency_table, self._run.space, net, self._run.task)
        return self._expected

    def remember(self, alpha: torch.Tensor, weights: torch.Tensor) -> None:
        """Record the weights a forward pass used for ``alpha``."""
        self._sampled[id(alpha)] = weights

    def sampled_weights(self, net: Network) -> list[torch.Tensor]:
        return [self._sampled[id(p)] for p in net.body.arch_parameters()]

    def epoch_metrics(self, supernet) -> dict[str, float]:
        out = dict(super().epoch_metrics(supernet))
        if self._expected is not None:
            with torch.no_grad():
                probs = [torch.softmax(p, dim=-1) for p in supernet.arch_parameters()]
                out["expected_latency_ms"] = float(self._expected(probs))
        return out
