"""The latency model: table building and caching, the fit, predictions against
measurements, and the differentiable expected latency."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dnas_core import get_plugin_manager
from dnas_core.latency import (
    ExpectedLatency,
    LatencyTable,
    MeasureSettings,
    build_latency_table,
)

TINY_MOBILE = {"stem_channels": 8, "last_channels": 32, "kernels": [3, 5], "expansions": [1, 6],
               "stages": [{"channels": 8, "layers": 2, "stride": 1}, {"channels": 16, "layers": 2, "stride": 2}]}
FAST = MeasureSettings(warmup=2, repeats=9, rounds=2, fit_networks=10)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reg():
    return get_plugin_manager().registries


@pytest.fixture(scope="module")
def digits(reg):
    t = reg.tasks.create("digits", {"limit_train": 100, "limit_test": 30})
    t.data(0)
    return t


@pytest.fixture(scope="module")
def cpu1(reg):
    b = reg.backends.create("cpu", {"threads": 1, "clock": "thread_cpu"})
    return b


def test_fit_recovers_known_per_type_scales():
    ops = {"conv:a": 1.0, "conv:b": 2.0, "pool:a": 0.5, "stem": 0.3}
    table = LatencyTable(ops=dict(ops))
    rng = np.random.default_rng(0)
    points = []
    for _ in range(30):
        keys = ["stem"] + ["conv:a"] * int(rng.integers(0, 4)) + ["conv:b"] * int(rng.integers(0, 4)) \
            + ["pool:a"] * int(rng.integers(0, 6))
        true = 0.4 + sum({"conv": 1.5, "pool": 3.0, "stem": 1.0}[k.split(":")[0]] * ops[k] for k in keys)
        points.append((keys, true))
    table.fit(points, ridge=1e-6)
    assert table.scales["conv"] == pytest.approx(1.5, rel=1e-3)
    assert table.scales["pool"] == pytest.approx(3.0, rel=1e-3)
    for keys, true in points:
        assert table.predict_keys(keys) == pytest.approx(true, rel=1e-3)
    back = LatencyTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.predict_keys(points[0][0]) == pytest.approx(table.predict_keys(points[0][0]))


def test_missing_key_is_a_clear_error():
    with pytest.raises(KeyError, match="no entry for operator"):
        LatencyTable(ops={"a": 1.0}).predict_keys(["a", "b"])


def test_table_is_cached_by_identity_and_ranks_networks(reg, digits, cpu1, tmp_path):
    cpu1.setup()
    space = reg.spaces.create("mobile", TINY_MOBILE)
    table = build_latency_table(space, digits, cpu1, FAST, cache_dir=tmp_path)
    files = list(tmp_path.glob("mobile-cpu-*.json"))
    assert len(files) == 1
    assert set(table.ops) == {op.key for op in space.latency_ops(digits)}
    # The cache gives the same table back; another space configuration is another file.
    again = build_latency_table(space, digits, cpu1, FAST, cache_dir=tmp_path)
    assert again.ops == table.ops and again.const_ms == table.const_ms
    other = reg.spaces.create("mobile", {**TINY_MOBILE, "last_channels": 16})
    build_latency_table(other, digits, cpu1, MeasureSettings(warmup=1, repeats=3, rounds=1, fit_networks=0),
                        cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mobile-cpu-*.json"))) == 2

    # The table ranks an all-MBConv-e6 chain above an almost all-skip one. How closely
    # predictions follow measured latency is a timing figure, so it lives in
    # benchmarks/latency_model.py (MAPE, Spearman) rather than in a test.
    light = space.genotype(["skip", "skip", "k3_e1", "skip"])
    heavy = space.genotype(["k5_e6", "k5_e6", "k5_e6", "k5_e6"])
    assert table.predict(space, heavy, digits) > table.predict(space, light, digits)


def test_expected_latency_at_one_hot_equals_prediction(reg, digits):
    """For the mobile space the expected latency is exact at a discrete choice."""
    space = reg.spaces.create("mobile", TINY_MOBILE)
    keys = {op.key for op in space.latency_ops(digits)}
    rng = np.random.default_rng(0)
    table = LatencyTable(ops={k: float(rng.uniform(0.01, 1.0)) for k in keys}, scale=1.3, const_ms=0.2,
                         scales={"k5_e6": 2.0})
    net = space.build_supernet(digits)
    expected = ExpectedLatency(table, space, net, digits)
    g = space.sample(rng)
    alphas = net.body.arch_parameters()
    choice = []
    for a in alphas:
        choice.append(torch.zeros(a.shape[0], dtype=torch.long))
    for ly, (t, r), c in zip(space.layers(), net.body.layer_rows(), g.spec, strict=True):
        choice[t][r] = ly.choices.index(c)
    assert expected.of_choice(choice) == pytest.approx(table.predict(space, g, digits), rel=1e-5)
    # ... and differentiable in the logits.
    lat = expected.of_probabilities(net)
    lat.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)


def test_nb201_latency_keys_cover_every_genotype(reg, digits):
    space = reg.spaces.create("nb201", {"C": 4, "N": 1, "retrain_N": 2})
    keys = {op.key for op in space.latency_ops(digits)}
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = space.sample(rng)
        used = space.genotype_ops(g, digits)
        assert set(used) <= keys
        assert sum(k.startswith("stem") for k in used) == 1
    none = space.genotype(("none",) * 6)
    # Nodes 1 and 2 never reach the output, so only node 3's zero tensor is built:
    # one per cell, 2 cells per stage, 3 stages.
    assert sum(k.startswith("zeros") for k in space.genotype_ops(none, digits)) == 1 * 2 * 3
    fixed, per = space.arch_op_keys(space.build_supernet(digits), digits)
    assert len(per) == 1 and len(per[0]) == 6 and len(per[0][0]) == 5
    assert per[0][0][0] == []  # "none" costs nothing


def test_fit_keeps_the_other_types_when_one_would_go_negative():
    """An operator type that costs nothing in the networks (its measured cost is all
    overhead) is held at 0 instead of throwing every per-type scale away."""
    ops = {"conv:a": 1.0, "pool:a": 0.5, "free:a": 0.2, "stem": 0.3}
    rng = np.random.default_rng(1)
    points = []
    for _ in range(30):
        n = {k: int(rng.integers(0, 4)) for k in ("conv:a", "pool:a", "free:a")}
        keys = ["stem"] + [k for k, c in n.items() for _ in range(c)]
        points.append((keys, 0.3 + 1.2 * n["conv:a"] + 0.2 * 0.5 * n["pool:a"] + 0.3))
    table = LatencyTable(ops=dict(ops))
    table.fit(points, ridge=1e-6)
    assert table.scales["free"] == pytest.approx(0.0, abs=1e-6)
    assert table.scales["conv"] == pytest.approx(1.2, rel=1e-3)
    assert table.scales["pool"] == pytest.approx(0.2, rel=1e-3)
    assert all(v >= 0 for v in table.scales.values()) and table.const_ms >= 0


def test_fit_keeps_one_global_scale_when_per_type_scales_only_fit_noise():
    """Networks that cost 1.3x their operator sum plus 15 % noise: twelve per-type
    scales fitted on 16 networks predict held-out networks worse, so the fit keeps the
    global scale (leave-one-out is itself noisy: on all but one of six draws)."""
    ops = {f"t{i}:a": 0.1 + 0.05 * i for i in range(12)}
    kept_global = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        points = []
        for _ in range(16):
            keys = [k for k in ops for _ in range(int(rng.integers(0, 3)))]
            points.append((keys, (1.3 * sum(ops[k] for k in keys) + 0.1) * float(rng.uniform(0.85, 1.15))))
        table = LatencyTable(ops=dict(ops))
        table.fit(points, ridge=0.3)
        kept_global += table.scales == {}
        assert table.scale == pytest.approx(1.3, rel=0.2)
    assert kept_global >= 5


def test_nb201_optimized_graph_keys_leave_out_constant_parts(reg, digits):
    """With ``optimized_graph`` the convolutions of a node without inputs (constants)
    are not counted, a cell with a constant output makes the whole network free, and
    two poolings of one node count once; without it the eager network's keys stay."""
    space = reg.spaces.create("nb201", {"C": 4, "N": 1})

    def count(text, prefix, optimized):
        return sum(k.startswith(prefix) for k in space.genotype_ops(space.from_string(text), digits,
                                                                     optimized_graph=optimized))

    # node 1 has no input (zero); node 2 = conv1x1(node 1): a constant; node 3 = pool(x) + conv3x3(node 2)
    g = "|none~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    assert count(g, "nor_conv", optimized=False) == 2 * 3
    assert count(g, "nor_conv", optimized=True) == 0
    assert count(g, "zeros", optimized=True) == 0
    assert count(g, "add", optimized=True) == 3  # pool(x) + the folded constant: one addition per cell
    assert count(g, "avg_pool", optimized=True) == 3
    # the cell output depends only on the zero node 1: the whole network is a constant
    const = "|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|none~0|skip_connect~1|none~2|"
    assert space.genotype_ops(space.from_string(const), digits, optimized_graph=True) == []
    assert count(const, "stem", optimized=False) == 1
    # pool(x) feeds nodes 1 and 2: computed once when optimised
    pools = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|"
    assert count(pools, "avg_pool", optimized=False) == 3 * 3
    assert count(pools, "avg_pool", optimized=True) == 2 * 3
    # nothing constant, no shared pooling: the same keys either way
    plain = space.from_string("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|skip_connect~2|")
    assert space.genotype_ops(plain, digits, optimized_graph=True) == space.genotype_ops(plain, digits)


