"""The task abstraction: data, the adapter around a searched body, loss and metrics.

A task knows nothing of architectures. It supplies

* the data as train / val / test splits (reproducible for a given seed);
* its :class:`IOSpec`: the modality (``image``, ``sequence``, ``tabular``, ``recsys``)
  and the shape of one input;
* a *stem* that turns raw inputs into the tensor layout of its modality and a *head*
  that turns the body's output into predictions; a search space builds only the body
  in between, so one space serves every task of a modality;
* the loss, the metrics, and which metric is primary and in which direction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from .components import Component

#: The data root when ``DNAS_DATA_ROOT`` is unset: the project's shared data beside
#: the working directory.
DEFAULT_DATA_ROOT = Path("../shared/data")


def data_root() -> Path:
    """Where tasks (and other plugins that read data sets, such as a benchmark table)
    look for files a manifest does not name: ``$DNAS_DATA_ROOT``, unset or empty
    meaning :data:`DEFAULT_DATA_ROOT`."""
    return Path(os.environ.get("DNAS_DATA_ROOT") or DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class IOSpec:
    """What a task's inputs and outputs look like.

    ``modality`` fixes the body layout: ``image`` bodies take ``(N, C, H, W)``,
    ``sequence`` bodies ``(N, C, L)``, ``tabular`` and ``recsys`` bodies ``(N, C)``.
    ``input_shape`` is the shape of one raw example (without the batch axis).
    """

    modality: str
    input_shape: tuple[int, ...]
    num_outputs: int
    input_dtype: torch.dtype = torch.float32
    #: Spatial / sequence size the stem hands to the body (e.g. (H, W) for images).
    body_size: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskData:
    """The three splits of a task. Each item of a split is ``(input, target)``."""

    train: Dataset
    val: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}  # type: ignore[arg-type]


class Task(Component):
    """Base class of tasks. Subclasses set ``name``, ``Config`` and implement
    :meth:`load_data`, :meth:`io_spec`, :meth:`make_stem`, :meth:`make_head`.
    """

    #: Where the data set lives under the data root (:func:`data_root`) when the
    #: manifest's ``task.path`` is empty; a new run records the absolute path it
    #: resolves to in ``data_paths.json``. None: the task reads no default location.
    default_data: ClassVar[str | None] = None
    #: Metric used for model selection, tuning and reports.
    primary_metric: ClassVar[str] = "accuracy"
    #: ``"maximize"`` or ``"minimize"``.
    metric_direction: ClassVar[str] = "maximize"

    _data: TaskData | None = None

    # -- data -----------------------------------------------------------------------
    def load_data(self, seed: int) -> TaskData:
        """Read the data and split it reproducibly for ``seed``."""
        raise NotImplementedError

    def data(self, seed: int) -> TaskData:
        """The splits, loaded once and cached on the task."""
        if self._data is None or getattr(self, "_data_seed", None) != seed:
            self._data = self.load_data(seed)
            self._data_seed = seed
        return self._data

    def io_spec(self) -> IOSpec:
        raise NotImplementedError

    # -- model adapters -------------------------------------------------------------
    def make_stem(self, channels: int) -> nn.Module:
        """Raw inputs -> the modality layout with ``channels`` channels."""
        raise NotImplementedError

    def make_head(self, channels: int) -> nn.Module:
        """The body's output with ``channels`` channels -> predictions."""
        raise NotImplementedError

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training-time augmentation of a batch, drawing its randomness from ``generator``
        (a CPU generator). The batch is on the device when retraining and on the host in
        a search (the global batch, before it is split over processes); return it on the
        same device and in the same memory format. Identity by default."""
        return inputs

    def has_augmentation(self) -> bool:
        """Whether :meth:`augment` changes batches (as configured). A search with
        ``strategy.augment`` needs it."""
        return type(self).augment is not Task.augment

    # -- objective ------------------------------------------------------------------
    def loss_fn(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def compute_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Metrics over a whole split from the concatenated outputs and targets."""
        pred = outputs.argmax(dim=1)
        return {"accuracy": float((pred == targets).float().mean().item())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Dataset, device: torch.device, batch_size: int = 256) -> dict[str, float]:
        """Evaluate ``model`` on ``split``. Tasks with ranking protocols override this."""
        from .training import predict

        outputs, targets = predict(model, split, device, batch_size=batch_size)
        metrics = self.compute_metrics(outputs, targets)
        metrics["loss"] = float(self.loss_fn()(outputs, targets).item())
        return metrics

    def example_inputs(self, split: Dataset, n: int) -> torch.Tensor:
        """The first ``n`` real inputs of ``split`` as one batch (for export checks)."""
        from .training import first_inputs

        return first_inputs(split, n)

    def descriptor(self) -> dict[str, Any]:
        """A JSON-able description of the task for the run store and transfer."""
        spec = self.io_spec()
        return {
            "task": self.name,
            "modality": spec.modality,
            "input_shape": list(spec.input_shape),
            "num_outputs": spec.num_outputs,
            "primary_metric": self.primary_metric,
        }

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is better than ``b``."""
        return a > b if self.metric_direction == "maximize" else a < b
