"""The short-training evaluator: a query trains the genotype's network from scratch
for a small budget of epochs (``dnas_core.training`` batching and schedules) and
returns the task's primary metric on the validation split. The most faithful and the
most expensive evaluator; every query is seeded by the run seed and the genotype
hash, so it is reproducible."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, Evaluator, Genotype, RunFailed
from dnas_core.seeding import derive_seed, torch_generator
from dnas_core.training import iterate_batches, lr_at, make_optimizer, set_lr, start_epoch


class ShortTrainingConfig(ComponentConfig):
    epochs: int = Field(3, ge=1, description="training epochs per query")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float = Field(5.0, gt=0)


class ShortTrainingEvaluator(Evaluator):
    """Train from scratch for ``epochs``, score on the validation split."""

    name = "short_training"
    description = "train each queried genotype from scratch for a few epochs"
    Config = ShortTrainingConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.run = None

    @property
    def metric(self) -> str:
        return f"short_training_val_{self.run.task.primary_metric}" if self.run else "short_training_val"

    def prepare(self, run: Any) -> None:
        self.run = run
        self.direction = run.task.metric_direction
        if len(run.data.val) == 0:
            raise RunFailed("short_training: the task's validation split is empty; it scores on validation")

    def score(self, genotype: Genotype) -> float:
        if self.run is None:
            raise RuntimeError("short_training: setup(run) must run before evaluate()")
        cfg, run = self.config, self.run
        task, device, data = run.task, run.device, run.data
        key = genotype.hash()
        torch.manual_seed(derive_seed(run.seed, "short_training", key))
        net = run.space.build_network(genotype, task).to(device)
        opt = make_optimizer([p for p in net.parameters() if p.requires_grad], cfg)
        loss_fn = task.loss_fn().to(device)
        net.train()
        for epoch in range(cfg.epochs):
            set_lr(opt, lr_at(epoch, cfg.epochs, cfg.lr))
            start_epoch(data.train, epoch)
            gen = torch_generator(run.seed, "short_training", key, epoch)
            for x, y in iterate_batches(data.train, cfg.batch_size, shuffle=True, generator=gen,
                                        drop_last=len(data.train) > cfg.batch_size, device=device):
                x = task.augment(x, gen)
                loss = loss_fn(net(x).float(), y)
                if not torch.isfinite(loss):
                    raise RunFailed(f"short_training: loss became {float(loss)} for {genotype}; lower evaluator lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
        return float(task.evaluate(net, data.val, device)[task.primary_metric])
