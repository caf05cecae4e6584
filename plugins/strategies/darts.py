"""DARTS (Liu et al., 2019): softmax-relaxed mixing, alternating architecture (Adam,
validation batch) and weight (SGD, training batch) updates.

``order: first`` (default) treats the weights as constants in the architecture step.
``order: second`` differentiates through one virtual SGD step of the weights, as in
the paper (Sec. 2.3)::

    w' = w - xi * (grad_w L_train(w, a) + momentum buffer + weight decay)
    grad_a L_val(w', a) - xi * [grad_a L_train(w+, a) - grad_a L_train(w-, a)] / (2 eps)

with ``w+- = w +- eps * grad_w' L_val(w', a)`` and ``eps = 0.01 / ||grad_w' L_val||``
(the finite-difference Hessian-vector product). The weights are changed in place and
restored, so the extra memory is one copy of the weights.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from dnas_core import distributed as ddp
from dnas_core import hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy, _requires_grad


class DARTSConfig(DifferentiableConfig):
    order: Literal["first", "second"] = Field("first", description="first: weights held fixed in the architecture "
                                              "step; second: unrolled weight step with a finite-difference "
                                              "Hessian-vector product (about 3x the cost)")
    unrolled_lr: Optional[float] = Field(None, gt=0, description="xi of the virtual weight step (default: the "
                                         "current weight learning rate)")
    fd_epsilon: float = Field(0.01, gt=0, description="finite-difference step, divided by the gradient norm")


def _train_loss(net: nn.Module, batch: tuple, loss_fn: nn.Module, backend) -> torch.Tensor:
    x, y = batch
    with backend.autocast():
        out = net(x)
    # Half-precision outputs are lifted to fp32; fp64 stays fp64 (the finite difference
    # below subtracts two nearly equal gradients).
    return loss_fn(out.float() if out.dtype in (torch.float16, torch.bfloat16) else out, y)


def unrolled_arch_grads(
    strategy: DifferentiableStrategy,
    net: nn.Module,
    batch_a: tuple,
    batch_w: tuple,
    loss_fn: nn.Module,
    weights: list[nn.Parameter],
    arch: list[nn.Parameter],
    xi: float,
    momentum_buffers: list[torch.Tensor | None] | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    eps_scale: float = 0.01,
    backend: Any = None,
    shares: tuple[float, float] = (1.0, 1.0),
) -> tuple[float, list[torch.Tensor]]:
    """The second-order DARTS gradient of the validation loss with respect to ``arch``
    (see the module docstring). Returns the validation loss at the unrolled weights and
    the gradients; the weights are left as they were.

    Data-parallel (:mod:`dnas_core.distributed`): ``shares`` are this rank's shares of
    the global training and validation batches. The training gradient of the virtual
    step and the validation gradient ``d_w`` that sets the finite-difference direction
    are averaged over the ranks here, so every rank steps to the same ``w'`` and probes
    the same direction; the returned architecture gradient is this rank's part, which
    the architecture optimiser's pre-step hook sums with weight ``share_a``."""
    share_w, share_a = shares
    backend = backend or _NoBackend()
    saved = [p.detach().clone() for p in weights]
    try:
        # 1. Virtual step w' = w - xi * (g + momentum * v + wd * w).
        _requires_grad(arch, False)
        g = torch.autograd.grad(_train_loss(net, batch_w, loss_fn, backend), weights, allow_unused=True)
        g = ddp.average(_or_zeros(g, weights), share_w)
        _requires_grad(arch, True)
        with torch.no_grad():
            for i, p in enumerate(weights):
                d = g[i].clone()
                if weight_decay:
                    d.add_(p, alpha=weight_decay)
                if momentum and momentum_buffers is not None and momentum_buffers[i] is not None:
                    d.add_(momentum_buffers[i], alpha=momentum)
                p.sub_(d, alpha=xi)
        # 2. Validation loss at w' (with the strategy's regulariser): grads wrt a and w'.
        loss = strategy.arch_loss(net, *batch_a, loss_fn, backend)
        grads = torch.autograd.grad(loss, [*arch, *weights], allow_unused=True)
        d_arch = _or_zeros(grads[: len(arch)], arch)
        d_w = ddp.average(_or_zeros(grads[len(arch):], weights), share_a)
        # 3. Finite-difference Hessian-vector product around the original weights, in
        # full fp32: the probe moves each weight by ~eps / sqrt(#weights), far below the
        # rounding step of bf16 or TF32, which would leave only rounding noise to divide
        # by 2 * eps. So no autocast and no TF32 in these two passes.
        eps = eps_scale / (torch.sqrt(sum((d * d).sum() for d in d_w)) + 1e-12)
        _requires_grad(weights, False)
        hv: list[torch.Tensor] = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, w0, d in zip(weights, saved, d_w, strict=True):
                    p.copy_(w0).add_(d, alpha=float(sign * eps))
            with _no_tf32():
                ga = torch.autograd.grad(_train_loss(net, batch_w, loss_fn, _NoBackend()), arch, allow_unused=True)
            ga = _or_zeros(ga, arch)
            hv = ga if not hv else [h - x for h, x in zip(hv, ga, strict=True)]
        # hv is this rank's training-batch term: weighted by share_w in the global sum,
        # which the pre-step hook forms with share_a
        result = [da - xi * (share_w / share_a) * h / (2 * eps) for da, h in zip(d_arch, hv, strict=True)]
        return float(loss.detach()), result
    finally:
        _requires_grad(weights, True)
        with torch.no_grad():
            for p, w0 in zip(weights, saved, strict=True):
                p.copy_(w0)


def _or_zeros(grads: Any, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``autograd.grad(..., allow_unused=True)``'s result with zeros for the ``None`` of
    parameters the loss does not reach."""
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


@contextlib.contextmanager
def _no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


class _NoBackend:
    def autocast(self):
        return contextlib.nullcontext()


class DARTS(DifferentiableStrategy):
    """Differentiable architecture search, first or second order."""

    name = "darts"
    description = "DARTS (first or second order): softmax relaxation, alternating updates"
    Config = DARTSConfig

    def loss_scaling_refusal(self) -> str | None:
        if self.config.order == "second":
            return ("strategy.order: second takes a finite-difference Hessian-vector product of unscaled "
                    "gradients, which float16 would round away (use order: first)")
        return None

    def arch_step(self, net, batch_a, batch_w, loss_fn, a_opt, w_opt, backend) -> float:
        cfg = self.config
        if cfg.order == "first":
            return super().arch_step(net, batch_a, batch_w, loss_fn, a_opt, w_opt, backend)
        self.phase = "arch"
        arch = net.body.arch_parameters()
        group = w_opt.param_groups[0]
        xi = cfg.unrolled_lr or group["lr"]
        buffers = [w_opt.state.get(p, {}).get("momentum_buffer") for p in self._weights]
        loss, grads = unrolled_arch_grads(
            self, net, batch_a, batch_w, loss_fn, self._weights, arch, xi, buffers,
            momentum=group.get("momentum", 0.0), weight_decay=group.get("weight_decay", 0.0),
            eps_scale=cfg.fd_epsilon, backend=backend, shares=(self._share_w, self._share_a),
        )
        a_opt.zero_grad(set_to_none=True)
        for a, g in zip(arch, grads, strict=True):
            a.grad = g.detach()
        a_opt.step()
        return loss


@hookimpl
def dnas_register_strategies():
    return [DARTS]
