from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The data root the framework itself reads (DNAS_DATA_ROOT, which .ci/run exports),
# else the shared folder beside the checkout.
SHARED_DATA = Path(os.environ.get("DNAS_DATA_ROOT") or ROOT / ".." / "shared" / "data").resolve()

# Keep test output quiet and single-threaded-deterministic; tests run on 2 cores.
os.environ.setdefault("DNAS_PROGRESS", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def pm():
    from dnas_core import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# -- one finished mini run shared by the report and reliability tests ------------------
MINI_MANIFEST = ROOT / "tests" / "data" / "reports" / "mini.yaml"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A real `dnas run` of tests/data/reports/mini.yaml (in a subprocess, as a user
    runs it), with the TensorBoard and MLflow (local SQLite store) callbacks when those
    optional packages are installed. Reused read-only by several test modules."""
    import importlib.util

    from dnas_core.testing.faults import run_cli

    base = tmp_path_factory.mktemp("finished")
    overrides = []
    callbacks = ["{type: csv}"]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append("{type: tensorboard}")
    if importlib.util.find_spec("mlflow") is not None:
        callbacks.append(f"{{type: mlflow, tracking_uri: 'sqlite:///{base}/mlflow.db', experiment: tests}}")
    overrides.append("callbacks=[" + ", ".join(callbacks) + "]")
    out = base / "run"
    res = run_cli(["run", str(MINI_MANIFEST), *overrides, "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    return out
