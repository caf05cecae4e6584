"""Data-parallel supernet training with ``torch.distributed`` (gloo on CPUs, NCCL on GPUs).

``dnas run m.yaml --nproc N`` (or ``torchrun --nproc_per_node=N -m dnas_core run
m.yaml``) starts N processes. Every rank builds the same supernet from the shared
seed, draws the same global batches, trains on its own slice of each one and averages
the weight *and* architecture gradients over the ranks before each optimiser step, so
the parameters stay identical on every rank and equal (up to batch-norm statistics,
which are per rank on CPUs) those of one process with the same global batch. Sampling
strategies draw from the same seeded generators on every rank, so they sample the
same path.

Only rank 0 writes the run directory: the other ranks see a :class:`FollowerRunDir`
whose writes do nothing, and they stop after the search stage; rank 0 derives,
retrains, evaluates, exports and reports alone.

Gradients are averaged with one flattened all-reduce per optimiser step instead of
wrapping the supernet in ``DistributedDataParallel``: the search alternates which
parameters require gradients (weights, then architecture), which DDP's reducer does
not allow, and the architecture parameters need averaging too.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from .errors import UsageError
from .rundir import RunDir


def requested_world_size() -> int:
    """The world size torchrun (or ``dnas run --nproc``) asked for."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


#: This process's rank, remembered when it joins the group: the group is left right
#: after the search (:func:`shutdown`), and a follower must still know it is one.
_RANK: int = 0


