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
operation's removal lowers the loss; it is a candidate only in spaces that can derive
it (NAS-Bench-201, not the DARTS space). Tensors whose rows keep a subset of their
operations (``Supernet.multi_choice``) are left to the space's derive. The
architecture weights do not move during selection; at the end each chosen operation
swaps logits with the largest of its row's candidates, so that the space derives the
selected operations while the row's values, by which the DARTS space picks each node's
two inputs, stay as the search left them. The loss is measured in float32 with batch statistics
over the whole validation split (or ``selection_batches`` batches of it), the
batch-norm buffers are put back after each measurement, and a data-parallel run splits
every batch over the ranks and all-reduces the sums, so all ranks decide alike.

After each edge is decided and tuned, the supernet, the weight optimiser and the
decisions so far are checkpointed (``checkpoints/select.pt``): a run stopped during
selection resumes at the next edge of the same seeded order. The checkpoint also holds
the architecture weights it started from; one left by another search (re-run after its
own checkpoint was deleted) is set aside.
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
from dnas_core.training import iterate_batches, load_scaler_state, set_lr

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


def validation_batches(val, batch_size: int, limit: int | None) -> list[tuple[Any, torch.Tensor]]:
    """Host batches of the validation split (at most ``limit``). A last batch of one
    example joins the one before: batch norm cannot normalise a single example."""
    batches = []
    for i, batch in enumerate(iterate_batches(val, batch_size)):
        if limit is not None and i >= limit:
            break
        batches.append(batch)
    if len(batches) > 1 and batches[-1][1].shape[0] == 1:
        (xa, ya), (xb, yb) = batches[-2], batches.pop()
        cat = (lambda a, b: type(a)(torch.cat(p) for p in zip(a, b, strict=True))) if isinstance(xa, (tuple, list)) \
            else (lambda a, b: torch.cat([a, b]))
        batches[-1] = (cat(xa, xb), torch.cat([ya, yb]))
    return batches


@torch.no_grad()
def val_loss(net: nn.Module, batches: list, loss_fn: nn.Module, device: torch.device, seed: int,
             sync_batch_norm: bool = True) -> float:
    """Mean loss over ``batches`` with batch statistics, in float32 (the compared rises
    are often below bf16's resolution). Every call draws the same random numbers
    (dropout), and the buffers are put back. Data-parallel: each rank takes its slice
    of every batch and the sums are all-reduced, so all ranks get the same number."""
    total, n = 0.0, 0
    torch.manual_seed(derive_seed(seed, "select", "measure"))
    with _buffers_kept(net):
        for batch in batches:
            (x, y), _ = ddp.shard_batch(batch, device)
            with ddp.global_batch_norm() if sync_batch_norm else contextlib.nullcontext():
                out = net(x)
            total += float(loss_fn(out.float(), y)) * y.shape[0]
            n += y.shape[0]
    total, n = ddp.sum_over_ranks([total, n])
    return total / max(n, 1)


