"""The weight-sharing evaluator: scores genotypes with one supernet trained on the task.

Set-up trains the space's supernet by single-path sampling (each step a random
genotype of the space, run through the supernet's one-hot :class:`MixWeights` path,
as in SPOS); a query then runs the supernet along the genotype's path, after
re-estimating the batch-norm statistics of that path on a few training batches,
and returns the task's primary metric on the validation split. The space must
implement :meth:`SearchSpace.arch_indices`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, Evaluator, Genotype, MixWeights, RunFailed
from dnas_core.seeding import derive_seed, torch_generator
from dnas_core.training import iterate_batches, lr_at, set_lr, start_epoch


class WeightSharingConfig(ComponentConfig):
    epochs: int = Field(5, ge=0, description="epochs of single-path supernet training at set-up")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(0.05, gt=0, description="SGD learning rate (cosine-annealed)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    bn_batches: int = Field(3, ge=0, description="training batches that re-estimate batch-norm statistics per query")


def use_path(net: nn.Module, indices: list[torch.Tensor]) -> None:
    """Make the supernet compute exactly one operation per row: ``indices[k]`` for its
    ``k``-th architecture tensor (weights one-hot, straight-through path)."""
    body = net.body
    params = body.arch_parameters()
    if len(indices) != len(params):
        raise ValueError(f"{len(indices)} index tensors for {len(params)} architecture tensors")
    fixed = {}
    for p, idx in zip(params, indices, strict=True):
        idx = idx.to(p.device)
        w = torch.nn.functional.one_hot(idx, p.shape[-1]).to(p.dtype)
        fixed[id(p)] = MixWeights(w, idx)
    body.weight_fn = lambda alpha: fixed[id(alpha)]


class WeightSharingEvaluator(Evaluator):
    """Scores genotypes along their path through a supernet trained by path sampling."""

    name = "weight_sharing"
    description = "weight sharing: single-path supernet training, then one-hot path evaluation"
    Config = WeightSharingConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.net = None
        self.run = None

    @property
    def metric(self) -> str:
        return f"weight_sharing_val_{self.run.task.primary_metric}" if self.run else "weight_sharing_val"

    def prepare(self, run: Any) -> None:
        cfg = self.config
        self.run = run
        task, space, device, seed = run.task, run.space, run.device, run.seed
        self.direction = task.metric_direction
        data = run.data
        torch.manual_seed(derive_seed(seed, "weight_sharing", "init"))
        net = space.build_supernet(task).to(device)
        space.arch_indices(space.sample(np.random.default_rng(0)))  # fails early for spaces without paths
        loaded = run.load_checkpoint("weight_sharing") if hasattr(run, "load_checkpoint") else None
        if loaded is not None:
            net.load_state_dict(loaded["net"])
        else:
            self._train(net, run, data)
            if hasattr(run, "save_checkpoint"):
                run.save_checkpoint("weight_sharing", {"net": net.state_dict()})
        self.net = net

    def _train(self, net: nn.Module, run: Any, data: Any) -> None:
        cfg = self.config
        task, space, device, seed = run.task, run.space, run.device, run.seed
        arch = {id(p) for p in net.body.arch_parameters()}
        weights = [p for p in net.parameters() if id(p) not in arch]
        opt = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        loss_fn = task.loss_fn().to(device)
        rng = np.random.default_rng(derive_seed(seed, "weight_sharing", "paths"))
        net.train()
        for epoch in range(cfg.epochs):
            set_lr(opt, lr_at(epoch, cfg.epochs, cfg.lr))
            start_epoch(data.train, epoch)
            gen = torch_generator(seed, "weight_sharing", "batches", epoch)
            for x, y in iterate_batches(data.train, cfg.batch_size, shuffle=True, generator=gen,
                                        drop_last=len(data.train) > cfg.batch_size, device=device):
                use_path(net, space.arch_indices(space.sample(rng)))
                loss = loss_fn(net(x).float(), y)
                if not torch.isfinite(loss):
                    raise RunFailed(f"weight_sharing: supernet loss became {float(loss)}; lower evaluator lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
                opt.step()

    @torch.no_grad()
    def _recalibrate(self, net: nn.Module) -> None:
        # nn.BatchNorm and the spaces' fused batch norms that follow its protocol
        # (reset_running_stats, momentum None for a cumulative average)
        bns = [m for m in net.modules() if hasattr(m, "reset_running_stats") and hasattr(m, "momentum")
               and getattr(m, "track_running_stats", False)]
        if not self.config.bn_batches or not bns:
            return
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the recalibration batches
        net.train()
        batches = iterate_batches(self.run.data.train, self.config.batch_size, device=self.run.device)
        for _, (x, _) in zip(range(self.config.bn_batches), batches):
            net(x)
        for m in bns:
            m.momentum = 0.1

    def score(self, genotype: Genotype) -> float:
        if self.net is None:
            raise RuntimeError("weight_sharing: setup(run) must run before evaluate()")
        run = self.run
        use_path(self.net, run.space.arch_indices(genotype))
        self._recalibrate(self.net)
        metrics = run.task.evaluate(self.net, run.data.val, run.device)
        return float(metrics[run.task.primary_metric])
