"""Constraints (params, FLOPs, predicted latency), the constrained derivation, the
binary-gate gradient of ProxylessNAS and the Pareto front."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dnas_core import get_plugin_manager
from dnas_core.constraints import Constraints, SupernetConstraint, count_flops
from dnas_core.latency import LatencyTable
from dnas_core.pareto import pareto_front, plot_pareto

TINY = {"stem_channels": 8, "last_channels": 16, "kernels": [3, 5], "expansions": [1, 3],
        "stages": [{"channels": 8, "layers": 2, "stride": 1}, {"channels": 12, "layers": 2, "stride": 2}]}


@pytest.fixture(scope="module")
def task():
    t = get_plugin_manager().registries.tasks.create("digits", {"limit_train": 100, "limit_test": 30})
    t.data(0)
    return t


@pytest.fixture(scope="module")
def space():
    return get_plugin_manager().registries.spaces.create("mobile", TINY)


def _table(space, task, seed=0):
    """A synthetic table: latency proportional to kernel x expansion (no measuring)."""
    ops = {}
    for op in space.latency_ops(task):
        head = op.key.split(":")[0]
        if head.startswith("k"):
            k, e = head[1:].split("_e")
            ops[op.key] = 0.01 * int(k) * int(e)
        else:
            ops[op.key] = 0.05
    return LatencyTable(ops=ops, const_ms=0.1)


def test_flops_of_a_convolution_are_exact():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, torch.zeros(1, 3, 10, 10)) == 2 * 3 * 8 * 9 * 100


def test_params_flops_and_latency_limits(space, task):
    c = Constraints(space, task, latency_table=_table(space, task))
    light = space.genotype(["skip", "skip", "k3_e1", "skip"])
    heavy = space.genotype(["k5_e3", "k5_e3", "k5_e3", "k5_e3"])
    ml, mh = c.measure(light, latency=True), c.measure(heavy, latency=True)
    assert ml["params"] < mh["params"] and ml["flops"] < mh["flops"] and ml["latency_ms"] < mh["latency_ms"]
    assert ml["params"] == sum(p.numel() for p in space.build_network(light, task).parameters())

    lim = Constraints(space, task, max_params=int((ml["params"] + mh["params"]) / 2),
                      max_flops=(ml["flops"] + mh["flops"]) / 2, max_latency_ms=(ml["latency_ms"] + mh["latency_ms"]) / 2,
                      latency_table=_table(space, task))
    assert lim.feasible(light) and not lim.feasible(heavy)
    assert set(lim.violations(heavy)) == {"params", "flops", "latency_ms"}
    assert lim.penalty(light) == 0 and lim.penalty(heavy) > 0
    rng = np.random.default_rng(0)
    pool = [space.sample(rng) for _ in range(12)]
    kept = lim.filter(pool)
    assert kept and all(lim.feasible(g) for g in kept) and len(kept) < len(pool)
    assert lim.feasible(lim.sample_feasible(np.random.default_rng(1)))


def test_constrained_derivation_meets_the_limit_and_keeps_likely_choices(space, task):
    torch.manual_seed(0)
    net = space.build_supernet(task)
    table = _table(space, task)
    # The supernet prefers the heaviest block everywhere.
    with torch.no_grad():
        for a, labels in zip(net.body.arch_parameters(), net.body.arch_labels(), strict=True):
            a.zero_()
            a[:, labels[2].index("k5_e3")] = 3.0
    heavy = space.derive(net)
    limit = 0.6 * table.predict(space, heavy, task)
    sc = SupernetConstraint(Constraints(space, task, max_latency_ms=limit, latency_table=table), net)
    g, info = sc.derive(space, net)
    assert info["meets_limit"] and table.predict(space, g, task) <= limit
    assert info["changed"] and info["argmax_genotype"] == str(heavy)
    # The derivation does not change the supernet's logits.
    assert space.derive(net) == heavy
    # The penalty is positive above the limit and pushes the expected latency down.
    pen = sc.penalty(net)
    assert float(pen) > 0
    pen.backward()
    grads = [a.grad for a in net.body.arch_parameters()]
    assert all(g is not None for g in grads)


def test_binary_gate_gradient_matches_the_proxylessnas_formula():
    px = importlib.import_module("dnas_plugins.strategies.proxyless")
    torch.manual_seed(3)
    alpha = torch.randn(1, 5, requires_grad=True)
    outs = torch.randn(5, 4)  # o_j(x) of the 5 candidates
    dy = torch.randn(4)  # dL/dy
    mix = px._two_paths(alpha)
    assert int(mix.active.sum()) == 2 and float(mix.weights.detach().sum()) == 1.0
    y = sum(mix.weights[0, j] * outs[j] for j in range(5) if mix.active[0, j])
    (y * dy).sum().backward()
    pair = mix.active[0].nonzero().flatten().tolist()
    q = torch.softmax(alpha.detach()[0, pair], dim=0)
    dg = torch.stack([outs[j] @ dy for j in pair])
    expect = torch.zeros(5)
    for a, i in enumerate(pair):
        expect[i] = sum(dg[b] * q[b] * (float(a == b) - q[a]) for b in range(2))
    assert torch.allclose(alpha.grad[0], expect, atol=1e-6)


points_strategy = st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(points_strategy)
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    front = set(pareto_front(points))

    def dominated(i):
        return any(points[j][0] <= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i]
                   for j in range(len(points)))

    for i in range(len(points)):
        if i in front:
            assert not dominated(i)
        else:  # dominated, or a duplicate of a front point
            assert dominated(i) or any(points[j] == points[i] for j in front)


def test_pareto_plot_writes_a_png(tmp_path):
    pts = [(x, 1 - 1 / (1 + x)) for x in np.linspace(0.1, 3, 12)] + [(2.0, 0.1), (1.0, 0.2)]
    data = plot_pareto(pts, tmp_path / "p.png", x_limit=1.5, labels=[str(i) for i in range(len(pts))])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").stat().st_size == len(data)
    assert pareto_front(pts) == list(range(12))
    assert pareto_front([(1, 0.5), (2, 0.4)], maximize=False) == [0, 1]
    assert list(itertools.islice(pareto_front([(1, 0.5), (2, 0.9)]), 2)) == [0, 1]


def test_every_run_checks_its_limits_on_the_derived_architecture(tmp_path):
    """Only latency-aware strategies enforce limits while searching; every other run
    used to ignore max_params / max_flops silently. The derived architecture is now
    measured against them: a warning for each one missed, the figures in result.json
    and in the report."""
    import yaml

    from dnas_core.orchestrator import run_manifest
    from dnas_core.testing import tiny_manifest

    m = tiny_manifest(strategy={"type": "darts", "epochs": 1, "batch_size": 32}, train={"epochs": 0},
                      constraints={"max_params": 1000, "max_flops": 1e9})
    m["export"] = None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    with pytest.warns(UserWarning, match=r"strategy 'darts' misses params <= 1000 \(\d+\); no built-in strategy"):
        _, result = run_manifest(path, out=tmp_path / "run")
    c = result["constraints"]
    assert c["exceeded"] == ["params"] and not c["met"] and c["values"]["flops"] < 1e9
    assert c["values"]["params"] == result["params"]  # the same network that was retrained and counted
    report = (tmp_path / "run" / "report.md").read_text()
    assert "constraint params <= 1000" in report
    # train.epochs 0: the test figures are flagged as those of an untrained network
    assert result["untrained"] is True and "**Not a result:**" in report
