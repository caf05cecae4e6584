"""TensorBoard logger: epoch scalars, architecture weights as histograms and images.

Optional extra: ``pip install 'dnas[tensorboard]'``. The package is imported only
when a manifest lists ``callbacks: [{type: tensorboard}]``; without it the run stops
before training with a message naming the ``pip install``.

Layout of the event files (``<run_dir>/<log_dir>``): ``<stage>/<metric>`` scalars per
epoch, ``arch/<tensor>/<edge>`` histograms of the operation weights of one edge,
``arch/<tensor>`` images (edges x operations, brighter is heavier), ``test/<metric>``
scalars and the genotype as text at the end of the run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from pydantic import Field

from dnas_core import Callback, ComponentConfig, hookimpl
from dnas_core.report import split_arch_key

from ._optional import require


class TensorBoardConfig(ComponentConfig):
    log_dir: str = Field("tensorboard", pattern=r"^[A-Za-z0-9_.-]+$",
                         description="folder inside the run directory for the event files")
    histograms: bool = Field(True, description="log each edge's operation weights as a histogram")
    images: bool = Field(True, description="log each architecture tensor as an image (edges x operations)")
    image_scale: int = Field(12, ge=1, le=64, description="pixels per cell of the architecture image")


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files into the run directory."""

    name = "tensorboard"
    description = "TensorBoard event files: scalars, architecture histograms and images"
    Config = TensorBoardConfig

    def __init__(self, config: Any = None, **kw: Any):
        super().__init__(config, **kw)
        tb = require("torch.utils.tensorboard", "tensorboard")
        self._writer_cls = tb.SummaryWriter
        self.writer = None

    def _w(self, run):
        if self.writer is None:
            self.writer = self._writer_cls(log_dir=str(run.run_dir.file(self.config.log_dir)))
        return self.writer

    @hookimpl
    def dnas_run_start(self, run) -> None:
        w = self._w(run)
        w.add_text("manifest", "```\n" + run.run_dir.file("manifest.yaml").read_text(encoding="utf-8") + "\n```", 0)

    @hookimpl
    def dnas_epoch_end(self, run, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        w = self._w(run)
        tensors: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for k, v in metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if k.startswith("arch/"):
                t, e, o = split_arch_key(k)
                tensors[t][e][o] = float(v)
            else:
                w.add_scalar(f"{stage}/{k}", float(v), epoch)
        for t, edges in tensors.items():
            mat = np.array([list(ops.values()) for ops in edges.values()], dtype=np.float32)
            if self.config.histograms:
                for e, ops in edges.items():
                    w.add_histogram(f"arch/{t}/{e}", np.array(list(ops.values()), dtype=np.float32), epoch)
            if self.config.images and mat.size:
                s = self.config.image_scale
                img = np.kron(np.clip(mat, 0, 1), np.ones((s, s), dtype=np.float32))
                w.add_image(f"arch/{t}", img[None], epoch, dataformats="CHW")
        w.flush()

    @hookimpl
    def dnas_search_end(self, run, genotype, summary) -> None:
        self._w(run).add_text("genotype", f"`{run.space.format(genotype)}` (hash {genotype.hash()})", 0)

    @hookimpl
    def dnas_run_end(self, run, status: str, result: dict[str, Any]) -> None:
        w = self._w(run)
        for k, v in (result.get("test_metrics") or {}).items():
            if isinstance(v, (int, float)):
                w.add_scalar(f"test/{k}", float(v), 0)
        if result.get("latency_ms") is not None:
            w.add_scalar("test/latency_ms", float(result["latency_ms"]), 0)
        w.add_text("status", status if status == "completed" else f"{status}: {result.get('error', '')}", 0)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@hookimpl
def dnas_register_callbacks():
    return [TensorBoardLogger]
