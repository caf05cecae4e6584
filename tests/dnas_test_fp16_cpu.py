"""A test-only backend plugin: the CPU backend under float16 autocast with an enabled
GradScaler, the path ``backend.amp: fp16`` takes on a GPU without native bf16.

Tests that start ``dnas run`` in fresh interpreters (two data-parallel processes, a
killed and resumed run) cannot monkeypatch the CPU backend there, so they install this
module as a plugin: ``install(folder)`` writes it and a ``.dist-info`` with its
``dnas.plugins`` entry point into ``folder``
(``dnas_core.testing.faults.install_plugin_module``), to be put on ``PYTHONPATH``. Manifests
select it as ``backend: {type: cpu_fp16_test}``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from dnas_plugins.backends.torch_devices import CPUBackend, CPUConfig
from pydantic import Field

from dnas_core import hookimpl
from dnas_core.testing.faults import install_plugin_module

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
    """This module as a plugin for the subprocesses that get ``folder`` on PYTHONPATH."""
    return install_plugin_module(__file__, folder, "cpu_fp16_test")
