"""Divergence guard, a full disk, an unwritable run directory and broken plugins."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from dnas_core import PluginError, RunFailed, get_plugin_manager, hookimpl
from dnas_core.cli import main
from dnas_core.orchestrator import Orchestrator
from dnas_core.plugin_manager import DISABLE_ENV
from dnas_core.testing.faults import leftovers, run_cli
from dnas_core.training import DivergenceGuard, fit

from conftest import MINI_MANIFEST

# -- divergence ------------------------------------------------------------------------


def _orch(tmp_path: Path, *overrides: str) -> Orchestrator:
    """A run directory with a fixed genotype, ready for the retrain loop."""
    import numpy as np

    orch = Orchestrator.new(MINI_MANIFEST, list(overrides), tmp_path / "run")
    orch.ctx.backend.setup()
    genotype = orch.ctx.space.sample(np.random.default_rng(0))
    orch.run_dir.write_json("genotype.json", genotype.to_json())
    return orch


def test_guard_policies_unit():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=1.0)
    with pytest.raises(RunFailed, match="train.divergence"):
        DivergenceGuard("retrain", "fail").loss_ok(torch.tensor(float("nan")), 0, [opt])
    g = DivergenceGuard("retrain", "reduce_lr", lr_factor=0.5, max_skips=2)
    assert g.loss_ok(torch.tensor(1.0), 0, [opt]) and g.grads_ok(torch.tensor(3.0), 0, [opt])
    assert not g.grads_ok(torch.tensor(float("inf")), 0, [opt])
    assert not g.loss_ok(torch.tensor(float("inf")), 0, [opt])
    assert opt.param_groups[0]["lr"] == 0.25 and g.lr_scale == 0.25 and g.skipped == 2
    with pytest.raises(RunFailed, match="3 consecutive steps"):
        g.loss_ok(torch.tensor(float("nan")), 1, [opt])
    bad = torch.nn.Linear(2, 2)
    bad.weight.data[0, 0] = float("nan")
    with pytest.raises(RunFailed, match="not saved"):
        g.check_params(bad, 0)


def test_divergent_retrain_fails_cleanly_without_a_checkpoint(tmp_path):
    orch = _orch(tmp_path, "train.lr=1e30", "train.grad_clip=null")
    orch.derive()
    with pytest.raises(RunFailed, match=r"retrain: the (loss|gradient norm) became (nan|inf)"):
        fit(orch.ctx, orch.ctx.state["network"], stage="retrain")
    assert not (orch.run_dir.path / "checkpoints" / "retrain.pt").exists()


def test_reduce_lr_recovers_and_logs_skips(tmp_path):
    orch = _orch(tmp_path, "train.lr=1e30", "train.grad_clip=null", "train.divergence=reduce_lr",
                 "train.divergence_lr_factor=0.001", "train.divergence_max_skips=40")
    orch.derive()
    net = orch.ctx.state["network"]
    last = fit(orch.ctx, net, stage="retrain")
    assert last["skipped_steps"] > 0 and last["lr_scale"] < 1e-6
    assert all(torch.isfinite(p).all() for p in net.parameters())
    ckpt = torch.load(orch.run_dir.path / "checkpoints" / "retrain.pt", weights_only=True)
    assert ckpt["divergence"]["skipped"] == last["skipped_steps"]


def test_divergent_search_ends_the_run_with_a_clear_status(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(MINI_MANIFEST), "strategy.w_lr=1e30", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "search:" in err and "train.divergence" in err
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and "became" in status["error"]
    assert not (out / "result.json").exists()
    ckpt = out / "checkpoints" / "search.pt"
    if ckpt.exists():  # an earlier epoch's checkpoint may exist; it must hold finite weights only
        state = torch.load(ckpt, weights_only=True)["net"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


# -- disk full / unwritable ----------------------------------------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_mid_run_is_a_clear_error_and_leaves_nothing_as_complete(tmp_path):
    out = tmp_path / "run"
    # 40 kB: the manifest and first records fit, the first checkpoint does not
    res = run_cli(["run", str(MINI_MANIFEST), "--out", str(out)], preexec_fn=_limit_file_size(40_000))
    assert res.returncode == 1, res.stderr
    assert "cannot write" in res.stderr and "File too large" in res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads((out / "status.json").read_text())["status"] == "failed"
    assert not (out / "result.json").exists()
    assert leftovers(out) == []
    for ckpt in (out / "checkpoints").glob("*.pt") if (out / "checkpoints").exists() else []:
        torch.load(ckpt, weights_only=True)  # whatever is there is whole


def _read_only_dir(tmp_path: Path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro
    # root ignores permissions: a read-only tmpfs is the honest test
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs")
    return ro


def test_unwritable_run_directory_fails_before_any_work(tmp_path, capsys):
    ro = _read_only_dir(tmp_path)
    try:
        assert main(["run", str(MINI_MANIFEST), "--out", str(ro / "run")]) == 2
        err = capsys.readouterr().err
        assert "cannot create the run directory" in err and str(ro / "run") in err
        assert list(ro.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], capture_output=True)
        else:
            ro.chmod(0o755)


# -- plugin faults ---------------------------------------------------------------------


class Broken:
    """An observer plugin whose hook raises."""

    @hookimpl
    def dnas_epoch_end(self, run, stage, epoch, metrics):
        raise ValueError("broken logger")


class Healthy:
    def __init__(self):
        self.calls = 0

    @hookimpl
    def dnas_epoch_end(self, run, stage, epoch, metrics):
        self.calls += 1


def test_raising_observer_is_named_and_others_keep_working():
    healthy = Healthy()
    pm = get_plugin_manager(extra_plugins=[Broken(), healthy])
    errors = pm.notify("dnas_epoch_end", run=None, stage="search", epoch=0, metrics={})
    assert healthy.calls == 1
    assert len(errors) == 1 and "Broken" in str(errors[0]) and "broken logger" in str(errors[0])


def test_raising_registration_hook_names_distribution_and_can_be_disabled(monkeypatch):
    import dnas_plugins.callbacks.csv_logger as csv_logger

    def boom():
        raise RuntimeError("registration exploded")

    monkeypatch.setattr(csv_logger, "dnas_register_callbacks", hookimpl(boom))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    with pytest.raises(PluginError) as err:
        get_plugin_manager()
    msg = str(err.value)
    assert "'csv-logger'" in msg and "distribution dnas" in msg and f"{DISABLE_ENV}=csv-logger" in msg
    monkeypatch.setenv(DISABLE_ENV, "csv-logger")
    pm = get_plugin_manager()
    assert "csv" not in pm.registries.callbacks and "darts" in pm.registries.strategies
