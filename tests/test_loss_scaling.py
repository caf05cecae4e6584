"""Float16 autocast with loss scaling (``backend.amp: fp16`` on pre-Ampere GPUs), run
here on the CPU: the CPU backend is given float16 autocast and an enabled GradScaler,
so the search and retraining loops take the same path they take on such a GPU."""

from __future__ import annotations

import json
import math
import os

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


# -- in fresh interpreters: two data-parallel processes, a killed and resumed run ------
# They select the CPU backend under float16 autocast from a test plugin installed on
# PYTHONPATH (tests/dnas_test_fp16_cpu.py), since a monkeypatch does not reach them.


@pytest.fixture
def fp16_plugin(tmp_path, monkeypatch):
    """The float16 CPU backend installed for subprocesses; its module for this one."""
    import dnas_test_fp16_cpu

    site = dnas_test_fp16_cpu.install(tmp_path / "fp16_site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    return dnas_test_fp16_cpu


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_two_float16_processes_skip_overflows_together(tmp_path, fp16_plugin) -> None:
    """Data parallelism under loss scaling: the first steps overflow, the ranks skip
    them together (a rank that stepped while the other skipped would hang at the next
    all-reduce or split the ranks apart) and end with identical architectures.

    The run is not the one-process run step for step, unlike in float32: each rank's
    loss is the mean over its half batch, so its float16 gradients are twice the
    one-process ones and overflow at half the scale (the scales end up to
    ``world_size`` times lower), and float16 rounding alone moves the architecture
    weights, whose Adam steps follow the sign of tiny gradients, by as much as a
    float32 run differs from a float16 one. What must hold is that the search trains:
    its losses follow the one-process run's."""
    from test_tune_ddp import MANIFEST, run_two_processes

    from dnas_core import get_plugin_manager
    from dnas_core.orchestrator import run_manifest
    from dnas_core.rundir import RunDir

    spec = {**MANIFEST, "backend": {"type": "cpu_fp16_test", "threads": 1, "channels_last": False},
            "train": {"epochs": 1}, "export": None}
    m, _ = run_two_processes(spec, tmp_path)
    one_dir, _ = run_manifest(m, out=tmp_path / "one", pm=get_plugin_manager(extra_plugins=[fp16_plugin]))
    two_dir = tmp_path / "two"

    assert RunDir(two_dir).status()["status"] == "completed"
    summary = RunDir(two_dir).read_json("search_summary.json")
    assert summary["data_parallel"] == {"world_size": 2, "max_arch_difference_between_ranks": 0.0}
    s1, s2 = ([s["scale"] for s in RunDir(d).load_checkpoint("search")["scalers"]] for d in (one_dir, two_dir))
    for one, two_ in zip(s1, s2, strict=True):
        assert 1.0 <= two_ < fp16_plugin.INIT_SCALE  # overflows happened, and were skipped
        assert one / 2 <= two_ <= one, (s1, s2)
    l1, l2 = ([r["train_loss"] for r in RunDir(d).metrics() if r["stage"] == "search"] for d in (one_dir, two_dir))
    assert len(l1) == len(l2) == 2 and all(math.isfinite(v) for v in l2)
    assert l2[-1] < l2[0] and abs(l1[-1] - l2[-1]) < 0.1, (l1, l2)


@pytest.mark.parametrize("kill_after", [2, 6], ids=["in-search", "in-retraining"])
def test_a_killed_float16_run_resumes_with_its_loss_scales(kill_after, tmp_path, fp16_plugin) -> None:
    """SIGKILL a float16 run once a checkpoint holds backed-off loss scales (after 2 of
    the 4 search epochs, or 2 of the 3 retraining epochs) and resume it: it must end
    exactly as the uninterrupted run did. Resuming with fresh scalers (2^19 again)
    would overflow, skip steps the uninterrupted run took, and log other scales."""
    import random

    from conftest import MINI_MANIFEST

    from dnas_core.testing.faults import (
        compare_runs,
        kill_and_resume,
        leftovers,
        run_cli,
    )

    overrides = ["backend.type=cpu_fp16_test", "strategy.epochs=4", "train.epochs=3", "export=null"]
    ref = tmp_path / "ref"
    res = run_cli(["run", str(MINI_MANIFEST), *overrides, "--out", str(ref)])
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["search"] * 4 + ["retrain"] * 3
    assert all(r["loss_scale"] < fp16_plugin.INIT_SCALE for r in records)
    # the loss of a skipped step counts too: the first search epoch, whose one step
    # overflowed, reports the loss it scored (about ln 10), not 0
    assert all(1.0 < r["train_loss"] < 3.0 for r in records), [r["train_loss"] for r in records]

    # the record of epoch k is written before its checkpoint: once kill_after records
    # are there, the checkpoint of epoch kill_after - 2 (at least) is on disk
    trial = kill_and_resume(MINI_MANIFEST, tmp_path / "killed", random.Random(0), epochs=7, overrides=overrides,
                            target=kill_after, max_delay=0.0)
    assert trial.killed, "the run finished before the kill"
    assert trial.resume_rc == 0, f"resume failed: {trial.resume_stderr}"
    assert compare_runs(ref, tmp_path / "killed") == []
    assert leftovers(tmp_path / "killed") == []
