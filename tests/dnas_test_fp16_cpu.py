"""A test-only backend plugin: the CPU backend under float16 autocast with an enabled
GradScaler, the path ``backend.amp: fp16`` takes on a GPU without native bf16.

Tests that start ``dnas run`` in fresh interpreters (two data-parallel processes, a
killed and resumed run) cannot monkeypatch the CPU backend there, so they install this
module as a plugin: ``install(folder)`` writes it and a ``.dist-info`` with its
``dnas.plugins`` entry point into ``folder``, to be put on ``PYTHONPATH``. Manifests
select it as ``backend: {type: cpu_fp16_test}``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from dnas_plugins.backends.torch_devices import CPUBackend, CPUConfig
from pydantic import Field

from dnas_core import hookimpl

INIT_SCALE = 2.0**19  # large enough that the first float16 backward passes of a tiny run overflow


class CPUFloat16Config(CPUConfig):
    init_scale: float = Field(INIT_SCALE, gt=0, description="the GradScaler's initial scale")


class CPUFloat16Backend(CPUBackend):
    """The CPU backend, with float16 autocast and loss scaling (tests only)."""

    name = "cpu_fp16_test"
    description = "CPU under float16 autocast with loss scaling (dnas's own tests)"
    Config = CPUFloat16Config
    auto_priority = -1

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.float16)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cpu", init_scale=self.config.init_scale)


@hookimpl
def dnas_register_backends():
    return [CPUFloat16Backend]


def install(folder: Path) -> Path:
    """Write this module and its distribution metadata (entry point included) into
    ``folder``; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__), folder / "dnas_test_fp16_cpu.py")
    info = folder / "dnas_test_fp16_cpu-0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dnas-test-fp16-cpu\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[dnas.plugins]\ncpu_fp16_test = dnas_test_fp16_cpu\n")
    return folder
