"""The hardware-backend abstraction: where models run and how fast."""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager

import torch
from torch import nn

from .components import Component


@dataclass
class Latency:
    """Latency of one module at one input shape, in milliseconds."""

    median_ms: float
    p90_ms: float
    repeats: int
    batch_size: int


class Backend(Component):
    """Base class of backends.

    ``auto_priority`` decides which backend a manifest without a ``backend:`` section
    gets: the available one with the highest priority (a GPU backend over the CPU).
    """

    auto_priority: ClassVar[int] = 0
    #: Whether models can be trained on this backend (ONNX Runtime cannot).
    trains: ClassVar[bool] = True

    @property
    def optimizes_graph(self) -> bool:
        """Whether the backend runs a network through a graph optimiser that folds the
        parts not depending on the input into constants and computes identical
        subexpressions once (ONNX Runtime does; PyTorch eager runs every module on every
        call). The latency model then counts only what the optimised graph still runs
        (``SearchSpace.genotype_ops(..., optimized_graph=True)``)."""
        return False

    @classmethod
    def is_available(cls) -> bool:
        return True

    def setup(self) -> None:
        """Called once before a run uses the backend (threads, flags)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def autocast(self) -> ContextManager[Any]:
        """Mixed-precision context for forward passes; a no-op by default (fp32)."""
        return contextlib.nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for :meth:`autocast`'s precision. A backend whose autocast runs
        in float16 returns an enabled scaler (small gradients, the architecture's first,
        would underflow to zero); the default is a disabled one, which passes losses,
        gradients and steps through unchanged. Training loops use it through
        :func:`dnas_core.training.backward_step`."""
        return torch.amp.GradScaler(self.device.type, enabled=False)

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move a module to the device in the memory format this backend prefers."""
        return module.to(self.device)

    def eager(self) -> ContextManager[Any]:
        """Modules prepared inside this context are not graph-compiled, whatever the
        backend's ``compile`` setting: for modules whose forward branches on sampled
        values (hard-path strategies) or that run a few times only (latency
        measurements). A no-op for backends that never compile."""
        return contextlib.nullcontext()

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""

    def timer(self) -> float:
        """The clock :meth:`measure_latency` reads, in seconds (wall time by default;
        a backend may offer the calling thread's CPU time, which a busy shared machine
        does not inflate)."""
        return time.perf_counter()

    @torch.no_grad()
    def measure_latency(
        self, module: nn.Module, example: torch.Tensor, warmup: int = 5, repeats: int = 20
    ) -> Latency:
        """Median wall time of ``module(example)`` after ``warmup`` calls."""
        with self.eager():  # one module timed a few times: compiling it would cost more than it measures
            module = self.prepare(module).eval()
        # Multi-input models (e.g. recommendation: (user, item)) take a tuple.
        tuple_input = isinstance(example, (tuple, list))
        x = tuple(self.prepare_input(t) for t in example) if tuple_input else self.prepare_input(example)
        for _ in range(warmup):
            module(x)
        self.synchronize()
        times = []
        for _ in range(repeats):
            t0 = self.timer()
            module(x)
            self.synchronize()
            times.append((self.timer() - t0) * 1e3)
        times.sort()
        return Latency(
            median_ms=statistics.median(times),
            p90_ms=times[min(len(times) - 1, int(0.9 * len(times)))],
            repeats=repeats,
            batch_size=int((x[0] if tuple_input else x).shape[0]),
        )
