"""FBNet and ProxylessNAS: the strategy contract on the mobile space, and latency-
constrained search end to end (the found architecture meets max_latency_ms)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from dnas_core import IncompatibleError, get_plugin_manager
from dnas_core.testing import StrategyContract, tiny_manifest

TINY = {"type": "mobile", "stem_channels": 8, "last_channels": 16, "kernels": [3, 5], "expansions": [1, 3],
        "stages": [{"channels": 8, "layers": 2, "stride": 1}, {"channels": 12, "layers": 2, "stride": 2}]}
LAT_BACKEND = {"type": "cpu", "threads": 1, "clock": "thread_cpu"}
CONSTRAINTS = {"latency_backend": LAT_BACKEND, "latency_repeats": 10, "latency_fit_networks": 8}


@pytest.fixture(autouse=True, scope="module")
def _latency_cache(tmp_path_factory):
    """One latency cache for the module (tests never write to the user's home)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DNAS_LATENCY_CACHE", str(tmp_path_factory.mktemp("latency")))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
    mp.undo()


def _manifest(strategy: dict, **extra) -> dict:
    # One torch thread: on a busy shared CPU, two-thread kernels wait on each other.
    return tiny_manifest(task={"type": "digits", "limit_train": 160, "limit_test": 40},
                         space=TINY, strategy={"epochs": 2, "batch_size": 32, **strategy},
                         backend={"type": "cpu", "threads": 1}, constraints=dict(CONSTRAINTS), **extra)


class TestFBNet(StrategyContract):
    def manifest(self):
        return _manifest({"type": "fbnet"})


class TestProxylessNAS(StrategyContract):
    def manifest(self):
        return _manifest({"type": "proxylessnas", "paths": 2})


def test_latency_constrained_fbnet_meets_the_limit(tmp_path):
    from dnas_core.constraints import Constraints, latency_settings
    from dnas_core.latency import build_latency_table
    from dnas_core.manifest import ConstraintsConfig
    from dnas_core.orchestrator import run_manifest

    reg = get_plugin_manager().registries
    task = reg.tasks.create("digits", {"limit_train": 160, "limit_test": 40})
    task.data(0)
    space = reg.spaces.create("mobile", {k: v for k, v in TINY.items() if k != "type"})
    backend = reg.backends.create("cpu", {k: v for k, v in LAT_BACKEND.items() if k != "type"})
    backend.setup()
    # The same table the run will read from the cache.
    table = build_latency_table(space, task, backend, latency_settings(ConstraintsConfig(**CONSTRAINTS)))
    c = Constraints(space, task, latency_table=table)
    fast = c.latency_ms(space.genotype(["skip", "skip", "k3_e1", "skip"]))
    slow = c.latency_ms(space.genotype(["k5_e3"] * 4))
    limit = fast + 0.3 * (slow - fast)

    m = _manifest({"type": "fbnet", "latency_weight": 5.0}, train={"epochs": 0}, export=None)
    m["constraints"]["max_latency_ms"] = limit
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    info = json.loads((run_dir / "search_summary.json").read_text())["latency_constraint"]
    assert info["meets_limit"] and info["predicted_ms"] <= limit
    g = space.from_string(result["genotype"]["text"])
    assert table.predict(space, g, task) == pytest.approx(info["predicted_ms"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("expected_latency_ms" in r for r in metrics if r.get("stage") == "search")


def test_latency_strategies_need_a_space_with_a_latency_model():
    reg = get_plugin_manager().registries
    assert reg.spaces.create("nb201", {}).supports_latency() and reg.spaces.create("mobile", {}).supports_latency()

    class NoLatency:
        name = "plain"

        def supports_latency(self):
            return False

    for name in ("fbnet", "proxylessnas"):
        with pytest.raises(IncompatibleError, match="latency model"):
            reg.strategies.create(name, {}).search(SimpleNamespace(space=NoLatency()))