def _candidates(body, params, labels, excluded) -> list[tuple[int, int, list[int]]]:
    """(tensor, row, candidate columns) for every one-of-K decision."""
    excl = {id(p): set(idx) for p, idx in excluded}
    out = []
    for k, (p, (name, _, cols)) in enumerate(zip(params, labels, strict=True)):
        if name in body.multi_choice or p.shape[-1] < 2:
            continue
        cand = [c for c, col in enumerate(cols) if c not in excl.get(id(p), set())
                and (body.derives_zero_op or col != body.zero_op)]
        if len(cand) > 1:
            out += [(k, r, cand) for r in range(p.numel() // p.shape[-1])]
    return out


def select_by_perturbation(strategy: DifferentiableStrategy, run: Any, net: Network, loss_fn: nn.Module,
                           w_opt: torch.optim.Optimizer, excluded: list[tuple[nn.Parameter, list[int]]]) -> dict:
    """Choose one operation per row of every architecture tensor by perturbation (see
    the module docstring), write the choice into the logits and return a summary."""
    cfg = strategy.config
    device, seed = run.device, run.seed
    body = net.body
    params = body.arch_parameters()
    labels = body.arch_labels()
    batches = validation_batches(run.data.val, cfg.batch_size, cfg.selection_batches)
    lr = cfg.w_lr_min if cfg.selection_lr is None else cfg.selection_lr

    def measure() -> float:
        return val_loss(net, batches, loss_fn, device, seed, cfg.sync_batch_norm)

    editor = WeightEditor(strategy.weight_fn, params)
    body.weight_fn = editor
    net.train()
    decisions: list[dict] = []
    guard = strategy._divergence_guard()
    # The editor's state changes with every measurement: a compiled supernet would
    # recompile for each one, so selection runs eagerly.
    with torch.compiler.set_stance("force_eager"):
        try:
            strategy.phase = "eval"
            val_loss(net, batches[:1], loss_fn, device, seed, cfg.sync_batch_norm)  # which tensors reach weight_fn
            rows = [(k, r, cand) for k, r, cand in _candidates(body, params, labels, excluded) if k in editor.seen]
            order = torch.randperm(len(rows), generator=torch_generator(seed, "select", "order")).tolist()
            done = _resume(run, rows, order, params, net, w_opt, guard, editor, decisions, strategy._scalers[0])
            for step, j in enumerate(order):
                if step < done:  # decided (and tuned) before the run was stopped
                    continue
                k, r, candidates = rows[j]
                name, row_labels, cols = labels[k]
                strategy.phase = "eval"
                base = measure()
                rise = {}
                for c in candidates:
                    editor.off = (k, r, c)
                    rise[cols[c]] = measure() - base
                editor.off = None
                best = max(candidates, key=lambda c: rise[cols[c]])
                editor.fixed[(k, r)] = best
                by_weight = max(candidates, key=lambda c: float(params[k].detach().reshape(-1, len(cols))[r, c]))
                decisions.append({"tensor": name, "row": row_labels[r], "op": cols[best],
                                  "by_magnitude": cols[by_weight], "val_loss": round(base, 6),
                                  "loss_rise": {o: round(v, 6) for o, v in rise.items()}})
                log(f"[select] {step + 1}/{len(rows)} {name} {row_labels[r]}: {cols[best]} "
                    f"(loss +{rise[cols[best]]:.4f} without it; by magnitude: {cols[by_weight]})")
                for epoch in range(cfg.selection_tune_epochs):
                    _tune_epoch(strategy, run.task, net, run.data.train, loss_fn, w_opt, run.backend, device, lr,
                                seed, step, epoch)
                run.save_checkpoint(CHECKPOINT, {
                    "net": net.state_dict(), "w_opt": w_opt.state_dict(), "divergence": guard.state(),
                    "scaler": strategy._scalers[0].state_dict(),
                    "rows": [[k, r] for k, r, _ in rows], "order": order, "done": step + 1,
                    "arch": [p.detach().cpu().clone() for p in params],  # which search this selection continues
                    "fixed": [[k, r, c] for (k, r), c in editor.fixed.items()], "decisions": decisions})
            with torch.no_grad():
                for k, r, candidates in rows:
                    _promote(params[k].view(-1, params[k].shape[-1])[r], editor.fixed[(k, r)], candidates)
        finally:
            body.weight_fn = strategy.weight_fn
            strategy.phase = "eval"
    return {"method": "perturbation", "tune_epochs": cfg.selection_tune_epochs, "tune_lr": lr,
            "val_batches": len(batches), "decisions": decisions}


#: Checkpoint stage of the selection, saved after every decided (and tuned) edge.
CHECKPOINT = "select"


def _resume(run: Any, rows: list[tuple[int, int, list[int]]], order: list[int], params: list[nn.Parameter],
            net: nn.Module, w_opt: torch.optim.Optimizer, guard: Any, editor: WeightEditor,
            decisions: list[dict], scaler: torch.amp.GradScaler) -> int:
    """Restore a selection stopped part-way (the ``select`` checkpoint): the tuned
    weights, the optimiser, the decided edges and their records. Returns how many edges
    of the seeded order are done (0 without a checkpoint). The architecture weights do
    not move during selection, so a checkpoint whose weights differ from the searched
    ones continued another search (e.g. one re-run after its checkpoint was deleted)
    and is set aside: selection starts again from this search's end."""
    ckpt = run.load_checkpoint(CHECKPOINT)
    if ckpt is None:
        return 0
    saved = ckpt.get("arch", [])
    same = ([list(map(int, kr)) for kr in ckpt["rows"]] == [[k, r] for k, r, _ in rows]
            and list(map(int, ckpt.get("order", []))) == order and len(saved) == len(params)
            and all(a.shape == p.shape and torch.equal(a, p.detach().cpu()) for a, p in zip(saved, params, strict=True)))
    if not same:
        log(f"[select] checkpoints/{CHECKPOINT}.pt continued another search (other architecture weights): "
            "selecting again from this search's end")
        return 0
    net.load_state_dict(ckpt["net"])
    w_opt.load_state_dict(ckpt["w_opt"])
    guard.load_state(ckpt.get("divergence"))
    load_scaler_state(scaler, ckpt.get("scaler"))
    editor.fixed.update({(int(k), int(r)): int(c) for k, r, c in ckpt["fixed"]})
    decisions.extend(ckpt["decisions"])
    done = int(ckpt["done"])
    log(f"[select] resumed: {done}/{len(rows)} edges decided before the run was stopped")
    return done


def _promote(row: torch.Tensor, c: int, candidates: list[int]) -> None:
    """Make column ``c`` the largest of the row's candidates by swapping its logit with
    theirs (then a hair above it, so that no tie remains). The row's values stay the
    same set, and so do the candidates': a space that ranks edges by their strongest
    derivable weight (the DARTS space's two inputs per node) ranks them as the search
    left them."""
    top = max(candidates, key=lambda k: float(row[k]))
    if top != c:
        row[top], row[c] = row[c].clone(), row[top].clone()
    row[c] = torch.nextafter(row[c], torch.tensor(float("inf"), dtype=row.dtype, device=row.device))


def _tune_epoch(strategy, task, net, train, loss_fn, w_opt, backend, device, lr, seed, step, epoch) -> None:
    """One epoch of weight steps with the edits applied (the search loop's weight step)."""
    cfg = strategy.config
    set_lr(w_opt, strategy._divergence_guard().lr_scale * lr)
    torch.manual_seed(derive_seed(seed, "select", "torch", step, epoch))
    gen = torch_generator(seed, "select", "w", step, epoch)
    aug_gen = torch_generator(seed, "select", "augment", step, epoch)
    for xw, yw in strategy.weight_batches(task, train, gen, aug_gen, device):
        with ddp.global_batch_norm() if cfg.sync_batch_norm else contextlib.nullcontext():
            strategy.weight_step(net, (xw, yw), loss_fn, w_opt, backend)
