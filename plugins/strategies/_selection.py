"""Perturbation-based operation selection (DARTS-PT: Wang et al., "Rethinking
Architecture Selection in Differentiable NAS", ICLR 2021), the ``strategy.selection:
perturbation`` option of the differentiable family. Not a plugin itself.

Magnitude selection, the default, keeps the operation with the largest architecture
weight on each edge. A large weight need not mean a large contribution: DARTS grows
the weights of skip connections and ``none`` while the convolutions carry the
supernet. Perturbation selection asks the trained supernet instead. Edge by edge, in
a seeded random order:

1. the validation loss of the supernet as it stands, then with each candidate
   operation of the edge switched off (its mixing weight set to 0);
2. the edge keeps the operation whose removal raises the loss the most, and from then
   on mixes that operation alone (weight 1);
3. the supernet's weights train for ``selection_tune_epochs`` epochs, so that the rest
   of the supernet adapts to the discretised edge, before the next edge.

Switching off ``none`` changes nothing, so ``none`` is kept only where every other
operation's removal lowers the loss. The architecture weights do not move during
selection; at the end each chosen operation's logit is raised above its row, so that
the space derives the selected operations (topology choices, such as the DARTS space's
two inputs per node, still follow the weights' magnitudes). The loss is measured with
batch statistics over the whole validation split (or ``selection_batches`` batches of
it), and the batch-norm buffers are put back after each measurement.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dnas_core import MixWeights
from dnas_core import distributed as ddp
from dnas_core.progress import log
from dnas_core.seeding import derive_seed, torch_generator
from dnas_core.training import iterate_batches, move_to, set_lr

if TYPE_CHECKING:
    from dnas_core.space import Network

    from .differentiable import DifferentiableStrategy


class WeightEditor:
    """Wraps a strategy's ``weight_fn``: rows fixed to one operation get a one-hot row,
    and one (tensor, row, column) can be switched off (weight 0)."""

    def __init__(self, weight_fn, params: list[nn.Parameter]):
        self.inner = weight_fn
        self.index = {id(p): k for k, p in enumerate(params)}
        self.cols = [p.shape[-1] for p in params]
        self.fixed: dict[tuple[int, int], int] = {}
        self.off: tuple[int, int, int] | None = None
        self.seen: set[int] = set()  # tensors that passed through weight_fn

    def __call__(self, alpha: torch.Tensor) -> MixWeights:
        mix = self.inner(alpha)
        k = self.index.get(id(alpha))
        if k is None:
            return mix
        self.seen.add(k)
        rows = [(r, c) for (t, r), c in self.fixed.items() if t == k]
        off = self.off if self.off is not None and self.off[0] == k else None
        if not rows and off is None:
            return mix
        w = mix.weights.clone()
        flat = w.view(-1, self.cols[k])
        for r, c in rows:
            flat[r] = 0
            flat[r, c] = 1
        if off is not None:
            flat[off[1], off[2]] = 0
        return dataclasses.replace(mix, weights=w)


@contextlib.contextmanager
def _buffers_kept(net: nn.Module):
    """Put every buffer (batch-norm running statistics) back on exit."""
    saved = [b.detach().clone() for b in net.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(net.buffers(), saved, strict=True):
                b.copy_(s)


@torch.no_grad()
def _val_loss(net: Network, batches: list, loss_fn: nn.Module, backend: Any) -> float:
    total, n = 0.0, 0
    with _buffers_kept(net):
        for x, y in batches:
            with backend.autocast():
                out = net(x)
            total += float(loss_fn(out.float(), y)) * y.shape[0]
            n += y.shape[0]
    return total / max(n, 1)


def select_by_perturbation(strategy: DifferentiableStrategy, run: Any, net: Network, loss_fn: nn.Module,
                           w_opt: torch.optim.Optimizer, excluded: list[tuple[nn.Parameter, list[int]]]) -> dict:
    """Choose one operation per row of every architecture tensor by perturbation (see
    the module docstring), write the choice into the logits and return a summary."""
    cfg = strategy.config
    task, backend, device, seed = run.task, run.backend, run.device, run.seed
    body = net.body
    params = body.arch_parameters()
    labels = body.arch_labels()
    excl = {id(p): set(idx) for p, idx in excluded}
    val_batches = []
    for i, batch in enumerate(iterate_batches(run.data.val, cfg.batch_size)):
        if cfg.selection_batches is not None and i >= cfg.selection_batches:
            break
        val_batches.append(move_to(batch, device))
    train = run.data.train
    drop_last = len(train) > cfg.batch_size
    lr = cfg.w_lr_min if cfg.selection_lr is None else cfg.selection_lr

    editor = WeightEditor(strategy.weight_fn, params)
    body.weight_fn = editor
    net.train()
    try:
        strategy.phase = "eval"
        _val_loss(net, val_batches[:1], loss_fn, backend)  # which tensors pass through weight_fn
        rows = [(k, r) for k, p in enumerate(params) if k in editor.seen and p.shape[-1] > 1
                for r in range(p.numel() // p.shape[-1])]
        order = torch.randperm(len(rows), generator=torch_generator(seed, "select", "order")).tolist()
        decisions = []
        for step, j in enumerate(order):
            k, r = rows[j]
            name, row_labels, cols = labels[k]
            candidates = [c for c in range(len(cols)) if c not in excl.get(id(params[k]), set())]
            strategy.phase = "eval"
            base = _val_loss(net, val_batches, loss_fn, backend)
            rise = {}
            for c in candidates:
                editor.off = (k, r, c)
                rise[cols[c]] = _val_loss(net, val_batches, loss_fn, backend) - base
            editor.off = None
            best = max(candidates, key=lambda c: rise[cols[c]])
            editor.fixed[(k, r)] = best
            by_weight = int(params[k].detach().reshape(-1, len(cols))[r].argmax())
            decisions.append({"tensor": name, "row": row_labels[r], "op": cols[best], "by_magnitude": cols[by_weight],
                              "val_loss": round(base, 6), "loss_rise": {o: round(v, 6) for o, v in rise.items()}})
            log(f"[select] {step + 1}/{len(rows)} {name} {row_labels[r]}: {cols[best]} "
                f"(loss +{rise[cols[best]]:.4f} without it; by magnitude: {cols[by_weight]})")
            for epoch in range(cfg.selection_tune_epochs):
                _tune_epoch(strategy, task, net, train, drop_last, loss_fn, w_opt, backend, device, lr,
                            seed, step, epoch)
        with torch.no_grad():  # the space derives the chosen operations
            for (k, r), c in editor.fixed.items():
                row = params[k].view(-1, params[k].shape[-1])[r]
                row[c] = row.max() + 1.0
    finally:
        body.weight_fn = strategy.weight_fn
        strategy.phase = "eval"
    return {"method": "perturbation", "tune_epochs": cfg.selection_tune_epochs, "tune_lr": lr,
            "val_batches": len(val_batches), "decisions": decisions}


def _tune_epoch(strategy, task, net, train, drop_last, loss_fn, w_opt, backend, device, lr, seed, step, epoch) -> None:
    """One epoch of weight steps with the edits applied (the search loop's weight step)."""
    cfg = strategy.config
    set_lr(w_opt, lr)
    torch.manual_seed(derive_seed(seed, "select", "torch", step, epoch))
    gen = torch_generator(seed, "select", "w", step, epoch)
    aug_gen = torch_generator(seed, "select", "augment", step, epoch)
    for batch in iterate_batches(train, cfg.batch_size, shuffle=True, generator=gen, drop_last=drop_last):
        if cfg.augment != "none":
            batch = (task.augment(batch[0], aug_gen), batch[1])
        (xw, yw), strategy._share_w = ddp.shard_batch(batch, device)
        with ddp.global_batch_norm() if cfg.sync_batch_norm else contextlib.nullcontext():
            strategy.weight_step(net, (xw, yw), loss_fn, w_opt, backend)
