"""Training utilities shared by strategies and the retrain stage.

Small in-memory data sets (``TensorDataset``) are batched by indexing the tensors
with a permutation instead of collating items one by one through a ``DataLoader``:
on small CPU models that collation costs more than the model.

A training split may change from epoch to epoch: a dataset with a ``set_epoch(epoch)``
method (such as :class:`EpochTensorDataset`, which rebuilds its tensors for every
epoch, e.g. fresh negative samples for implicit-feedback recommendation) is told the
epoch by :func:`start_epoch` before every epoch of every training loop (retraining,
differentiable search, the evaluators). Its contents must depend only on the epoch
and what the dataset was built with (the run seed), so resumed runs replay them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from . import distributed
from .errors import RunFailed


class EpochTensorDataset(TensorDataset):
    """A tensor dataset whose tensors are rebuilt for every epoch by ``make(epoch)``.

    It stays a :class:`TensorDataset`, so the fast batching path keeps working; only
    the tensors change when :meth:`set_epoch` moves to another epoch. ``make`` must
    return tensors of the same length for every epoch (the loops count their steps
    once) and must be deterministic in ``epoch`` (seed its generator from the run seed
    and the epoch), so that a resumed run sees the same data as an uninterrupted one.
    """

    def __init__(self, make: Callable[[int], Sequence[torch.Tensor]]):
        self._make = make
        self.epoch = 0
        super().__init__(*make(0))

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        tensors = tuple(self._make(epoch))
        if len(tensors) != len(self.tensors) or tensors[0].shape[0] != self.tensors[0].shape[0]:
            raise RunFailed(f"EpochTensorDataset: epoch {epoch} built {len(tensors)} tensors of "
                            f"{tensors[0].shape[0]} rows; epoch {self.epoch} had {len(self.tensors)} of "
                            f"{self.tensors[0].shape[0]} (the length must not change between epochs)")
        self.tensors, self.epoch = tensors, int(epoch)


def start_epoch(dataset: Dataset, epoch: int) -> bool:
    """Tell ``dataset`` (and what it wraps: subsets, concatenations) that ``epoch``
    begins. Returns whether any part of it changes per epoch."""
    found = False
    if isinstance(dataset, Subset):
        return start_epoch(dataset.dataset, epoch)
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            found = start_epoch(part, epoch) or found
        return found
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
        return True
    return False


def _tensors_of(dataset: Dataset) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None] | None:
    """The underlying tensors (and index subset) of a TensorDataset or a Subset of one."""
    idx = None
    ds = dataset
    while isinstance(ds, Subset):
        sub = torch.as_tensor(ds.indices, dtype=torch.long)
        idx = sub if idx is None else sub[idx]
        ds = ds.dataset
    if isinstance(ds, TensorDataset):
        return ds.tensors, idx
    return None


def move_to(obj: Any, device: torch.device) -> Any:
    """Tensors (in nested tuples and lists) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(o, device) for o in obj)
    return obj


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | None = None,
) -> Iterator[tuple[Any, torch.Tensor]]:
    """Yield ``(inputs, targets)`` batches. Inputs may be a tensor or a tuple."""
    found = _tensors_of(dataset)
    if found is not None:
        tensors, idx = found
        n = len(dataset)  # type: ignore[arg-type]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if idx is not None:
            order = idx[order]
        stop = n - (n % batch_size) if drop_last else n
        for start in range(0, stop, batch_size):
            sel = order[start : start + batch_size]
            items = [t[sel] for t in tensors]
            inputs = items[0] if len(items) == 2 else tuple(items[:-1])
            batch = (inputs, items[-1])
            yield move_to(batch, device) if device is not None else batch
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)
    for batch in loader:
        *inputs, target = batch
        inp = inputs[0] if len(inputs) == 1 else tuple(inputs)
        yield (move_to((inp, target), device) if device is not None else (inp, target))


def num_batches(dataset: Dataset, batch_size: int, drop_last: bool = False) -> int:
    n = len(dataset)  # type: ignore[arg-type]
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def first_inputs(dataset: Dataset, n: int) -> Any:
    for inputs, _ in iterate_batches(dataset, batch_size=n):
        return inputs
    raise RunFailed("the split is empty: no inputs to check the export with")


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    outs, targets = [], []
    for inputs, target in iterate_batches(dataset, batch_size, device=device):
        outs.append(model(inputs).float().cpu())
        targets.append(target.cpu())
    model.train(was_training)
    if not outs:
        raise RunFailed("cannot evaluate on an empty split")
    return torch.cat(outs), torch.cat(targets)


