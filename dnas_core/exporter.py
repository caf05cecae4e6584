"""The exporter abstraction: write the derived network to a file and verify it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .components import Component


class Exporter(Component):
    """Base class of exporters. Implement :meth:`export` and :meth:`verify`.

    ``auto_priority`` picks the exporter of a manifest without an ``export:`` section.
    """

    suffix: ClassVar[str] = ""
    auto_priority: ClassVar[int] = 0

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
        """Write ``model`` (in eval mode) to ``path``; return facts about the file."""
        raise NotImplementedError

    def verify(self, path: Path, model: nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
        """Run the exported file on ``inputs`` and compare with ``model``; the result
        has at least ``max_abs_diff`` (float) and ``ok`` (bool)."""
        raise NotImplementedError
