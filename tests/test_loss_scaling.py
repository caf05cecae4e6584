"""Float16 autocast with loss scaling (``backend.amp: fp16`` on pre-Ampere GPUs), run
here on the CPU: the CPU backend is given float16 autocast and an enabled GradScaler,
so the search and retraining loops take the same path they take on such a GPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from dnas_core import IncompatibleError, RunFailed
from dnas_core.testing import tiny_manifest
from dnas_core.training import DivergenceGuard, backward_step

INIT_SCALE = 2.0**19  # large enough that the first float16 backward passes of the tiny run overflow


@pytest.fixture
def fp16_cpu(monkeypatch):
    from dnas_plugins.backends.torch_devices import CPUBackend

    monkeypatch.setattr(CPUBackend, "autocast", lambda self: torch.autocast("cpu", dtype=torch.float16))
    monkeypatch.setattr(CPUBackend, "grad_scaler", lambda self: torch.amp.GradScaler("cpu", init_scale=INIT_SCALE))


def _step(scale: float, policy: str = "fail") -> tuple[bool, torch.amp.GradScaler, torch.Tensor]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    loss = (p * torch.tensor([1.0, float("inf"), 1.0])).sum()  # an infinite gradient
    took = backward_step(loss, opt, [p], 5.0, scaler, DivergenceGuard("test", policy), 0, [opt])
    return took, scaler, p.detach()


def test_an_overflow_of_the_scale_skips_the_step_and_lowers_the_scale_without_a_divergence() -> None:
    took, scaler, p = _step(8.0)  # the "fail" policy would raise if this counted as a divergence
    assert not took and scaler.get_scale() == 4.0
    assert torch.equal(p, torch.ones(3))


def test_a_gradient_that_overflows_unscaled_is_a_divergence() -> None:
    with pytest.raises(RunFailed, match="gradient norm"):
        _step(0.5)
    took, _, p = _step(0.5, policy="skip_step")
    assert not took and torch.equal(p, torch.ones(3))


def test_finite_gradients_whose_norm_overflows_are_a_divergence_not_a_scale_overflow() -> None:
    """Every gradient is finite (so the scaler finds no overflow), but their norm is not:
    the divergence guard decides, and no step is taken."""
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    loss = (p * 3e38).sum()
    with pytest.raises(RunFailed, match="gradient norm"):
        backward_step(loss, opt, [p], math.inf, scaler, DivergenceGuard("test"), 0, [opt])
    assert torch.equal(p.detach(), torch.ones(4)) and scaler.get_scale() == 1.0


def test_a_disabled_scaler_leaves_the_step_as_it_was() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert backward_step((p * p).sum(), opt, [p], math.inf, scaler, DivergenceGuard("test"), 0, [opt])
    assert torch.allclose(p.detach(), torch.zeros(2))  # 1 - 0.5 * 2


def _run_tiny(tmp_path, name: str) -> tuple:
    from dnas_core.orchestrator import run_manifest

    m = tiny_manifest(strategy={"type": "darts", "epochs": 2, "batch_size": 32},
                      task={"type": "digits", "limit_train": 200, "limit_test": 60},
                      train={"epochs": 3, "batch_size": 32})
    m["export"] = None
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, _ = run_manifest(path, out=tmp_path / name)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, {stage: [r["train_loss"] for r in metrics if r.get("stage") == stage]
                     for stage in ("search", "retrain")}


def test_search_and_retraining_train_under_float16_loss_scaling(tmp_path, monkeypatch) -> None:
    from dnas_plugins.backends.torch_devices import CPUBackend

    _, fp32 = _run_tiny(tmp_path, "fp32")
    monkeypatch.setattr(CPUBackend, "autocast", lambda self: torch.autocast("cpu", dtype=torch.float16))
    monkeypatch.setattr(CPUBackend, "grad_scaler", lambda self: torch.amp.GradScaler("cpu", init_scale=INIT_SCALE))
    run_dir, fp16 = _run_tiny(tmp_path, "fp16")
    # the first steps overflowed and every loop's scale backed off; the default
    # divergence policy (fail) would have raised had an overflow counted as a divergence
    search = torch.load(run_dir / "checkpoints" / "search.pt", weights_only=True)
    retrain = torch.load(run_dir / "checkpoints" / "retrain.pt", weights_only=True)
    for state in (*search["scalers"], retrain["scaler"]):
        assert 1.0 <= state["scale"] < INIT_SCALE
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss_scale"] == retrain["scaler"]["scale"]  # logged per epoch
    # and the losses follow the float32 run's
    assert fp16["retrain"][-1] < fp16["retrain"][0]
    for stage in ("search", "retrain"):
        assert abs(fp16[stage][-1] - fp32[stage][-1]) < 0.2, (stage, fp16, fp32)


def test_second_order_darts_refuses_float16_loss_scaling(tmp_path, fp16_cpu) -> None:
    from dnas_core.orchestrator import run_manifest

    m = tiny_manifest(strategy={"type": "darts", "order": "second", "epochs": 1, "batch_size": 32})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    with pytest.raises(IncompatibleError, match="backend.amp: fp16.*order: second"):
        run_manifest(path, out=tmp_path / "run")
