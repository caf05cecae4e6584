"""The search-strategy abstraction: the search loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .components import Component
from .genotype import Genotype
from .space import Network

if TYPE_CHECKING:  # pragma: no cover
    from .context import RunContext


@dataclass
class SearchOutcome:
    """What a search produced: a trained supernet to derive from, or a genotype
    directly (generator-based and sampling strategies), plus a summary for reports."""

    supernet: Network | None = None
    genotype: Genotype | None = None
    summary: dict[str, Any] = field(default_factory=dict)


class Strategy(Component):
    """Base class of strategies. Implement :meth:`search`.

    ``search`` gets the :class:`dnas_core.RunContext`: the task, the space, the backend,
    the run directory (checkpoints, metrics) and the seed. It must checkpoint through
    ``run.save_checkpoint`` at least once per epoch and resume from
    ``run.load_checkpoint`` so that a killed run continues where it stopped.
    """

    def search(self, run: RunContext) -> SearchOutcome:
        raise NotImplementedError

    def preflight(self, run: RunContext) -> None:
        """Raise the error ``search`` would raise at its start for this run's task, space,
        backend and manifest (an unfit option, a space without the supernet the strategy
        needs), without training: ``dnas validate`` calls it, with the data loaded, so
        that a manifest it calls valid also starts. The default checks nothing."""
