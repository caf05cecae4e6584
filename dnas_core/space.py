"""The search-space abstraction.

A search space builds, for a given task,

* the *supernet*: every candidate operation at once, with architecture parameters
  that a differentiable strategy optimises (:class:`Supernet`);
* the *derived* genotype: the discrete choice read off a trained supernet;
* a stand-alone network from any genotype (what is retrained and exported);

and it can sample random genotypes and encode them as graphs for generators. The
space builds only the body between the task's stem and head (see :class:`Network`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .components import Component
from .errors import IncompatibleError
from .genotype import Genotype, GraphEncoding


@dataclass
class MixWeights:
    """How the candidate operations of every edge are mixed in one forward pass.

    ``weights`` has shape ``(num_edges, num_ops)``. When ``index`` is given (shape
    ``(num_edges,)``), only operation ``index[e]`` of edge ``e`` is computed and scaled
    by ``weights[e, index[e]]`` (hard sampling with a straight-through gradient, as in
    GDAS); otherwise every operation with a non-zero weight is computed and summed.
    """

    weights: torch.Tensor
    index: torch.Tensor | None = None


#: A strategy's rule for turning architecture logits into mixing weights.
WeightFn = Callable[[torch.Tensor], MixWeights]


def softmax_weights(alpha: torch.Tensor) -> MixWeights:
    return MixWeights(torch.softmax(alpha, dim=-1))


class Supernet(nn.Module):
    """A network holding all candidates; subclasses implement ``forward(x)``.

    The architecture logits live in :meth:`arch_parameters`; everything else is a
    weight. ``weight_fn`` is set by the strategy and maps each logit tensor to the
    :class:`MixWeights` of one forward pass (softmax for DARTS, Gumbel for GDAS, ...).
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight_fn: WeightFn = softmax_weights

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_labels(self) -> list[tuple[str, list[str], list[str]]]:
        """For each architecture tensor: its name, the row (edge) labels and the column
        (operation) labels, for logging and plots."""
        raise NotImplementedError

    def arch_snapshot(self) -> dict[str, list[list[float]]]:
        """The current architecture distribution (softmax of each logit tensor)."""
        return {
            name: torch.softmax(p.detach().float(), dim=-1).tolist()
            for (name, _, _), p in zip(self.arch_labels(), self.arch_parameters(), strict=True)
        }


class Network(nn.Module):
    """stem -> body -> head: the shape of every model dnas builds."""

    def __init__(self, stem: nn.Module, body: nn.Module, head: nn.Module):
        super().__init__()
        self.stem = stem
        self.body = body
        self.head = head

    def forward(self, x: Any) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


class SearchSpace(Component):
    """Base class of search spaces."""

    #: The task modalities this space can serve (see :class:`dnas_core.IOSpec`).
    modalities: ClassVar[frozenset[str]] = frozenset()

    def check_task(self, task: Any) -> None:
        modality = task.io_spec().modality
        if modality not in self.modalities:
            raise IncompatibleError(
                f"search space {self.name!r} does not fit task {task.name!r}: the task's "
                f"modality is {modality!r}, the space serves {sorted(self.modalities)}"
            )

    # -- supernet -------------------------------------------------------------------
    def build_supernet(self, task: Any, **options: Any) -> Network:
        """A :class:`Network` whose body is a :class:`Supernet`. ``options`` are
        strategy-specific features (e.g. ``partial_channels=4``); a space rejects
        options it does not support with :class:`IncompatibleError`."""
        raise NotImplementedError

    def derive(self, supernet: Network) -> Genotype:
        """The discrete genotype read off a trained supernet."""
        raise NotImplementedError

    # -- discrete architectures -----------------------------------------------------
    def build_network(self, genotype: Genotype, task: Any) -> Network:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> Genotype:
        raise NotImplementedError

    def encode(self, genotype: Genotype) -> GraphEncoding:
        raise NotImplementedError

    def decode(self, graph: GraphEncoding) -> Genotype:
        """Inverse of :meth:`encode`; raises ``ValueError`` for a graph that is not a
        valid architecture of this space."""
        raise NotImplementedError

    def format(self, genotype: Genotype) -> str:
        return genotype.text or str(genotype.spec)

    def check_genotype(self, genotype: Genotype) -> None:
        if genotype.space != self.name:
            raise IncompatibleError(f"genotype of space {genotype.space!r} given to space {self.name!r}")
