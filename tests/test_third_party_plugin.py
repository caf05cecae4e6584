"""The third-party path: the example plugin, pip-installed into a separate folder,
is listed by `dnas plugins`, runs end to end from a manifest, and passes its own
contract-based tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugins" / "dnas-example-shapes"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
               DNAS_PROGRESS="0")
    return env


def _dnas(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dnas_core", *args], env=env, capture_output=True, text=True, cwd=cwd)


def test_plugins_lists_it_with_its_distribution(plugin_env):
    out = _dnas(plugin_env, "plugins")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("shapes"))
    assert "dnas-example-shapes 0.1.0" in line and "task: shapes" in line


def test_not_visible_without_install():
    out = _dnas(dict(os.environ), "plugins")
    assert not any(l.startswith("shapes ") for l in out.stdout.splitlines())


def test_a_manifest_using_it_runs_end_to_end(plugin_env, tmp_path):
    out = _dnas(plugin_env, "run", str(PLUGIN / "shapes.yaml"), "--out", str(tmp_path / "run"),
                "task.per_class=30", "strategy.epochs=1", "train.epochs=2", "space.C=4")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["task"] == "shapes" and result["export"]["ok"]


def test_disable_env_blocks_it(plugin_env, tmp_path):
    env = dict(plugin_env, DNAS_DISABLE_PLUGINS="shapes")
    out = _dnas(env, "validate", str(PLUGIN / "shapes.yaml"))
    assert out.returncode == 2 and "unknown task 'shapes'" in out.stderr


def test_its_own_contract_tests_pass(plugin_env):
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                         env=plugin_env, capture_output=True, text=True, cwd=PLUGIN)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "passed" in out.stdout