def make_optimizer(params: Sequence[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(epoch: int, total: int, base_lr: float, schedule: str = "cosine", warmup: int = 0, min_lr: float = 0.0) -> float:
    if warmup and epoch < warmup:
        return base_lr * (epoch + 1) / warmup
    if schedule == "constant" or total <= 0:
        return base_lr
    t = (epoch - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def check_finite(loss: torch.Tensor, where: str) -> bool:
    """Whether ``loss`` is finite; callers decide to skip or fail (see the
    ``train.divergence`` policy)."""
    return bool(torch.isfinite(loss).item())


class DivergenceGuard:
    """The ``train.divergence`` policy of one training loop (retraining or search).

    Call :meth:`loss_ok` before ``backward`` and :meth:`grads_ok` with the gradient norm
    before ``optimizer.step``: ``True`` means go on, ``False`` means skip this step (the
    gradients are cleared). ``fail`` raises :class:`RunFailed` at the first non-finite
    value; ``skip_step`` skips the step; ``reduce_lr`` skips it and multiplies the
    learning rate of every optimizer by ``lr_factor`` (kept in :attr:`lr_scale`, which
    the loop applies to its schedule and checkpoints). More than ``max_skips``
    consecutive bad steps fail the run. :meth:`check_params` refuses to let non-finite
    weights reach a checkpoint.
    """

    def __init__(self, stage: str, policy: str = "fail", lr_factor: float = 0.5, max_skips: int = 20):
        self.stage, self.policy, self.lr_factor, self.max_skips = stage, policy, lr_factor, max_skips
        self.skipped = 0
        self.consecutive = 0
        self.lr_scale = 1.0

    @classmethod
    def from_train_config(cls, stage: str, cfg: Any) -> DivergenceGuard:
        return cls(stage, getattr(cfg, "divergence", "fail"), getattr(cfg, "divergence_lr_factor", 0.5),
                   getattr(cfg, "divergence_max_skips", 20))

    def state(self) -> dict[str, float]:
        return {"skipped": self.skipped, "lr_scale": self.lr_scale}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state:
            self.skipped = int(state.get("skipped", 0))
            self.lr_scale = float(state.get("lr_scale", 1.0))

    # In a data-parallel search every rank takes the same decision (dnas_core.distributed
    # .all_ranks): a step skipped on one rank alone would leave the others waiting in
    # the gradient all-reduce.
    def loss_ok(self, loss: torch.Tensor, epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
        finite = bool(torch.isfinite(loss).all())
        if distributed.all_ranks(finite):
            return True
        what = f"the loss became {float(loss.detach().float().reshape(-1)[0])}" if not finite else \
            "the loss became non-finite on another data-parallel rank"
        return self._bad(what, epoch, optimizers)

    def grads_ok(self, grad_norm: torch.Tensor | float, epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
        finite = math.isfinite(float(grad_norm))
        if distributed.all_ranks(finite):
            self.consecutive = 0
            return True
        what = f"the gradient norm became {float(grad_norm)}" if not finite else \
            "the gradient norm became non-finite on another data-parallel rank"
        return self._bad(what, epoch, optimizers)

    def _bad(self, what: str, epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if self.policy == "fail":
            raise RunFailed(
                f"{self.stage}: {what} at epoch {epoch}; lower the learning rate or set "
                f"train.divergence: skip_step or reduce_lr"
            )
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive > self.max_skips:
            raise RunFailed(
                f"{self.stage}: {what} on {self.consecutive} consecutive steps at epoch {epoch} despite "
                f"train.divergence: {self.policy} (lr scale {self.lr_scale:.3g}); stopped before writing a "
                f"checkpoint; lower the learning rate"
            )
        if self.policy == "reduce_lr":
            self.lr_scale *= self.lr_factor
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] *= self.lr_factor
        return False

    def check_params(self, model: nn.Module, epoch: int) -> None:
        for name, p in model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise RunFailed(f"{self.stage}: parameter {name} is no longer finite after epoch {epoch}; "
                                f"the last good checkpoint is kept, this state is not saved")


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                  max_norm: float, scaler: torch.amp.GradScaler, guard: DivergenceGuard, epoch: int,
                  optimizers: Sequence[torch.optim.Optimizer], after_backward: Any = None) -> bool:
    """Backward pass, gradient clipping and optimiser step under the backend's loss
    scaling (:meth:`dnas_core.backend.Backend.grad_scaler`). Returns whether the step
    was taken.

    ``after_backward`` runs on the (still scaled) gradients before they are unscaled:
    a data-parallel all-reduce, so that every rank finds the same overflow. With a
    disabled scaler this is ``backward``, clip, the divergence guard's check and
    ``step``. With float16 loss scaling, a gradient that overflowed is first of all an
    overflow of the scale: the step is skipped and the scale halved, without counting a
    divergence, until the scale falls below 1, where the gradient overflows unscaled
    and the divergence guard decides (as it does for a non-finite gradient norm)."""
    scaler.scale(loss).backward()
    if after_backward is not None:
        after_backward()
    scaler.unscale_(optimizer)
    # clip_grad_norm_ returns the norm before clipping; max_norm=inf only measures it.
    norm = nn.utils.clip_grad_norm_(params, max_norm)
    if scaler.is_enabled():
        found = any(bool(v) for v in scaler._found_inf_per_device(optimizer).values())
        if not distributed.all_ranks(not found) and scaler.get_scale() >= 1.0:
            # the same new scale on every rank (update() would read each rank's own record)
            optimizer.zero_grad(set_to_none=True)
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
            return False
    if not guard.grads_ok(norm, epoch, optimizers):
        scaler.update()
        return False
    scaler.step(optimizer)
    scaler.update()
    return True


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any] | None) -> None:
    """Restore a checkpointed loss scale (a disabled scaler, or a checkpoint written
    without one, keeps its own)."""
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fit(run: Any, model: nn.Module, stage: str = "retrain") -> dict[str, float]:
    """Train ``model`` on the task per ``run.manifest.train``, resumably.

    Checkpoints after every ``output.checkpoint_every`` epochs; a resumed run loads the
    last checkpoint and continues with the same per-epoch random streams. Returns the
    metrics of the last epoch.
    """
    from .seeding import derive_seed, torch_generator

    cfg = run.manifest.train
    task, backend = run.task, run.backend
    device = backend.device
    data = run.data
    train_set = data.train
    if cfg.include_val:
        train_set = _concat(data.train, data.val)
    loss_fn = task.loss_fn()
    if cfg.label_smoothing and isinstance(loss_fn, nn.CrossEntropyLoss):
        loss_fn = nn.CrossEntropyLoss(weight=loss_fn.weight, label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn.to(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    scaler = backend.grad_scaler()
    start, last = 0, {}
    guard = DivergenceGuard.from_train_config(stage, cfg)
    ckpt = run.load_checkpoint(stage)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        load_scaler_state(scaler, ckpt.get("scaler"))
        start, last = int(ckpt["epoch"]) + 1, dict(ckpt.get("last", {}))
        guard.load_state(ckpt.get("divergence"))
        run.run_dir.truncate_metrics(stage, start)
    steps = num_batches(train_set, cfg.batch_size, drop_last=len(train_set) > cfg.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    with run.progress(stage, cfg.epochs, steps, start_epoch=start) as bar:
        for epoch in range(start, cfg.epochs):
            set_lr(optimizer, guard.lr_scale * lr_at(epoch, cfg.epochs, cfg.lr, cfg.scheduler, cfg.warmup_epochs))
            if start_epoch(data.train, epoch) and cfg.include_val:  # training data that changes per epoch
                train_set = _concat(data.train, data.val)
            torch.manual_seed(derive_seed(run.seed, stage, "torch", epoch))
            gen = torch_generator(run.seed, stage, "batches", epoch)
            model.train()
            total, count, correct, has_accuracy = 0.0, 0, 0, False
            for inputs, target in iterate_batches(
                train_set, cfg.batch_size, shuffle=True, generator=gen, drop_last=len(train_set) > cfg.batch_size, device=device
            ):
                inputs = task.augment(inputs, gen)
                with backend.autocast():
                    out = model(inputs)
                    loss = loss_fn(out.float(), target)
                if not guard.loss_ok(loss, epoch, [optimizer]):
                    continue
                # every finite loss counts, also that of a step skipped below (a float16
                # scale overflow): the epoch's loss is what the model scored
                n = target.shape[0]
                total += float(loss.detach()) * n
                count += n
                if out.dim() == 2 and out.shape[1] > 1 and target.dim() == 1:
                    has_accuracy = True
                    correct += int((out.argmax(1) == target).sum())
                optimizer.zero_grad(set_to_none=True)
                backward_step(loss, optimizer, params, cfg.grad_clip or float("inf"), scaler, guard, epoch, [optimizer])
                bar.step(loss=total / max(count, 1))
            # NaN, not 0, when no batch had a finite loss
            metrics: dict[str, float] = {"train_loss": total / count if count else math.nan,
                                         "lr": optimizer.param_groups[0]["lr"]}
            if has_accuracy:  # a real 0 accuracy is logged too
                metrics["train_accuracy"] = correct / max(count, 1)
            if guard.skipped:
                metrics["skipped_steps"] = guard.skipped
                metrics["lr_scale"] = guard.lr_scale
            if scaler.is_enabled():  # float16: the loss scale after this epoch's overflows
                metrics["loss_scale"] = scaler.get_scale()
            if not cfg.include_val and len(data.val) and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                val = task.evaluate(model, data.val, device)
                metrics.update({f"val_{k}": v for k, v in val.items()})
            last = metrics
            run.log_epoch(stage, epoch, metrics, progress=bar)
            if (epoch + 1) % run.manifest.output.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                guard.check_params(model, epoch)
                run.save_checkpoint(
                    stage, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "last": last, "divergence": guard.state(), "scaler": scaler.state_dict()}
                )
    return last


def _concat(a: Dataset, b: Dataset) -> Dataset:
    """Concatenate two splits, keeping the fast tensor path when both are tensors."""
    ta, tb = _tensors_of(a), _tensors_of(b)
    if ta is not None and tb is not None:
        parts = []
        for (tensors, idx) in (ta, tb):
            parts.append([t if idx is None else t[idx] for t in tensors])
        return TensorDataset(*[torch.cat([pa, pb]) for pa, pb in zip(parts[0], parts[1], strict=True)])
    return ConcatDataset([a, b])
