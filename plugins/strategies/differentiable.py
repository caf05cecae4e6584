"""The shared search loop of differentiable (weight-sharing) strategies.

One search step is an architecture update on a validation batch followed by a weight
update on a training batch, as in DARTS. Strategies of the family change only what
differs:

* :meth:`DifferentiableStrategy.weight_fn`: logits -> mixing weights (softmax for
  DARTS, Gumbel samples for GDAS, ...);
* :meth:`DifferentiableStrategy.arch_step`: the architecture update (first-order by
  default; second-order DARTS overrides it);
* :meth:`DifferentiableStrategy.arch_regularizer`: an extra term of the architecture
  loss (beta-decay, latency, ...);
* :meth:`DifferentiableStrategy.supernet_options`: features the space must build into
  the supernet (partial channels, ...);
* :meth:`DifferentiableStrategy.on_epoch_start`: schedules (temperature, ...);
* :meth:`DifferentiableStrategy.on_selection_start`: what perturbation selection must
  not see (DARTS-'s auxiliary skip).

:attr:`DifferentiableStrategy.phase` says which pass is running (``"arch"``,
``"weight"`` or ``"eval"``), so a ``weight_fn`` can differ between them (SDARTS-RS
perturbs the weights of the weight step only); :attr:`epoch` and :attr:`epochs` drive
schedules.

**Collapse monitor.** After every epoch the loop derives the current cell and logs the
share of parameter-free operations in it (``collapse/param_free_share``; skip, pooling,
none) and its number of skip connections (``collapse/skip_count``). With
``stop_at_skips: N`` the search stops early, DARTS+ style, once the derived cell holds at
least N skip connections (after ``warmup_epochs``); the summary records it.

**Selection.** After the search the space derives the cell from the logits
(``selection: magnitude``), or the cell is read off the trained supernet by switching
operations off one at a time (``selection: perturbation``, DARTS-PT; see
``_selection.py``).

During the architecture step the weights do not require gradients, so no weight
gradient is computed; during the weight step the logits do not.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, Iterator, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, IncompatibleError, MixWeights, SearchOutcome, Strategy, Task
from dnas_core import distributed as ddp
from dnas_core import runstore
from dnas_core.constraints import SupernetConstraint
from dnas_core.progress import log
from dnas_core.seeding import derive_seed, torch_generator
from dnas_core.space import Network, Supernet
from dnas_core.training import (
    DivergenceGuard,
    backward_step,
    iterate_batches,
    load_scaler_state,
    lr_at,
    num_batches,
    set_lr,
    start_epoch,
)

from ._selection import select_by_perturbation


class DifferentiableConfig(ComponentConfig):
    epochs: int = Field(50, ge=1, description="search epochs")
    batch_size: int = Field(64, ge=2)
    w_lr: float = Field(0.025, gt=0, description="weight learning rate (SGD, cosine-annealed)")
    w_lr_min: float = Field(0.001, ge=0)
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    arch_lr: float = Field(3e-4, gt=0, description="architecture learning rate (Adam)")
    arch_weight_decay: float = Field(1e-3, ge=0)
    arch_beta1: float = Field(0.5, ge=0, lt=1)
    arch_beta2: float = Field(0.999, ge=0, lt=1)
    warmup_epochs: int = Field(0, ge=0, description="epochs of weight-only training before architecture updates")
    augment: Literal["none", "weights", "both"] = Field(
        "none", description="apply the task's training augmentation (task.augment, e.g. image crop/flip/cutout) to "
        "the search batches: 'weights' to the weight step's, 'both' also to the architecture step's, as DARTS's "
        "reference search does (it splits an augmented training set in two); 'none' searches on raw batches")
    eval_supernet: bool = Field(True, description="evaluate the supernet on the validation split every epoch")
    sync_batch_norm: bool = Field(
        True, description="data-parallel runs (--nproc): batch norm with the statistics of the global batch, so "
        "that N processes compute what one process would (one all-reduce per batch norm call); false: per-rank "
        "statistics, as plain DDP does (fewer round trips, the usual choice for throughput)")
    stop_at_skips: Optional[int] = Field(
        None, ge=1, description="DARTS+ early stop: end the search once the derived cell has at least this many "
        "skip connections (checked after each epoch past warmup_epochs; null: never)")
    exclude_ops: list[str] = Field(
        default_factory=list, description="operations taken out of the search space, by name (e.g. [none]): their "
        "logits are pinned at -10,000, so they get no weight, are never sampled and are never derived")
    selection: Literal["magnitude", "perturbation"] = Field(
        "magnitude", description="how the operation of each edge is chosen after the search: 'magnitude' keeps the "
        "largest architecture weight; 'perturbation' (DARTS-PT) keeps the operation whose removal from the trained "
        "supernet raises the validation loss the most, edge by edge, tuning the weights in between")
    selection_tune_epochs: int = Field(
        1, ge=0, description="perturbation selection: epochs of weight training after each edge is fixed")
    selection_lr: Optional[float] = Field(
        None, gt=0, description="perturbation selection: weight learning rate while tuning (null: w_lr_min, "
        "where the search's cosine schedule ended)")
    selection_batches: Optional[int] = Field(
        None, ge=1, description="perturbation selection: validation batches per loss measurement (null: all)")
    latency_weight: float = Field(
        1.0, ge=0, description="weight of the expected-latency penalty relu(E[latency]/max_latency_ms - 1), "
        "used when the manifest sets constraints.max_latency_ms and the space has a latency model")


#: The logit an excluded operation is pinned at: softmax and sigmoid give it exactly 0 in
#: float32, Gumbel sampling never draws it, and an arg-max never picks it.
EXCLUDED_LOGIT = -1e4


#: Operation names without parameters, across dnas's spaces (NAS-Bench-201, DARTS, mobile).
PARAM_FREE_OPS = frozenset({
    "none", "zero", "skip_connect", "skip", "identity", "avg_pool_3x3", "max_pool_3x3", "avg_pool", "max_pool",
})
SKIP_OPS = frozenset({"skip_connect", "skip", "identity"})


def _op_names(spec: Any) -> list[str]:
    """Every string leaf of a genotype spec: the operation names (DARTS-style specs hold
    ``[op, input]`` pairs, so integers are skipped)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, dict):
        return [n for v in spec.values() for n in _op_names(v)]
    if isinstance(spec, (list, tuple)):
        return [n for v in spec for n in _op_names(v)]
    return []


