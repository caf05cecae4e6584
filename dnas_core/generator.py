"""The architecture-generator abstraction (VAE, GAN, ...).

Generators learn a distribution over :class:`dnas_core.GraphEncoding` s, so one
generator serves every search space: the space encodes genotypes to graphs and
decodes generated graphs back.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .components import Component
from .genotype import GraphEncoding


class ArchitectureGenerator(Component):
    """Base class of generators."""

    def fit(self, graphs: Sequence[GraphEncoding], scores: Sequence[float] | None = None) -> dict[str, float]:
        """Train on graphs (and their scores, where the generator uses them); return
        training figures (losses, reconstruction accuracy)."""
        raise NotImplementedError

    def generate(self, n: int, rng: np.random.Generator) -> list[GraphEncoding]:
        """Draw ``n`` graphs."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to warm-start another search (tensors and plain values)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError
