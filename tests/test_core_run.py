"""End-to-end runs through the orchestrator on a slice of digits."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
import yaml

from dnas_core import Genotype, get_plugin_manager, hookimpl
from dnas_core.orchestrator import reexport, resume_run, run_manifest
from dnas_core.testing import tiny_manifest

pytestmark = pytest.mark.slow


def _manifest(tmp_path: Path, **sections) -> Path:
    m = tiny_manifest(**sections)
    m.setdefault("callbacks", [{"type": "csv"}])
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(m))
    return p


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    path, result = run_manifest(_manifest(tmp, train={"epochs": 2, "batch_size": 64}), out=tmp / "run")
    return path, result


def test_run_directory_has_everything(finished_run):
    path, result = finished_run
    for name in ("manifest.yaml", "environment.json", "metrics.jsonl", "genotype.json", "model.pt", "model.onnx",
                 "report.md", "result.json", "status.json", "checkpoints/search.pt", "checkpoints/retrain.pt",
                 "plots/learning_curves.png", "plots/arch_evolution.png", "metrics.csv", "export.json"):
        assert (path / name).is_file(), name
    assert json.loads((path / "status.json").read_text())["status"] == "completed"
    on_disk = json.loads((path / "result.json").read_text())
    assert on_disk["genotype"] == result["genotype"]
    assert set(on_disk["stage_seconds"]) == {"search", "derive", "retrain", "evaluate", "export", "report"}
    env = json.loads((path / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and "nb201" in env["plugins"]
    assert not list(path.rglob("*.tmp")), "temporary files left behind"


def test_genotype_is_a_nb201_arch_string(finished_run):
    path, result = finished_run
    g = Genotype.from_json(json.loads((path / "genotype.json").read_text()))
    assert g.text.count("~") == 6 and g.text.startswith("|") and g.text.count("+") == 2


def test_onnx_is_verified_against_onnxruntime(finished_run):
    _, result = finished_run
    assert result["export"]["ok"] and result["onnx_max_abs_diff"] <= 1e-4
    assert result["export"]["dynamic_batch"] and result["export"]["checked_inputs"] > 1


def test_model_pt_is_a_weights_only_state_dict(finished_run):
    path, _ = finished_run
    state = torch.load(path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_resolved_manifest_reproduces_the_run(finished_run, tmp_path):
    path, result = finished_run
    _, again = run_manifest(path / "manifest.yaml", out=tmp_path / "again")
    assert again["genotype"]["hash"] == result["genotype"]["hash"]
    assert again["test_metrics"]["accuracy"] == pytest.approx(result["test_metrics"]["accuracy"], abs=1e-6)


def test_reexport(finished_run):
    path, _ = finished_run
    info = reexport(path)
    assert info["ok"] and (path / "model.onnx").is_file()


def test_export_of_a_compiled_network(finished_run, monkeypatch):
    """A backend that torch.compile's its modules (cuda with ``compile: true``): the
    export traces a plain copy (tracing a compiled module fails) and leaves the run's
    network as the backend prepared it."""
    from dnas_plugins.backends.torch_devices import CPUBackend

    prepared = []
    plain = CPUBackend.prepare

    def compiling(self, module):
        module = plain(self, module)
        module.compile(backend="eager")
        prepared.append(module)
        return module

    monkeypatch.setattr(CPUBackend, "prepare", compiling)
    path, _ = finished_run
    info = reexport(path)
    assert info["ok"] and prepared
    net = prepared[-1]
    assert net._compiled_call_impl is not None  # still the compiled module
    assert any(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)


def test_out_dir_must_be_new(finished_run, tmp_path):
    from dnas_core import UsageError

    path, _ = finished_run
    with pytest.raises(UsageError, match="exists and is not empty"):
        run_manifest(path / "manifest.yaml", out=path)


class _Interrupt:
    """A plugin that interrupts the run once, like Ctrl-C, at a given stage/epoch."""

    __name__ = "interrupter"

    def __init__(self, stage: str, epoch: int):
        self.stage, self.epoch, self.fired = stage, epoch, False

    @hookimpl
    def dnas_epoch_end(self, run, stage, epoch, metrics):
        if not self.fired and stage == self.stage and epoch == self.epoch:
            self.fired = True
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    # augmented search and retraining: the augmentation's randomness must resume too
    sections = dict(strategy={"type": "darts", "epochs": 2, "batch_size": 32, "augment": "both"},
                    task={"type": "digits", "limit_train": 300, "limit_test": 100,
                          "augment": {"crop_padding": 1, "flip": True, "cutout": 2}},
                    train={"epochs": 2, "batch_size": 64}, export=None)
    manifest = _manifest(tmp, **sections)
    return manifest, run_manifest(manifest, out=tmp / "ref")[1]


@pytest.mark.parametrize("stage, epoch", [("search", 1), ("retrain", 1)])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, reference_run, stage, epoch):
    manifest, reference = reference_run
    plug = _Interrupt(stage, epoch)
    with pytest.raises(KeyboardInterrupt):
        run_manifest(manifest, out=tmp_path / "cut", pm=get_plugin_manager(extra_plugins=[plug]))
    assert json.loads((tmp_path / "cut" / "status.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "cut" / "result.json").exists()
    _, resumed = resume_run(tmp_path / "cut")
    assert resumed["genotype"]["hash"] == reference["genotype"]["hash"]
    assert resumed["test_metrics"]["accuracy"] == pytest.approx(reference["test_metrics"]["accuracy"], abs=1e-6)
    epochs = [(r["stage"], r["epoch"]) for r in map(json.loads, (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines())]
    assert len(epochs) == len(set(epochs)) == 4, epochs


def test_observer_plugin_failure_does_not_stop_the_run(tmp_path):
    bad = types.ModuleType("flaky_logger")

    def dnas_epoch_end(run, stage, epoch, metrics):
        raise ValueError("disk quota")

    bad.dnas_epoch_end = hookimpl(dnas_epoch_end)
    manifest = _manifest(tmp_path, strategy={"type": "darts", "epochs": 1, "batch_size": 32}, train={"epochs": 1}, export=None)
    _, result = run_manifest(manifest, out=tmp_path / "r", pm=get_plugin_manager(extra_plugins=[bad]))
    assert result["plugin_errors"] and "flaky_logger" in result["plugin_errors"][0] and "disk quota" in result["plugin_errors"][0]


def test_unfit_space_is_a_clear_error(tmp_path):
    from dnas_core import IncompatibleError, Task

    class Tab(Task):
        name = "tabby"

        def io_spec(self):
            from dnas_core import IOSpec

            return IOSpec("tabular", (4,), 2)

        def load_data(self, seed):
            from torch.utils.data import TensorDataset
            from dnas_core import TaskData

            ds = TensorDataset(torch.zeros(4, 4), torch.zeros(4, dtype=torch.long))
            return TaskData(ds, ds, ds)

    plug = types.ModuleType("tab_plugin")
    plug.dnas_register_tasks = hookimpl(lambda: [Tab])
    manifest = _manifest(tmp_path, task={"type": "tabby"})
    with pytest.raises(IncompatibleError, match="'nb201' does not fit task 'tabby'.*'tabular'"):
        run_manifest(manifest, out=tmp_path / "r", pm=get_plugin_manager(extra_plugins=[plug]))


def test_csv_logger_replaces_replayed_epochs(tmp_path):
    """A resumed stage replays the epochs after its last checkpoint: metrics.csv keeps one
    row per (stage, epoch), the newest, as metrics.jsonl does."""
    import csv
    from types import SimpleNamespace

    from dnas_core.rundir import RunDir
    from dnas_plugins.callbacks.csv_logger import CSVLogger

    rd = RunDir.create(tmp_path / "run")
    for epoch in range(3):  # logged before the kill; the checkpoint holds epoch 0 only
        rd.append_metrics({"stage": "search", "epoch": epoch, "loss": 1.0})
    run = SimpleNamespace(run_dir=rd)
    logger = CSVLogger()
    logger.dnas_run_start(run)
    rd.truncate_metrics("search", 1)
    for epoch in (1, 2):
        logger.dnas_epoch_end(run, "search", epoch, {"loss": 0.5})
    logger.dnas_epoch_end(run, "retrain", 0, {"loss": 0.1})
    rows = list(csv.DictReader((rd.path / "metrics.csv").open()))
    assert [(r["stage"], r["epoch"], r["loss"]) for r in rows] == [
        ("search", "0", "1.0"), ("search", "1", "0.5"), ("search", "2", "0.5"), ("retrain", "0", "0.1")]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path, signame):
    """A scheduler's SIGTERM, or a SIGHUP (the terminal went away): the run records
    ``interrupted``, the command exits 130 and names the resume command with the run
    directory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from dnas_core.rundir import RunDir

    m = _manifest(tmp_path, strategy={"type": "darts", "epochs": 500, "batch_size": 32})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dnas_core", "run", str(m), "--out", str(out)],
                            env={**os.environ, "DNAS_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.time() + 120
        while not ((out / "metrics.jsonl").exists() and RunDir(out).metrics()):
            assert proc.poll() is None and time.time() < deadline, "the run never logged an epoch"
            time.sleep(0.2)
        proc.send_signal(getattr(signal, signame))
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert f"dnas run --resume {out}" in err
    status = RunDir(out).status()
    assert status["status"] == "interrupted" and signame in status["error"]


def test_a_stop_after_completion_keeps_the_run_completed(tmp_path):
    """A Ctrl-C / SIGTERM that lands while the end of a finished run is announced (a
    slow logger upload) does not turn ``completed`` into ``interrupted``."""
    from dnas_core.rundir import RunDir

    class SlowUpload:
        @hookimpl
        def dnas_run_end(self, run, status, result):
            if status == "completed":
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_manifest(_manifest(tmp_path, train={"epochs": 1}, export=None), out=tmp_path / "run",
                     pm=get_plugin_manager(extra_plugins=[SlowUpload()]))
    assert RunDir(tmp_path / "run").status()["status"] == "completed"
    assert (tmp_path / "run" / "result.json").is_file()


def test_a_run_finds_its_data_from_another_directory(tmp_path, monkeypatch, pm):
    """The saved manifest keeps task.path as written (a relative path, or none for the
    data root's default), and data_paths.json the absolute paths they resolved to: a
    resume (or re-export) started where those resolve to nothing reads the recorded
    ones, one that finds them (another DNAS_DATA_ROOT) reads its own."""
    import shutil

    from dnas_core.orchestrator import Orchestrator
    from dnas_core.testing import tiny_manifest

    data = Path(__file__).parent / "data" / "text"
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(data / "reviews.csv", work / "reviews.csv")
    root = tmp_path / "root"
    shutil.copytree(data / "sms-spam", root / "text" / "sms-spam")
    space = {"type": "seq1d", "C": 4, "N": 1}
    cases = [("file", {"type": "text_file", "path": "reviews.csv"}, "reviews.csv", work / "reviews.csv"),
             ("spam", {"type": "sms_spam"}, None, root / "text" / "sms-spam")]
    for name, task, written, resolved in cases:
        monkeypatch.setenv("DNAS_DATA_ROOT", str(root))
        monkeypatch.chdir(work)
        m = work / f"{name}.yaml"
        m.write_text(yaml.safe_dump({**tiny_manifest(task=task), "space": space}))
        Orchestrator.new(m, [], tmp_path / name, pm)
        assert yaml.safe_load((tmp_path / name / "manifest.yaml").read_text())["task"]["path"] == written
        assert json.loads((tmp_path / name / "data_paths.json").read_text()) == {"path": str(resolved)}
        # from elsewhere, without the data root: the recorded path
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DNAS_DATA_ROOT", str(tmp_path / "nowhere"))
        assert Orchestrator.resume(tmp_path / name, pm).manifest.task.path == str(resolved)
    # a data root that holds the data set wins over the recorded path
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    monkeypatch.setenv("DNAS_DATA_ROOT", str(moved))
    assert Orchestrator.resume(tmp_path / "spam", pm).manifest.task.path is None