def collapse_metrics(genotype: Any) -> dict[str, float]:
    """``collapse/param_free_share`` (parameter-free ops / all ops of the derived cell)
    and ``collapse/skip_count`` of a genotype."""
    ops = _op_names(genotype.spec)
    free = sum(op in PARAM_FREE_OPS for op in ops)
    return {"collapse/param_free_share": free / max(len(ops), 1),
            "collapse/skip_count": float(sum(op in SKIP_OPS for op in ops))}




def cycle_batches(dataset, batch_size: int, seed: int, *keys: Any, device=None) -> Iterator[tuple[Any, torch.Tensor]]:
    """Endless shuffled batches; pass ``n`` restarts with its own derived generator."""
    for n in itertools.count():
        gen = torch_generator(seed, *keys, n)
        yield from iterate_batches(dataset, batch_size, shuffle=True, generator=gen,
                                   drop_last=len(dataset) > batch_size, device=device)


def _requires_grad(params: list[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


class DifferentiableStrategy(Strategy):
    """Base class of the differentiable family; see the module docstring."""

    Config = DifferentiableConfig

    #: Which pass runs now: "arch", "weight" or "eval" (see the module docstring).
    phase: str = "eval"
    #: Number of search epochs (schedules use it with ``epoch``).
    epochs: int = 1

    # -- what subclasses change -------------------------------------------------------
    def supernet_options(self) -> dict[str, Any]:
        return {}

    def weight_fn(self, alpha: torch.Tensor) -> MixWeights:
        return MixWeights(torch.softmax(alpha, dim=-1))

    def on_epoch_start(self, epoch: int, supernet: Supernet) -> None:
        """Update schedules at the start of each epoch."""

    def on_selection_start(self, supernet: Supernet) -> None:
        """Before perturbation selection, after the schedules were set to the search's
        last epoch (or the epoch of an early stop): change what selection should not
        see, e.g. a training-only path (DARTS-'s auxiliary skip)."""

    def arch_regularizer(self, supernet: Supernet) -> torch.Tensor | None:
        return None

    def epoch_metrics(self, supernet: Supernet) -> dict[str, float]:
        return {}

    def arch_loss(self, net: Network, x: Any, y: torch.Tensor, loss_fn: nn.Module, backend: Any) -> torch.Tensor:
        with backend.autocast():
            loss = loss_fn(net(x).float(), y)
        reg = self.arch_regularizer(net.body)
        loss = loss if reg is None else loss + reg
        if getattr(self, "_latency_constraint", None) is not None:  # constraints.max_latency_ms
            loss = loss + self.config.latency_weight * self.latency_penalty(net)
        return loss

    def latency_penalty(self, net: Network) -> torch.Tensor:
        """The expected-latency penalty (:class:`dnas_core.constraints.SupernetConstraint`)
        under the softmax of the logits; sampling strategies pass their sampled weights."""
        return self._latency_constraint.penalty(net)

    def arch_step(self, net: Network, batch_a: tuple, batch_w: tuple, loss_fn: nn.Module, a_opt, w_opt, backend) -> float:
        """First-order architecture update on a validation batch."""
        weights = self._weights
        self.phase = "arch"
        _requires_grad(weights, False)
        try:
            a_opt.zero_grad(set_to_none=True)
            loss = self.arch_loss(net, *batch_a, loss_fn, backend)
            guard = self._divergence_guard()
            if not guard.loss_ok(loss, self.epoch, self._optimizers):
                return float("nan")
            if not loss.requires_grad:
                # The loss does not depend on the architecture: a sampled cell whose
                # output is cut off from its input (GDAS drew ``none`` on every edge
                # into the output node) computes zeros whatever the logits. Their
                # gradient is exactly zero, so there is nothing to update.
                return float(loss.detach())
            # data-parallel under loss scaling: every rank unscales the averaged gradients, so
            # all find the same overflow (a_opt's pre-step hook averages them again: a no-op)
            sync = (lambda: ddp.sync_gradients(net.body.arch_parameters(), self._share_a)) \
                if self._scalers[1].is_enabled() and ddp.is_distributed() else None
            # a step skipped here (scale overflow, non-finite gradient) still scored this loss
            backward_step(loss, a_opt, net.body.arch_parameters(), float("inf"), self._scalers[1], guard,
                          self.epoch, self._optimizers, after_backward=sync)
        finally:
            _requires_grad(weights, True)
        return float(loss.detach())

    def weight_step(self, net: Network, batch_w: tuple, loss_fn: nn.Module, w_opt, backend) -> tuple[float, int | None]:
        arch = net.body.arch_parameters()
        self.phase = "weight"
        _requires_grad(arch, False)
        try:
            x, y = batch_w
            w_opt.zero_grad(set_to_none=True)
            with backend.autocast():
                out = net(x)
                loss = loss_fn(out.float(), y)
            guard = self._divergence_guard()
            if not guard.loss_ok(loss, self.epoch, self._optimizers):
                return float("nan"), 0
            # data-parallel: the gradients are averaged before clipping
            # a step skipped here (scale overflow, non-finite gradient) still scored this loss
            backward_step(loss, w_opt, self._weights, self.config.grad_clip, self._scalers[0], guard, self.epoch,
                          self._optimizers, after_backward=lambda: ddp.sync_gradients(self._weights, self._share_w))
        finally:
            _requires_grad(arch, True)
        # None: accuracy is not defined for this output (a score per example, as recsys)
        correct = int((out.argmax(1) == y).sum()) if out.dim() == 2 and out.shape[1] > 1 and y.dim() == 1 else None
        return float(loss.detach()), correct

    # -- divergence --------------------------------------------------------------------
    #: Search epoch being run (schedules and the divergence guard's messages use it).
    epoch: int = 0
    _optimizers: list = []
    #: Loss scaling of the weight and the architecture step (the backend's grad_scaler;
    #: disabled unless autocast runs in float16).
    _scalers: tuple = (torch.amp.GradScaler("cpu", enabled=False),) * 2

    def loss_scaling_refusal(self) -> str | None:
        """Why this strategy's architecture step cannot run under float16 loss scaling
        (``backend.amp: fp16``), or None when it can."""
        return None

    def _divergence_guard(self) -> DivergenceGuard:
        """The run's ``train.divergence`` policy in the search loop: a step whose loss or
        gradient is not finite is skipped, reduces the learning rates, or fails the run.
        ``arch_step`` / ``weight_step`` return NaN for a non-finite loss only: a step
        skipped for its gradients still scored its (finite) loss."""
        guard = getattr(self, "_guard", None)
        if guard is None:
            guard = self._guard = DivergenceGuard("search")
        return guard

    # -- the loop ---------------------------------------------------------------------
    def make_optimizers(self, net: Network) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        cfg = self.config
        w_opt = torch.optim.SGD(self._weights, lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay)
        a_opt = torch.optim.Adam(net.body.arch_parameters(), lr=cfg.arch_lr, betas=(cfg.arch_beta1, cfg.arch_beta2),
                                 weight_decay=cfg.arch_weight_decay)
        return w_opt, a_opt

    def _check_options(self, run) -> None:
        """The checks of the strategy's options against the task and the manifest."""
        cfg, task = self.config, run.task
        if cfg.augment != "none" and not task.has_augmentation():
            # Task.has_augmentation: whether the task's class augments at all (its config may switch it off)
            raise IncompatibleError(
                f"strategy.augment: {cfg.augment!r} needs a task with training augmentation; task {task.name!r} "
                "applies none" + (" (turn it on with task.augment: crop_padding, flip or cutout)"
                                  if Task.has_augmentation(task) else "") + ", or set strategy.augment: none")
        if cfg.selection == "perturbation":
            if self.samples_paths:
                raise IncompatibleError(f"strategy.selection: perturbation needs a supernet that mixes every operation; "
                                        f"{self.name} samples one path per edge (use selection: magnitude)")
            if run.manifest.constraints.max_latency_ms is not None:
                raise IncompatibleError("strategy.selection: perturbation does not combine with "
                                        "constraints.max_latency_ms (the latency-constrained derivation picks the "
                                        "operations); use selection: magnitude")
        if len(run.data.val) == 0:
            raise IncompatibleError(f"{self.name} needs a validation split for its architecture steps, and "
                                    "the task's is empty (task.val_fraction)")

    def _check_supernet(self, body: Supernet, backend) -> list[tuple[nn.Parameter, list[int]]]:
        """The checks of the options against the built supernet and the backend; returns
        the columns ``exclude_ops`` pins (:meth:`_excluded_columns`)."""
        if self.config.selection == "perturbation":
            self._check_perturbation_selection(body)
        excluded = self._excluded_columns(body)
        if backend.grad_scaler().is_enabled() and (why := self.loss_scaling_refusal()):
            raise IncompatibleError(f"backend.amp: fp16 needs loss scaling, which {self.name} cannot use: {why}; "
                                    "use backend.amp: bf16 or off")
        return excluded

    def preflight(self, run) -> None:
        self._check_options(run)
        with torch.random.fork_rng(devices=[]):  # building a supernet draws its initial weights
            body = run.space.build_supernet(run.task, **self.supernet_options()).body
        body.weight_fn = self.weight_fn
        self._check_supernet(body, run.backend)

    def search(self, run) -> SearchOutcome:
        cfg = self.config
        task, space, backend = run.task, run.space, run.backend
        data, device, seed = run.data, run.device, run.seed
        self._check_options(run)
        torch.manual_seed(derive_seed(seed, "search", "init"))
        # A supernet that computes only sampled paths branches in Python on each sample:
        # compiled, it would recompile on every new path until dynamo gives up.
        with backend.eager() if self.samples_paths else contextlib.nullcontext():
            net = backend.prepare(space.build_supernet(task, **self.supernet_options()))
        if self.samples_paths and getattr(backend.config, "compile", False):
            log(f"[search] {self.name} samples one path per step: the supernet runs uncompiled "
                "(backend.compile applies to the retrained network)")
        body: Supernet = net.body
        body.weight_fn = self.weight_fn
        excluded = self._check_supernet(body, backend)
        arch_ids = {id(p) for p in body.arch_parameters()}
        self._weights = [p for p in net.parameters() if id(p) not in arch_ids]
        w_opt, a_opt = self.make_optimizers(net)
        self._optimizers = [w_opt, a_opt]
        self._scalers = (backend.grad_scaler(), backend.grad_scaler())
        self._guard = guard = DivergenceGuard.from_train_config("search", run.manifest.train)
        loss_fn = task.loss_fn().to(device)
        self._latency_constraint = SupernetConstraint.for_run(run, net)

        start = 0
        stopped: dict[str, Any] | None = None
        ckpt = run.load_checkpoint("search")
        if ckpt is not None:
            net.load_state_dict(ckpt["net"])
            w_opt.load_state_dict(ckpt["w_opt"])
            a_opt.load_state_dict(ckpt["a_opt"])
            for scaler, state in zip(self._scalers, ckpt.get("scalers") or [None, None], strict=True):
                load_scaler_state(scaler, state)
            self.load_extra_state(ckpt.get("extra", {}))
            guard.load_state(ckpt.get("divergence"))
            start = int(ckpt["epoch"]) + 1
            run.run_dir.truncate_metrics("search", start)
            stopped = ckpt.get("stopped")  # an early stop (stop_at_skips) stays one
            if stopped:
                start = cfg.epochs
        elif run.manifest.extends_runs:
            # Transfer: start from the supernet body of earlier runs of this space (dnas_core.runstore).
            loaded = runstore.warm_start_supernet(run, net)
            if loaded:
                log(f"[search] warm start: {len(loaded)} supernet tensors from extends_runs (space {run.space.name})")
            else:
                import warnings

                warnings.warn(f"extends_runs: none of the listed runs holds a {run.space.name} supernet with matching "
                              "shapes; the search starts from scratch", stacklevel=2)
        if excluded:  # pinned now and after every update (Adam's weight decay would move them)
            self._pin_excluded(excluded)
            a_opt.register_step_post_hook(lambda opt, args, kwargs: self._pin_excluded(excluded))
        # Data-parallel (dnas_core.distributed): every rank starts from rank 0's state and
        # the architecture gradients are averaged before every architecture update,
        # whichever arch_step a subclass implements.
        self._share_w = self._share_a = 1.0
        if ddp.is_distributed():
            ddp.broadcast_module(net)
            a_opt.register_step_pre_hook(lambda opt, args, kwargs: ddp.sync_gradients(
                [p for g in opt.param_groups for p in g["params"]], self._share_a))

        train, val = data.train, data.val
        steps = num_batches(train, cfg.batch_size, drop_last=len(train) > cfg.batch_size)
        self.epochs = cfg.epochs
        with run.progress("search", cfg.epochs, steps, start_epoch=start) as bar:
            for epoch in range(start, cfg.epochs):
                self.epoch = epoch
                set_lr(w_opt, guard.lr_scale * lr_at(epoch, cfg.epochs, cfg.w_lr, "cosine", min_lr=cfg.w_lr_min))
                self.on_epoch_start(epoch, body)
                start_epoch(train, epoch)  # per-epoch training data (e.g. fresh recsys negatives)
                torch.manual_seed(derive_seed(seed, "search", "torch", epoch))
                gen = torch_generator(seed, "search", "w", epoch)
                aug_gen = torch_generator(seed, "search", "augment", epoch)
                # global batches stay on the host; each rank moves its own slice (shard_batch)
                val_batches = cycle_batches(val, cfg.batch_size, seed, "search", "a", epoch)
                net.train()
                tot_loss, tot_n, tot_correct, arch_total, arch_steps = 0.0, 0, 0, 0.0, 0
                has_accuracy = False
                for xw, yw in self.weight_batches(task, train, gen, aug_gen, device):
                    # data-parallel: batch norm over the global batch (unless sync_batch_norm is off)
                    with ddp.global_batch_norm() if cfg.sync_batch_norm else contextlib.nullcontext():
                        if epoch >= cfg.warmup_epochs:
                            batch_a = next(val_batches)
                            if cfg.augment == "both":
                                batch_a = (task.augment(batch_a[0], aug_gen), batch_a[1])
                            batch_a, self._share_a = ddp.shard_batch(batch_a, device)
                            a_loss = self.arch_step(net, batch_a, (xw, yw), loss_fn, a_opt, w_opt, backend)
                            if a_loss == a_loss:  # NaN: the loss was not finite (the divergence guard)
                                arch_total += self._share_a * a_loss
                                arch_steps += 1
                        loss, correct = self.weight_step(net, (xw, yw), loss_fn, w_opt, backend)
                    if loss != loss:  # a non-finite loss (the divergence guard skipped its step)
                        continue
                    tot_loss += loss * yw.shape[0]
                    tot_n += yw.shape[0]
                    if correct is not None:
                        has_accuracy = True
                        tot_correct += correct
                    bar.step(loss=tot_loss / max(tot_n, 1))
                tot_loss, tot_n, tot_correct, arch_total = ddp.sum_over_ranks([tot_loss, tot_n, tot_correct, arch_total])
                metrics: dict[str, Any] = {"train_loss": tot_loss / tot_n if tot_n else math.nan}
                if has_accuracy:
                    metrics["train_accuracy"] = tot_correct / max(tot_n, 1)
                if arch_steps:
                    metrics["arch_loss"] = arch_total / arch_steps
                if cfg.eval_supernet and ddp.is_main():  # only rank 0 logs
                    self.phase = "eval"
                    val_metrics = task.evaluate(net, val, device)
                    metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
                if guard.skipped:
                    metrics["skipped_steps"] = guard.skipped
                    metrics["lr_scale"] = guard.lr_scale
                if self._scalers[0].is_enabled():  # float16: the loss scales after this epoch's overflows
                    metrics["loss_scale"] = self._scalers[0].get_scale()
                    metrics["arch_loss_scale"] = self._scalers[1].get_scale()
                metrics.update(self.epoch_metrics(body))
                metrics.update(self._arch_metrics(body))
                derived = space.derive(net)
                metrics.update(collapse_metrics(derived))
                run.log_epoch("search", epoch, metrics, progress=bar)
                if (cfg.stop_at_skips is not None and epoch >= cfg.warmup_epochs
                        and metrics["collapse/skip_count"] >= cfg.stop_at_skips):
                    stopped = {"epoch": epoch, "skip_count": int(metrics["collapse/skip_count"]),
                               "genotype": str(derived)}
                if stopped or (epoch + 1) % run.manifest.output.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    guard.check_params(net, epoch)
                    run.save_checkpoint("search", {"net": net.state_dict(), "w_opt": w_opt.state_dict(),
                                                   "a_opt": a_opt.state_dict(), "epoch": epoch,
                                                   "scalers": [sc.state_dict() for sc in self._scalers],
                                                   "extra": self.extra_state(), "divergence": guard.state(),
                                                   "stopped": stopped})
                if stopped:
                    break
        self.phase = "eval"
        runstore.remember_supernet(run, net)  # the searched supernet, for warm starts (before any selection)
        summary = {"epochs": cfg.epochs, "arch_weights": body.arch_snapshot(),
                   "arch_labels": [list(lbl) for lbl in body.arch_labels()]}
        if cfg.selection == "perturbation":  # DARTS-PT: ask the trained supernet (plugins/strategies/_selection.py)
            # the schedules (DARTS-'s auxiliary skip, SDARTS's noise, ...) and the epoch's
            # training data as the search left them, also when a resumed run skipped the loop
            self.epoch = stopped["epoch"] if stopped else cfg.epochs - 1
            self.on_epoch_start(self.epoch, body)
            self.on_selection_start(body)
            start_epoch(train, self.epoch)
            summary["selection"] = select_by_perturbation(self, run, net, loss_fn, w_opt, excluded)
        if ddp.is_distributed():  # evidence that every rank ended with the same architecture
            summary["data_parallel"] = {"world_size": ddp.world_size(),
                                        "max_arch_difference_between_ranks": ddp.max_rank_difference(body.arch_parameters())}
        if stopped:
            summary["early_stop"] = stopped
        outcome = SearchOutcome(supernet=net, summary=summary)
        if self._latency_constraint is not None:  # the fastest-enough likely architecture
            outcome.genotype, summary["latency_constraint"] = self._latency_constraint.derive(space, net)
        # The strategy outlives its search (it stays in the run context): let go of the
        # supernet's weights and optimiser state, so that retraining does not share the
        # device's memory with them once the orchestrator has derived the genotype.
        self._weights, self._optimizers = [], []
        return outcome

    #: Whether ``weight_fn`` picks paths (``MixWeights.index``): the supernet then runs
    #: only the sampled operations and is not graph-compiled (see :meth:`search`).
    samples_paths: bool = False

    #: Whether ``exclude_ops`` works with this strategy's ``weight_fn`` (it needs logits
    #: for which -10,000 means "never": softmax, sigmoid, Gumbel sampling).
    supports_exclude_ops: bool = True

    def weight_batches(self, task: Task, train, gen: torch.Generator, aug_gen: torch.Generator,
                       device) -> Iterator[tuple[Any, torch.Tensor]]:
        """One epoch of the weight step's batches: shuffled by ``gen``, augmented as
        ``strategy.augment`` says, then this rank's slice (``self._share_w`` its share)."""
        cfg = self.config
        for batch in iterate_batches(train, cfg.batch_size, shuffle=True, generator=gen,
                                     drop_last=len(train) > cfg.batch_size):
            if cfg.augment != "none":  # the global batch, on the host: the same images for any --nproc
                batch = (task.augment(batch[0], aug_gen), batch[1])
            (xw, yw), self._share_w = ddp.shard_batch(batch, device)  # this rank's slice of the global batch
            yield xw, yw

    def _check_perturbation_selection(self, body: Supernet) -> None:
        """Perturbation selection switches operations off in the mixture the strategy
        evaluates with: a strategy that evaluates one path per edge (FBNet's arg-max
        network) has no mixture to perturb."""
        self.phase = "eval"
        with torch.no_grad():
            mixes = [self.weight_fn(p) for p in body.arch_parameters()]
        if any(m.index is not None or m.active is not None for m in mixes):
            raise IncompatibleError(f"strategy.selection: perturbation needs a supernet that mixes every operation; "
                                    f"{self.name} evaluates one path per edge (use selection: magnitude)")

    def _excluded_columns(self, body: Supernet) -> list[tuple[nn.Parameter, list[int]]]:
        """For each architecture tensor, the columns (operations) ``exclude_ops`` names;
        a clear error for a name the space does not have or a tensor left without any."""
        names = list(self.config.exclude_ops)
        zero = body.zero_op if getattr(self.config, "exclude_zero_op", False) else None
        if zero and zero not in names:
            names.append(zero)
        if not names:
            return []
        if not self.supports_exclude_ops:
            raise IncompatibleError(f"strategy.exclude_ops: {self.name} does not support excluding operations "
                                    "(its architecture parameters are not logits)")
        out, seen, all_cols = [], set(), set()
        for (tensor, _, cols), p in zip(body.arch_labels(), body.arch_parameters(), strict=True):
            all_cols.update(cols)
            idx = [k for k, c in enumerate(cols) if c in names]
            if not idx:
                continue
            if len(idx) == len(cols):
                raise IncompatibleError(f"strategy.exclude_ops: {names} leaves no operation in {tensor!r}")
            seen.update(cols[k] for k in idx)
            out.append((p, idx))
        unknown = [n for n in self.config.exclude_ops if n not in seen]
        if unknown:
            raise IncompatibleError(f"strategy.exclude_ops: {unknown} not among the search space's operations "
                                    f"{sorted(all_cols)}")
        return out

    @staticmethod
    @torch.no_grad()
    def _pin_excluded(excluded: list[tuple[nn.Parameter, list[int]]]) -> None:
        for p, idx in excluded:
            p[..., idx] = EXCLUDED_LOGIT

    def extra_state(self) -> dict[str, Any]:
        """Strategy state to checkpoint besides the networks and optimizers."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    @staticmethod
    def _arch_metrics(body: Supernet) -> dict[str, float]:
        out = {}
        snap = body.arch_snapshot()
        for name, rows, cols in body.arch_labels():
            for r, row in zip(rows, snap[name], strict=True):
                for c, v in zip(cols, row, strict=True):
                    out[f"arch/{name}/{r}/{c}"] = round(float(v), 5)
        return out