def _process_group_backend() -> str:
    """gloo for CPU tensors and, when every local rank has a GPU of its own, NCCL for
    CUDA tensors (``"cpu:gloo,cuda:nccl"``): a ``backend: cpu`` manifest on a GPU host
    then still communicates through gloo. ``DNAS_DIST_BACKEND`` overrides the choice."""
    if os.environ.get("DNAS_DIST_BACKEND"):
        return os.environ["DNAS_DIST_BACKEND"]
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available() and torch.cuda.device_count() >= local:
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_from_env() -> bool:
    """Join the process group when started by torchrun with more than one process.

    The backend is :func:`_process_group_backend`'s; with NCCL each rank's current
    CUDA device is ``cuda:LOCAL_RANK``. Non-zero ranks print no progress. Returns
    whether this process is part of a group of two or more.
    """
    global _RANK
    if requested_world_size() <= 1:
        return False
    if not dist.is_available():
        raise UsageError("this torch build has no torch.distributed; run with one process")
    if not dist.is_initialized():
        backend = _process_group_backend()
        if "nccl" in backend:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    _RANK = dist.get_rank()
    if _RANK != 0:
        os.environ["DNAS_PROGRESS"] = "0"
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; after :func:`shutdown`, the rank it had in the group."""
    return dist.get_rank() if is_distributed() else _RANK


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def shutdown() -> None:
    """Leave the process group together: every rank waits for the others before
    tearing its connections down (a gloo rank that tore down alone was seen to abort
    at exit). Called right after the search, where the ranks are in step: rank 0 then
    derives, retrains and reports without a group, so no rank sits in a collective
    whose timeout (30 min for gloo, 10 for NCCL) could end the run meanwhile."""
    global _RANK
    if dist.is_available() and dist.is_initialized():
        _RANK = dist.get_rank()  # also for a group the embedding program set up itself
        dist.barrier()
        dist.destroy_process_group()


def local_threads(total: int) -> int:
    """CPU threads for one rank when ``total`` are available to all local ranks."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))
    return max(1, total // max(1, local))


# -- data and gradients ----------------------------------------------------------------


def shard_bounds(n: int) -> tuple[int, int]:
    """This rank's contiguous slice [start, stop) of a global batch of ``n`` items
    (sizes differ by at most one)."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def shard_batch(batch: tuple[Any, torch.Tensor], device: torch.device | None = None
                ) -> tuple[tuple[Any, torch.Tensor], float]:
    """This rank's slice of a global ``(inputs, targets)`` batch and its share of the
    global batch (the weight of its gradient in the average). With ``device``, the
    slice is moved there: load global batches on the host and let each rank copy only
    its own slice."""
    from .training import move_to

    if not is_distributed():
        return (batch if device is None else move_to(batch, device)), 1.0
    inputs, target = batch
    n = target.shape[0]
    if n < world_size():
        raise UsageError(f"a batch of {n} cannot be split over {world_size()} processes; raise the batch size")
    lo, hi = shard_bounds(n)
    cut = (lambda t: t[lo:hi])
    local_inputs = type(inputs)(cut(t) for t in inputs) if isinstance(inputs, (tuple, list)) else cut(inputs)
    local = (local_inputs, cut(target))
    return (local if device is None else move_to(local, device)), (hi - lo) / n


def average(tensors: Sequence[torch.Tensor], share: float) -> list[torch.Tensor]:
    """The batch-weighted average ``sum_r share_r * t_r`` of each tensor over the ranks
    (one flattened all-reduce); the tensors themselves are left as they were."""
    if not is_distributed() or not tensors:
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors]) * share
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]


def sync_gradients(params: Iterable[nn.Parameter], share: float) -> None:
    """Replace each gradient by the batch-weighted average over the ranks:
    ``sum_r share_r * grad_r``, which is the gradient of the global mean loss.

    Parameters without a gradient on every rank (an operation off the path GDAS or
    ProxylessNAS sampled) keep ``grad = None``, as in one process: the optimiser then
    skips them instead of applying weight decay and momentum to a zero gradient. A
    parameter with a gradient on some ranks only gets zeros on the others."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad or p.grad is not None]
    if not params:
        return
    # host-side flags through gloo: no device round trip per step on a GPU
    has = _for_collective(torch.tensor([p.grad is not None for p in params], dtype=torch.float32))
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    params = [p for p, h in zip(params, has.tolist(), strict=True) if h]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, g in zip(params, average(grads, share), strict=True):
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def _for_collective(t: torch.Tensor) -> torch.Tensor:
    """``t`` where the group's backend can reduce it: a host tensor goes to the GPU only
    in an NCCL-only group (``DNAS_DIST_BACKEND=nccl``); ``cpu:gloo,cuda:nccl`` and gloo
    reduce host tensors through gloo."""
    return t.cuda() if dist.get_backend() == "nccl" else t


def all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one tiny all-reduce): a decision that must
    be the same everywhere, such as skipping a step, is taken on all of them."""
    if not is_distributed():
        return flag
    t = _for_collective(torch.tensor([1.0 if flag else 0.0]))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    if not is_distributed():
        return list(values)
    t = _for_collective(torch.tensor(list(values), dtype=torch.float64))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def max_rank_difference(tensors: Sequence[torch.Tensor]) -> float:
    """The largest absolute difference between any rank's ``tensors`` and rank 0's
    (0.0 when the ranks agree exactly, or outside data-parallel runs)."""
    if not is_distributed() or not tensors:
        return 0.0
    flat = _for_collective(torch.cat([t.detach().reshape(-1).float() for t in tensors]))
    gathered = [torch.empty_like(flat) for _ in range(world_size())]
    dist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def from_rank_zero(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every rank (one broadcast; ``t`` itself outside data-parallel
    runs). For random draws that must agree everywhere, such as the noise behind a
    sampled path: the ranks' generators drift apart as soon as their slices of a batch
    differ in size (a batch that does not divide evenly) and a layer such as dropout
    draws per example."""
    if not is_distributed():
        return t
    buf = _for_collective(t.detach().contiguous().clone())
    dist.broadcast(buf, src=0)
    return buf.to(t.device)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks: the gradient of a sum is the sum of the
    ranks' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _global_batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                       weight: torch.Tensor | None, bias: torch.Tensor | None, momentum: float | None,
                       eps: float) -> torch.Tensor:
    """Training-mode batch norm with the statistics of the global batch."""
    c = x.shape[1]
    dims = [0, *range(2, x.dim())]
    out_dtype = x.dtype
    x = x.float()  # statistics in fp32, as native batch norm keeps them under bf16/fp16 autocast
    count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
    packed = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
    n = packed[-1]
    mean = packed[:c] / n
    var = (packed[c:2 * c] / n - mean * mean).clamp_min(0)
    if running_mean is not None and running_var is not None:
        m = 0.1 if momentum is None else momentum
        with torch.no_grad():
            running_mean.mul_(1 - m).add_(mean.detach().to(running_mean.dtype) * m)
            running_var.mul_(1 - m).add_((var.detach() * n / (n - 1).clamp_min(1)).to(running_var.dtype) * m)
    shape = [1, c] + [1] * (x.dim() - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y.to(out_dtype)


class _GlobalBatchNormMode(TorchFunctionMode):
    """Routes every training-mode ``F.batch_norm`` (``nn.BatchNorm*`` and spaces that
    call it directly) to :func:`_global_batch_norm`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _BN_SIGNATURE.bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            if a["training"]:
                return _global_batch_norm(a["input"], a["running_mean"], a["running_var"], a["weight"], a["bias"],
                                          a["momentum"], a["eps"])
        return func(*args, **kwargs)


_BN_SIGNATURE = inspect.signature(F.batch_norm)


def global_batch_norm() -> contextlib.AbstractContextManager[Any]:
    """Within this context, batch norm in training mode normalises with the statistics
    of the global batch (all ranks), with gradients flowing through them as in one
    process; a no-op outside data-parallel runs. Wrap training steps only: evaluation
    runs on rank 0 alone and must not communicate."""
    return _GlobalBatchNormMode() if is_distributed() else contextlib.nullcontext()


def broadcast_object(obj: Any) -> Any:
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# -- run directory -----------------------------------------------------------------------


class FollowerRunDir(RunDir):
    """The run directory as a non-zero rank sees it: reads work (a resumed run loads
    its checkpoints), writes do nothing."""

    def write_text(self, name: str, text: str) -> Path:
        return self.file(name)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.file(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return self.file(name)

    def remove_temp_files(self) -> list[Path]:
        return []  # rank 0's, and one of them may be in flight

    def append_metrics(self, record: dict[str, Any]) -> None:
        pass

    def truncate_metrics(self, stage: str, from_epoch: int) -> None:
        pass

    def save_checkpoint(self, stage: str, state: dict[str, Any]) -> Path:
        return self.file(f"checkpoints/{stage}.pt")

    def set_status(self, status: str, **extra: Any) -> None:
        pass


# -- failures of one rank ----------------------------------------------------------------
# ``dnas run --nproc N`` gives its processes a folder (DNAS_LAUNCH_DIR) in which rank 0
# names its run directory and any rank that fails leaves its error. When one rank fails
# the others only see a broken connection (or torchrun's SIGTERM): rank 0 records the
# failed rank's own error in status.json instead, and the launcher marks the run failed
# when its processes died without recording anything.

LAUNCH_DIR_ENV = "DNAS_LAUNCH_DIR"


def _launch_dir() -> Path | None:
    folder = os.environ.get(LAUNCH_DIR_ENV)
    return Path(folder) if folder and is_distributed() else None


def announce_run_dir(path: Path) -> None:
    """Rank 0: tell the launcher which run directory this run writes."""
    folder = _launch_dir()
    if folder is not None and is_main():
        with contextlib.suppress(OSError):
            (folder / "run_dir").write_text(str(path))


def record_failure(error: str) -> None:
    """A follower rank's error, for rank 0 and the launcher (followers write no run
    directory)."""
    folder = _launch_dir()
    if folder is not None and not is_main():
        with contextlib.suppress(OSError):
            tmp = folder / f".rank{rank()}.tmp"
            tmp.write_text(error)
            tmp.replace(folder / f"rank{rank()}.error")


@contextlib.contextmanager
def signals_deferred():
    """In a data-parallel run, SIGTERM and SIGHUP ignored for the duration (main thread
    only): recording why the run ended must not be cut short by the SIGTERM torchrun
    sends the surviving processes when one rank fails."""
    import threading

    if not is_distributed() or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _rank_errors(folder: Path) -> list[str]:
    """The errors the ranks left in the launch folder, as "rank R: ...", by rank."""
    found = sorted(folder.glob("rank*.error"), key=lambda p: int(p.stem[4:]))
    return [f"rank {p.stem[4:]}: {p.read_text(errors='replace')}" for p in found]


def other_rank_failures(wait_s: float = 3.0) -> list[str]:
    """Rank 0, ending with an error: the errors the other ranks left, as "rank R: ...".
    Waits up to ``wait_s`` for one to appear: a collective breaks as soon as the failed
    rank's process exits, which is after it wrote its error."""
    import time

    folder = _launch_dir()
    if folder is None:
        return []
    deadline = time.monotonic() + wait_s
    try:
        while not any(folder.glob("rank*.error")) and time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:  # torchrun's SIGTERM to the survivors: record what is there
        pass
    return _rank_errors(folder)


