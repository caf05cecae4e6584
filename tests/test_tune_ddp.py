"""Data-parallel supernet training: 2 processes with gloo give the same architecture
as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dnas_core.orchestrator import run_manifest
from dnas_core.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]

MANIFEST = {
    "name": "ddp",
    "seed": 0,
    "task": {"type": "digits", "val_fraction": 0.5, "limit_train": 256, "limit_test": 50},
    # A large architecture learning rate so that the architecture moves far from its
    # initial value in a few steps: a missing gradient average would show.
    "space": {"type": "nb201", "C": 4, "N": 1, "retrain_C": 4, "retrain_N": 1},
    "strategy": {"type": "darts", "epochs": 2, "batch_size": 32, "arch_lr": 0.05},
    "train": {"epochs": 0},
    "backend": {"type": "cpu", "threads": 1},
    "export": {"type": "onnx"},
}


def alpha(run_dir: Path) -> dict[str, torch.Tensor]:
    net = RunDir(run_dir).load_checkpoint("search")["net"]
    return {k: v for k, v in net.items() if k.endswith("alpha")}


def launch(manifest: Path, out: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``dnas run MANIFEST --out OUT --nproc 2`` (gloo). On a timeout (a hang) the
    launcher gets SIGTERM, which it passes on to torchrun and the workers (torchrun runs
    in a session of its own: killing the launcher alone would leave them running). No
    core files: a test may abort a worker on purpose."""
    import resource
    import signal

    env = {**os.environ, "DNAS_PROGRESS": "0", "DNAS_DIST_BACKEND": "gloo"}
    core = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, core[1]))  # inherited by the launcher, torchrun and the workers
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dnas_core", "run", str(manifest), "--out", str(out),
                                 "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=ROOT)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, core)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        pytest.fail(f"dnas run --nproc 2 did not finish in {timeout} s (a hang?): {stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_two_processes(spec: dict, tmp_path: Path) -> tuple[Path, dict]:
    """``dnas run --nproc 2`` (gloo) of ``spec`` into ``tmp_path/two``: the manifest path
    and the result line that rank 0 alone prints."""
    m = tmp_path / "ddp.yaml"
    m.write_text(yaml.safe_dump(spec))
    proc = launch(m, tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return m, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_two_gloo_processes_match_one_process(tmp_path, pm):
    m, two = run_two_processes(MANIFEST, tmp_path)
    one_dir, one = run_manifest(m, out=tmp_path / "one", pm=pm)

    # Only rank 0 wrote: one run directory, one record per epoch.
    assert [r["epoch"] for r in RunDir(tmp_path / "two").metrics() if r["stage"] == "search"] == [0, 1]
    summary = RunDir(tmp_path / "two").read_json("search_summary.json")
    assert summary["data_parallel"] == {"world_size": 2, "max_arch_difference_between_ranks": 0.0}

    a1, a2 = alpha(one_dir), alpha(tmp_path / "two")
    assert a1.keys() == a2.keys() and a1
    for k in a1:
        assert a1[k].abs().max().item() > 0.05  # it moved far from its 1e-3 initialisation
        assert torch.allclose(a1[k], a2[k], atol=1e-5, rtol=0), (a1[k] - a2[k]).abs().max()
    assert two["genotype"] == one["genotype"]["text"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_per_rank_batch_norm_keeps_ranks_identical_but_is_not_the_one_process_run(tmp_path, pm):
    """``sync_batch_norm: false``: each rank normalises with its own half batch (plain
    DDP). Gradients are still averaged, so the ranks agree exactly; the result is no
    longer the one-process computation."""
    spec = {**MANIFEST, "strategy": {**MANIFEST["strategy"], "sync_batch_norm": False}}
    m, _ = run_two_processes(spec, tmp_path)
    summary = RunDir(tmp_path / "two").read_json("search_summary.json")
    assert summary["data_parallel"] == {"world_size": 2, "max_arch_difference_between_ranks": 0.0}
    one_dir, _ = run_manifest(m, out=tmp_path / "one", pm=pm)  # one process: batch norm over all 32
    a1, a2 = alpha(one_dir), alpha(tmp_path / "two")
    assert max((a1[k] - a2[k]).abs().max().item() for k in a1) > 1e-4


def net_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in RunDir(run_dir).load_checkpoint("search")["net"].items() if v.is_floating_point()}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
@pytest.mark.parametrize("strategy", [
    # GDAS trains only the sampled operations: the others have no gradient, and the
    # optimiser must skip them on every rank as one process does (no weight decay or
    # momentum applied to a zero gradient); its search batches are augmented, and the
    # processes must see the images one process sees
    {"type": "gdas", "epochs": 2, "batch_size": 32, "arch_lr": 0.05, "augment": "both"},
    # second order: the virtual step and the finite-difference direction use the
    # gradients of the global batch
    {"type": "darts", "order": "second", "epochs": 2, "batch_size": 32, "arch_lr": 0.05},
], ids=["gdas", "darts-second-order"])
def test_two_processes_match_one_process_for_sampling_and_second_order(strategy, tmp_path, pm):
    # NCHW on both sides: second-order DARTS amplifies the rounding differences
    # between memory formats, which is not what this test is about
    task = {**MANIFEST["task"], **({"augment": {"crop_padding": 1, "flip": True}} if strategy.get("augment") else {})}
    spec = {**MANIFEST, "task": task, "strategy": strategy, "backend": {"type": "cpu", "threads": 1, "channels_last": False},
            "train": {"epochs": 1}}
    m, two = run_two_processes(spec, tmp_path)
    one_dir, one = run_manifest(m, out=tmp_path / "one", pm=pm)
    w1, w2 = net_tensors(one_dir), net_tensors(tmp_path / "two")
    assert w1.keys() == w2.keys()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-4, worst
    assert two["genotype"] == one["genotype"]["text"]
    # rank 0 retrained, evaluated and reported after the ranks left the group
    assert RunDir(tmp_path / "two").status()["status"] == "completed"
    assert [r["epoch"] for r in RunDir(tmp_path / "two").metrics() if r["stage"] == "retrain"] == [0]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_terminating_the_launcher_stops_its_workers(tmp_path):
    """SIGTERM to ``dnas run --nproc 2`` reaches torchrun and its workers: nothing goes on
    writing the run directory after the launcher has gone."""
    import signal
    import time

    spec = {**MANIFEST, "strategy": {**MANIFEST["strategy"], "epochs": 200}}
    m = tmp_path / "long.yaml"
    m.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    env = {**os.environ, "DNAS_PROGRESS": "0", "DNAS_DIST_BACKEND": "gloo"}
    proc = subprocess.Popen([sys.executable, "-m", "dnas_core", "run", str(m), "--out", str(out), "--nproc", "2"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not [r for r in RunDir(out).metrics() if r["stage"] == "search"] if (out / "metrics.jsonl").exists() \
                else True:
            assert proc.poll() is None and time.time() < deadline, "the run never logged an epoch"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion: stop the workers too (SIGTERM is passed on)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    n = len(RunDir(out).metrics())
    time.sleep(5)  # orphaned workers would go on logging epochs
    assert len(RunDir(out).metrics()) == n
    # the workers took the SIGTERM as a stop: resumable, said so, exit status 130 as Ctrl-C
    assert RunDir(out).status()["status"] == "interrupted", RunDir(out).status()
    err = proc.stderr.read().decode()
    assert proc.returncode == 130, err[-2000:]
    assert f"dnas run --resume {out}" in err


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_launcher_exit_status_is_rank_zeros(tmp_path):
    """A usage error is exit status 2 with --nproc too (torchrun itself reports 1)."""
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(MANIFEST))
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    env = {**os.environ, "DNAS_PROGRESS": "0", "DNAS_DIST_BACKEND": "gloo"}
    proc = subprocess.run([sys.executable, "-m", "dnas_core", "run", str(m), "--out", str(out), "--nproc", "2"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not empty" in proc.stderr
    assert (out / "keep.txt").read_text() == "a user's file"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_latency_constrained_run_with_two_processes(tmp_path, monkeypatch):
    """Rank 0 measures the latency table during the search and hands it to the other
    rank; its constraint check after the search (a table lookup on rank 0 alone) must
    not wait for a rank that has gone."""
    monkeypatch.setenv("DNAS_LATENCY_CACHE", str(tmp_path / "latency"))
    lat_backend = {"type": "cpu", "threads": 1, "clock": "thread_cpu"}
    spec = {**MANIFEST,
            "space": {"type": "mobile", "stem_channels": 8, "last_channels": 16, "kernels": [3, 5], "expansions": [1, 3],
                      "stages": [{"channels": 8, "layers": 2, "stride": 1}, {"channels": 12, "layers": 2, "stride": 2}]},
            "strategy": {"type": "fbnet", "epochs": 1, "batch_size": 32},
            "constraints": {"max_latency_ms": 100.0, "latency_backend": lat_backend, "latency_repeats": 5,
                            "latency_fit_networks": 4}}
    run_two_processes(spec, tmp_path)
    summary = RunDir(tmp_path / "two").read_json("search_summary.json")
    assert summary["data_parallel"]["max_arch_difference_between_ranks"] == 0.0
    assert summary["constraints"]["met"] and summary["latency_constraint"]["meets_limit"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_two_processes_select_as_one_process(tmp_path, pm):
    """Perturbation selection with 2 processes: every validation batch is split over the
    ranks and the loss sums all-reduced, so the decisions, and the losses behind them,
    are the one-process run's."""
    spec = {**MANIFEST, "strategy": {**MANIFEST["strategy"], "selection": "perturbation"},
            "backend": {"type": "cpu", "threads": 1, "channels_last": False}, "export": None}
    m, two = run_two_processes(spec, tmp_path)
    one_dir, one = run_manifest(m, out=tmp_path / "one", pm=pm)
    d1, d2 = (RunDir(d).read_json("search_summary.json")["selection"]["decisions"] for d in (one_dir, tmp_path / "two"))
    assert [(d["row"], d["op"]) for d in d1] == [(d["row"], d["op"]) for d in d2] and len(d1) == 6
    for a, b in zip(d1, d2, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
        assert a["loss_rise"] == pytest.approx(b["loss_rise"], abs=1e-4)
    assert two["genotype"] == one["genotype"]["text"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_ranks_sample_the_same_path_when_their_generators_drift(tmp_path):
    """GDAS on a space with dropout and a batch that does not divide over the ranks
    (33: 17 + 16 examples): each rank's dropout draws another amount of random numbers,
    so the ranks' generators drift apart. The sampled paths must not: ranks on
    different paths issue different collectives (gloo aborted with a size mismatch)."""
    spec = {"name": "drift", "seed": 0, "task": {"type": "breast_cancer"},
            "space": {"type": "tabular_mlp", "widths": [8, 16], "max_depth": 2, "stem_width": 8, "dropout": 0.5},
            "strategy": {"type": "gdas", "epochs": 2, "batch_size": 33},
            "train": {"epochs": 0}, "backend": {"type": "cpu", "threads": 1}, "export": None}
    run_two_processes(spec, tmp_path)
    summary = RunDir(tmp_path / "two").read_json("search_summary.json")
    assert summary["data_parallel"] == {"world_size": 2, "max_arch_difference_between_ranks": 0.0}
    assert RunDir(tmp_path / "two").status()["status"] == "completed"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
@pytest.mark.parametrize(("fail_rank", "mode", "expected"), [
    # rank 0 only sees a broken connection (or torchrun's SIGTERM): it records rank 1's error
    (1, "raise", "rank 1: RunFailed: injected failure on rank 1"),
    # rank 0 dies without recording anything: the launcher marks the run failed
    (0, "abort", "the data-parallel processes exited with status"),
], ids=["rank1-raises", "rank0-aborts"])
def test_a_failing_rank_leaves_its_own_error_in_the_run_directory(fail_rank, mode, expected, tmp_path, monkeypatch):
    import dnas_test_rank_fault

    site = dnas_test_rank_fault.install(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    m = tmp_path / "ddp.yaml"
    strategy = {**MANIFEST["strategy"], "type": "darts_rank_fault", "epochs": 3, "fail_rank": fail_rank, "mode": mode}
    m.write_text(yaml.safe_dump({**MANIFEST, "strategy": strategy}))
    proc = launch(m, tmp_path / "two")
    assert proc.returncode != 0
    status = RunDir(tmp_path / "two").status()
    assert status["status"] == "failed", status
    assert expected in status["error"], status["error"]
