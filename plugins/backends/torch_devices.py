"""PyTorch eager backends: the CPU, and CUDA GPUs when present.

The CPU backend stays in fp32 and uses the channels-last memory format, which makes
small convolutions and pooling markedly faster on x86 CPUs. The CUDA backend picks
bf16 autocast where the GPU supports it and can wrap models in ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, ContextManager, Literal, Optional

import torch
from pydantic import Field, model_validator
from torch import nn

from dnas_core import Backend, ComponentConfig, hookimpl
from dnas_core.distributed import requested_world_size


class CPUConfig(ComponentConfig):
    threads: Optional[int] = Field(
        None, ge=1, description="torch intra-op threads; default: the CPUs this process may use."
    )
    channels_last: bool = Field(True, description="Use the channels-last memory format for 4-D tensors.")
    clock: Literal["wall", "thread_cpu"] = Field(
        "wall",
        description="what latency measurements read: wall time, or the CPU time of the calling thread "
        "(needs threads: 1; unaffected by other processes competing for the cores)",
    )

    @model_validator(mode="after")
    def _thread_clock_needs_one_thread(self) -> "CPUConfig":
        if self.clock == "thread_cpu" and self.threads != 1:
            raise ValueError("clock: thread_cpu measures only the calling thread, so it needs threads: 1")
        return self


class CPUBackend(Backend):
    """PyTorch eager on the CPU, fp32."""

    name = "cpu"
    description = "PyTorch eager on the CPU (fp32, channels-last)"
    Config = CPUConfig
    auto_priority = 0

    def setup(self) -> None:
        threads = self.config.threads or len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        if self.config.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def timer(self) -> float:
        return time.thread_time() if self.config.clock == "thread_cpu" else time.perf_counter()


class CUDAConfig(ComponentConfig):
    device: str = Field("cuda", pattern=r"^cuda(:\d+)?$")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="autocast precision; auto = bf16 on GPUs with native bf16 (Ampere and later), "
        "else fp32; fp16 (with loss scaling) for the tensor cores of older GPUs (Volta, Turing)"
    )
    compile: bool = Field(False, description="torch.compile the supernet/network (pays off on long runs)")
    channels_last: bool = True
    tf32: bool = True


class CUDABackend(Backend):
    """PyTorch eager (optionally compiled) on an NVIDIA GPU with mixed precision."""

    name = "cuda"
    description = "PyTorch on a CUDA GPU (bf16 or loss-scaled fp16 autocast, optional torch.compile)"
    Config = CUDAConfig
    auto_priority = 10

    @classmethod
    def is_available(cls) -> bool:
        return torch.cuda.is_available()

    def setup(self) -> None:
        if not torch.cuda.is_available():
            from dnas_core import UsageError

            raise UsageError("backend.type: cuda was requested but no CUDA device is available")
        count = torch.cuda.device_count()
        if self.device.index >= count:
            from dnas_core import UsageError

            rank = f" (data-parallel local rank {os.environ['LOCAL_RANK']} uses the GPU of its index)" \
                if requested_world_size() > 1 else ""
            raise UsageError(f"backend.device: {self.device} does not exist; this host has {count} CUDA "
                             f"device(s){rank}")
        torch.cuda.set_device(self.device)
        torch.backends.cuda.matmul.allow_tf32 = self.config.tf32
        torch.backends.cudnn.allow_tf32 = self.config.tf32
        torch.backends.cudnn.benchmark = True

    @property
    def device(self) -> torch.device:
        """``backend.device``; a plain ``cuda`` is ``cuda:LOCAL_RANK`` in a data-parallel
        run (one GPU per local process), ``cuda:(i mod n)`` in ``dnas tune`` worker ``i``
        on a host with ``n`` GPUs, and ``cuda:0`` otherwise."""
        d = torch.device(self.config.device)
        if d.index is not None:
            return d
        if requested_world_size() > 1:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        worker = os.environ.get("DNAS_TUNE_WORKER", "")
        if worker.isdigit() and (gpus := torch.cuda.device_count()) > 1:
            return torch.device("cuda", int(worker) % gpus)
        return torch.device("cuda", 0)

    def _dtype(self) -> torch.dtype | None:
        amp = self.config.amp
        if amp == "off":
            return None
        if amp == "fp16":
            return torch.float16
        # auto: bf16 only where the GPU has it natively (Ampere and later); torch's default
        # check also says yes where bf16 is merely emulated, which is slow and skips cuDNN
        native_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        if amp == "bf16" or native_bf16:
            return torch.bfloat16
        return None  # auto without native bf16: fp32 (fp16, with loss scaling, is opt-in: amp: fp16)

    def autocast(self) -> ContextManager[Any]:
        dtype = self._dtype()
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self._dtype() == torch.float16)

    def prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        if self.config.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.config.compile and not self._eager:
            # in place (nn.Module.compile): the module, its attributes (net.body) and its
            # state_dict keys stay as they are, so strategies and checkpoints are unaffected.
            # isolate_recompiles: every network of a run (supernet, retrained network, a
            # tune worker's trials) shares Network.forward's code object; one shared cache
            # would hit dynamo's recompile limit and run the later ones eagerly.
            module.compile(isolate_recompiles=True)
        return module

    _eager = False

    @contextlib.contextmanager
    def eager(self):
        self._eager, before = True, self._eager
        try:
            yield
        finally:
            self._eager = before

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


@hookimpl
def dnas_register_backends():
    return [CPUBackend, CUDABackend]