def _mark_unrecorded_failure(folder: Path, code: int) -> None:
    """After the processes have exited with ``code`` != 0: a run directory still marked
    running (rank 0 died without recording why, e.g. aborted inside a collective) is
    marked failed, with the other ranks' errors if they left any."""
    import json

    named = folder / "run_dir"
    if not named.is_file():
        return
    run_dir = RunDir(Path(named.read_text()))
    try:
        if run_dir.status().get("status") != "running":
            return
        errors = _rank_errors(folder)
        why = "; ".join(errors) if errors else "no process recorded an error (one may have crashed or been killed)"
        run_dir.set_status("failed", error=f"the data-parallel processes exited with status {code}: {why}")
    except (OSError, ValueError, json.JSONDecodeError):
        pass


# -- launching ---------------------------------------------------------------------------


def launch(nproc: int, dnas_args: Sequence[str]) -> int:
    """Run ``python -m dnas_core <dnas_args>`` on ``nproc`` local processes through
    torchrun; returns its exit status. SIGINT, SIGTERM and SIGHUP sent to this process
    are passed on to torchrun, which stops its workers: killing ``dnas run --nproc N``
    stops the run instead of leaving orphaned workers writing the run directory (a
    SIGKILL cannot be passed on)."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1 (got {nproc})")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dnas_core", *dnas_args]
    # rank 0 leaves its exit status here (torchrun reports any failure as 1), so that a
    # usage error is 2 and an interrupted run 130 with or without --nproc
    with tempfile.TemporaryDirectory(prefix="dnas-launch-") as tmp:
        status_file = Path(tmp) / "exit_code"
        env = {**os.environ, "DNAS_EXIT_CODE_FILE": str(status_file), LAUNCH_DIR_ENV: tmp}
        code, signalled = _supervise(subprocess.Popen(cmd, env=env, start_new_session=True))
        if code != 0:
            _mark_unrecorded_failure(Path(tmp), code)
        if code != 0 and status_file.is_file():
            with contextlib.suppress(ValueError):
                rank0 = int(status_file.read_text())
                # 130 means stopped by a signal: rank 0's own report only if the stop came
                # from here; torchrun also SIGTERMs rank 0 when another rank fails
                if rank0 != 130 or signalled:
                    code = rank0
        return code


def _supervise(child: subprocess.Popen) -> tuple[int, bool]:
    """Wait for ``child`` (started in its own session, so that a Ctrl-C on the terminal
    reaches torchrun once, through this process), passing SIGINT, SIGTERM and SIGHUP on.
    Returns its exit status and whether a signal was passed on."""
    signalled = False

    def forward(signum, frame):
        nonlocal signalled
        signalled = True
        # torchrun stops its workers with the signal it got: a SIGHUP goes on as SIGTERM,
        # the stop every worker records
        child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return child.wait(), signalled
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:  # this process is leaving for another reason
            child.terminate()
            child.wait()


__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "is_main", "shard_batch", "sync_gradients",
           "sum_over_ranks", "max_rank_difference", "global_batch_norm", "broadcast_module", "broadcast_object", "from_rank_zero", "announce_run_dir", "record_failure", "other_rank_failures", "FollowerRunDir", "launch", "shutdown", "average", "all_ranks"]