@pytest.mark.parametrize("text", [
    "|none~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|",
    "|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|",
    "|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|none~0|skip_connect~1|none~2|",
])
def test_nb201_optimized_graph_keys_match_what_onnxruntime_runs(reg, digits, tmp_path, text):
    """The convolutions and 3x3 poolings that ``genotype_ops(optimized_graph=True)``
    lists are exactly those left in ONNX Runtime's optimised graph of the network."""
    import io
    import warnings

    import onnx
    import onnxruntime as ort

    from dnas_core.latency import network_module

    space = reg.spaces.create("nb201", {"C": 8, "N": 1})
    backend = reg.backends.create("onnxruntime", {"threads": 1})
    assert backend.optimizes_graph

    def optimised_nodes(genotype):
        net, x = network_module(space, genotype, digits)
        path = tmp_path / "opt.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable: no NCHWc layout
        opts.optimized_model_filepath = str(path)
        opts.log_severity_level = 3
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["input"], output_names=["output"],
                              opset_version=17)
        ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        nodes = onnx.load(str(path)).graph.node
        convs = sum(n.op_type in ("Conv", "FusedConv") for n in nodes)
        pools = sum(n.op_type == "AveragePool" and list(onnx.helper.get_attribute_value(a) for a in n.attribute
                                                          if a.name == "kernel_shape") == [[3, 3]] for n in nodes)
        return len(nodes), convs, pools

    g = space.from_string(text)
    keys = space.genotype_ops(g, digits, optimized_graph=True)
    n_nodes, convs, pools = optimised_nodes(g)
    if not keys:
        assert n_nodes == 0  # a constant network: the graph is one initializer
        return
    # the fixed convolutions (stem, reduction blocks): those of an all-skip cell, which has none of its own
    _, fixed_convs, _ = optimised_nodes(space.from_string("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|"
                                                          "skip_connect~0|skip_connect~1|skip_connect~2|"))
    assert convs - fixed_convs == sum(k.startswith("nor_conv") for k in keys)
    assert pools == sum(k.startswith("avg_pool") for k in keys)
