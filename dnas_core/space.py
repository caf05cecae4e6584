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
from typing import Any, Callable, ClassVar, NamedTuple

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
    #: Optional boolean mask of shape ``(num_edges, num_ops)``: compute exactly these
    #: operations, even where their weight is zero, so that a zero-valued gate still
    #: receives a gradient (ProxylessNAS's two-path binary gates). Only spaces that
    #: accept the supernet option ``active_paths=True`` honour it.
    active: torch.Tensor | None = None


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

    #: The column label of the zero operation (output all zeros) in the architecture
    #: tensors, if the space has one; strategies that search without it (Fair DARTS) use it.
    zero_op: str | None = None
    #: Whether :meth:`Space.derive` can return ``zero_op`` (NAS-Bench-201 can; the DARTS
    #: space, which picks each node's two strongest non-zero inputs, never does).
    #: Perturbation selection only offers the zero op where it can be derived.
    derives_zero_op: bool = True
    #: Names (:meth:`arch_labels`) of architecture tensors whose rows keep a subset of
    #: their operations rather than one (the recommendation space's interaction ops);
    #: perturbation selection leaves those to :meth:`Space.derive`.
    multi_choice: frozenset[str] = frozenset()

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

    def forward(self, x: Any, *more: torch.Tensor) -> torch.Tensor:
        # Multi-input tasks (recommendation: user, item) pass a tuple when training
        # and separate tensors when exported (ONNX has one graph input per tensor).
        if more:
            x = (x, *more)
        return self.head(self.body(self.stem(x)))


class LatencyOp(NamedTuple):
    """One latency-relevant operator of a space: a stable ``key``, a module that
    computes it, and the shape of one input without the batch axis. Operators with the
    same key must have the same cost (same op, widths, stride and input size)."""

    key: str
    module: nn.Module
    input_shape: tuple[int, ...]


class SearchSpace(Component):
    """Base class of search spaces.

    Spaces that implement the three latency methods (:meth:`latency_ops`,
    :meth:`genotype_ops`, :meth:`arch_op_keys`) get hardware-aware search: a per-operator
    latency table (:mod:`dnas_core.latency`) predicts the latency of any genotype, and
    differentiable strategies get an expected-latency term of the architecture weights.
    """

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

    def arch_indices(self, genotype: Genotype) -> list[torch.Tensor]:
        """For each tensor of the supernet's :meth:`Supernet.arch_parameters`, the index
        of the operation ``genotype`` picks on every row (shape ``(rows,)``, long). With
        it the supernet runs exactly this genotype through the one-hot
        :class:`MixWeights` path (weight-sharing evaluation, single-path training).
        Optional; spaces that lack it cannot be scored by weight sharing."""
        raise IncompatibleError(f"search space {self.name!r} does not map genotypes to supernet paths (arch_indices)")

    def format(self, genotype: Genotype) -> str:
        return genotype.text or str(genotype.spec)

    def from_string(self, text: str) -> Genotype:
        """Parse the space's human-readable form (the inverse of :meth:`format`);
        ``ValueError`` for text that is not an architecture of this space."""
        raise IncompatibleError(f"search space {self.name!r} has no text form for genotypes; give the spec as JSON")

    # -- hand-designed baseline -----------------------------------------------------
    def baseline(self, task: Any) -> Genotype:
        """The space's hand-designed reference architecture for ``task`` (e.g. an MLP
        for a tabular space), trained by the same trainer as searched ones. The
        ``fixed`` strategy returns it; spaces without one keep this default."""
        raise IncompatibleError(
            f"search space {self.name!r} offers no hand-designed baseline; give the architecture "
            f"in strategy.genotype (JSON spec or the space's text form)"
        )

    # -- latency (optional) ---------------------------------------------------------
    def latency_ops(self, task: Any) -> list[LatencyOp]:
        """Every operator whose cost a genotype of this space can include, as it runs
        in :meth:`build_network` for ``task`` (fixed parts such as the stem, the head
        and reduction blocks included). Each key is listed once."""
        raise NotImplementedError

    def genotype_ops(self, genotype: Genotype, task: Any, optimized_graph: bool = False) -> list[str]:
        """The keys of :meth:`latency_ops` that the network of ``genotype`` runs, with
        repetition (a key used by 5 cells appears 5 times).

        ``optimized_graph``: list only what a backend with a graph optimiser still runs
        (:attr:`Backend.optimizes_graph`, e.g. ONNX Runtime): input-independent
        subgraphs folded into constants, identical parameter-free operations on the
        same tensor merged. Spaces whose networks have neither list the same keys."""
        raise NotImplementedError

    def arch_op_keys(self, supernet: Network, task: Any) -> tuple[list[str], list[list[list[list[str]]]]]:
        """How the architecture parameters of ``supernet`` map to operator keys.

        Returns ``(fixed, per_tensor)``: ``fixed`` the keys every genotype runs, and
        for each tensor of :meth:`Supernet.arch_parameters` a ``rows x cols`` nested
        list whose entry is the list of keys that choosing column ``c`` in row ``r``
        adds to the network. The expected latency of a mixing distribution is then
        ``sum(fixed) + sum_{t,r,c} w_t[r, c] * sum(keys[t][r][c])``.
        """
        raise NotImplementedError

    def supports_latency(self) -> bool:
        """Whether this space implements the latency methods."""
        cls = type(self)
        return all(getattr(cls, m) is not getattr(SearchSpace, m)
                   for m in ("latency_ops", "genotype_ops", "arch_op_keys"))

    def check_genotype(self, genotype: Genotype) -> None:
        if genotype.space != self.name:
            raise IncompatibleError(f"genotype of space {genotype.space!r} given to space {self.name!r}")


class FixedArchitectureSpace(SearchSpace):
    """A space holding exactly one hand-designed architecture (a baseline), fixed by
    its config. It has no supernet: a manifest trains it with ``strategy: {type:
    fixed}``. Subclasses implement :meth:`architecture`, :meth:`build_network` and
    :meth:`encode`; everything else follows from the one genotype."""

    def architecture(self) -> Genotype:
        """The space's only genotype."""
        raise NotImplementedError

    def baseline(self, task: Any = None) -> Genotype:
        return self.architecture()

    def sample(self, rng: np.random.Generator) -> Genotype:
        return self.architecture()

    def from_string(self, text: str) -> Genotype:
        g = self.architecture()
        if text.strip() != g.text:
            raise ValueError(f"space {self.name!r} has one architecture, {g.text!r}; got {text!r}")
        return g

    def check_genotype(self, genotype: Genotype) -> None:
        super().check_genotype(genotype)
        if genotype != self.architecture():
            raise IncompatibleError(f"genotype {genotype} is not the architecture of space {self.name!r}, "
                                    f"{self.architecture()} (change the space config instead)")

    def build_supernet(self, task: Any, **options: Any) -> Network:
        raise IncompatibleError(f"space {self.name!r} is a fixed hand-designed architecture without a supernet; "
                                f"use it with strategy: {{type: fixed}}")

    def derive(self, supernet: Network) -> Genotype:
        return self.architecture()

    def decode(self, graph: GraphEncoding) -> Genotype:
        expected = self.encode(self.architecture())
        if (tuple(graph.op_names) != tuple(expected.op_names) or graph.num_nodes != expected.num_nodes
                or not np.array_equal(graph.adjacency > 0.5, expected.adjacency > 0.5)
                or not np.array_equal(graph.ops.argmax(1), expected.ops.argmax(1))):
            raise ValueError(f"graph is not the architecture of space {self.name!r}")
        return self.architecture()
