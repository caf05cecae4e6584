"""ONNX Runtime on the CPU: a measuring-only backend.

Models cannot be trained here (``trains = False``), so a manifest never gets it as
the run's backend by default; it serves latency tables and latency-aware search for
deployment with ONNX Runtime. :meth:`measure_latency` exports the module to ONNX in
memory (the TorchScript-based exporter, fast on these small modules), opens an
``InferenceSession`` on the CPU execution provider and times ``session.run``.
"""

from __future__ import annotations

import importlib.util
import io
import statistics
import time
import warnings
import weakref
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from dnas_core import Backend, ComponentConfig, Latency, UsageError, hookimpl

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeConfig(ComponentConfig):
    threads: Optional[int] = Field(
        None, ge=1, description="intra-op threads of the session; default: onnxruntime's choice (all cores)"
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level (operator fusion)"
    )
    opset: int = Field(17, ge=11, le=23, description="ONNX opset of the in-memory export")
    clock: Literal["wall", "thread_cpu"] = Field(
        "wall",
        description="what latency measurements read: wall time, or the CPU time of the calling thread "
        "(needs threads: 1; unaffected by other processes competing for the cores)",
    )

    @model_validator(mode="after")
    def _thread_clock_needs_one_thread(self) -> "OnnxRuntimeConfig":
        if self.clock == "thread_cpu" and self.threads != 1:
            raise ValueError("clock: thread_cpu measures only the calling thread, so it needs threads: 1")
        return self


def _ort():
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - onnxruntime is a dependency of dnas
        raise UsageError("backend onnxruntime needs the onnxruntime package: pip install onnxruntime") from None
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """Latency measured in onnxruntime (CPU execution provider)."""

    name = "onnxruntime"
    description = "ONNX Runtime on the CPU (measures latency; cannot train)"
    Config = OnnxRuntimeConfig
    auto_priority = -10
    trains = False

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        # module -> {input shape: session}; a module measured again (the rounds of a
        # latency table) reuses its session instead of exporting it again. Latency
        # does not depend on the weights, so a session stays valid for its shape.
        self._sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def optimizes_graph(self) -> bool:
        """Constant folding and common-subexpression elimination are part of every
        optimisation level but ``disable``: a subgraph that does not depend on the input
        (e.g. convolutions of a cell node that has no input) becomes an initializer and
        costs nothing per call, and two poolings of the same tensor run once."""
        return self.config.graph_optimization != "disable"

    def timer(self) -> float:
        return time.thread_time() if self.config.clock == "thread_cpu" else time.perf_counter()

    def session(self, module: nn.Module, example: torch.Tensor):
        """An ``InferenceSession`` of ``module`` exported at the shape of ``example``."""
        ort = _ort()
        module = module.cpu().eval().to(memory_format=torch.contiguous_format)
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example.contiguous(),), buf, dynamo=False, input_names=["input"],
                              output_names=["output"], opset_version=self.config.opset)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[self.config.graph_optimization])
        if self.config.threads:
            opts.intra_op_num_threads = self.config.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def measure_latency(self, module: nn.Module, example: torch.Tensor, warmup: int = 5, repeats: int = 20) -> Latency:
        """Median wall time of ``session.run`` on ``example`` after ``warmup`` runs."""
        shape = tuple(example.shape)
        cached = self._sessions.setdefault(module, {})
        if shape not in cached:
            cached[shape] = self.session(module, example)
        sess = cached[shape]
        # A module that ignores its input (e.g. a zero op) exports a graph without one.
        declared = {i.name for i in sess.get_inputs()}
        feed = {"input": np.ascontiguousarray(example.detach().cpu().numpy())} if "input" in declared else {}
        for _ in range(warmup):
            sess.run(None, feed)
        times = []
        for _ in range(repeats):
            t0 = self.timer()
            sess.run(None, feed)
            times.append((self.timer() - t0) * 1e3)
        times.sort()
        return Latency(median_ms=statistics.median(times), p90_ms=times[min(len(times) - 1, int(0.9 * len(times)))],
                       repeats=repeats, batch_size=int(example.shape[0]))


@hookimpl
def dnas_register_backends():
    return [OnnxRuntimeBackend]
