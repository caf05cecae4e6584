"""The differentiable family on the NAS-Bench-201 space: every strategy through the
contract suite, and unit tests of what each one changes."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from dnas_core import MixWeights
from dnas_core.testing import StrategyContract, tiny_manifest

# -- contract suites: every strategy runs end to end and deterministically ------------------


def _tiny(strategy: dict) -> dict:
    return tiny_manifest(
        strategy={"epochs": 1, "batch_size": 32, "eval_supernet": False, **strategy},
        task={"type": "digits", "limit_train": 60, "limit_test": 20},
    )


class TestDARTSSecondOrder(StrategyContract):
    def manifest(self):
        return _tiny({"type": "darts", "order": "second"})


class TestGDAS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "gdas"})


class TestSNAS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "snas"})


class TestPCDARTS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "pc_darts", "partial_channels": 2})


class TestDrNAS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "drnas"})


class TestBetaDARTS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "beta_darts"})


class TestDARTSMinus(StrategyContract):
    def manifest(self):
        return _tiny({"type": "darts_minus"})


class TestFairDARTS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "fair_darts"})


class TestSDARTSRS(StrategyContract):
    def manifest(self):
        return _tiny({"type": "sdarts_rs"})


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from dnas_core import get_plugin_manager

    task = get_plugin_manager().registries.tasks.create("digits", {"limit_train": 60, "limit_test": 20})
    task.data(0)
    return task


def _space(**cfg):
    from dnas_core import get_plugin_manager

    return get_plugin_manager().registries.spaces.create("nb201", {"C": 4, "N": 1, **cfg})


def _batch(task, n: int, split: str = "train", offset: int = 0):
    from dnas_core.training import iterate_batches

    data = getattr(task.data(0), split)
    x, y = next(iterate_batches(data, n + offset))
    return x[offset:], y[offset:]


class _NoAutocast:
    def autocast(self):
        return contextlib.nullcontext()


# -- DARTS second order ----------------------------------------------------------------------


def test_second_order_hypergradient_matches_exact_unrolled_gradient(digits) -> None:
    """The finite-difference Hessian-vector product gives d/da L_val(w - xi grad_w L_train(w, a), a)."""
    from dnas_plugins.strategies.darts import unrolled_arch_grads
    from torch.func import functional_call

    from dnas_core import get_plugin_manager

    torch.manual_seed(0)
    net = _space(C=2).build_supernet(digits).double().train()
    strategy = get_plugin_manager().registries.strategies.create("darts", {"order": "second"})
    with torch.no_grad():
        net.body.alpha.normal_(0, 0.5)
    xa, ya = _batch(digits, 16, "val")
    xw, yw = _batch(digits, 16, "train")
    batch_a, batch_w = (xa.double(), ya), (xw.double(), yw)
    loss_fn = torch.nn.CrossEntropyLoss()
    arch = net.body.arch_parameters()
    names = [n for n, p in net.named_parameters() if p is not arch[0]]
    weights = [p for n, p in net.named_parameters() if p is not arch[0]]
    xi = 0.5

    # In float64 a small finite-difference step isolates the formula from the ReLU kinks
    # that DARTS's default step (0.01) may cross on a network this small.
    _, ours = unrolled_arch_grads(strategy, net, batch_a, batch_w, loss_fn, weights, arch, xi,
                                  eps_scale=1e-6, backend=_NoAutocast())

    # Exact: autograd through the virtual step.
    g = torch.autograd.grad(loss_fn(net(batch_w[0]), batch_w[1]), weights, create_graph=True)
    unrolled = {n: w - xi * gi for n, w, gi in zip(names, weights, g, strict=True)}
    val = loss_fn(functional_call(net, {**unrolled, "body.alpha": arch[0]}, (batch_a[0],)), batch_a[1])
    exact = torch.autograd.grad(val, arch[0])[0]
    # First order for contrast: the weights held fixed.
    first = torch.autograd.grad(loss_fn(net(batch_a[0]), batch_a[1]), arch[0])[0]

    err = (ours[0] - exact).norm()
    assert err < 1e-4 * exact.norm(), (err, exact.norm())
    assert (first - exact).norm() > 100 * err  # the test sees the Hessian term


# -- GDAS: one op per edge ---------------------------------------------------------------------


def _count_convs(net, x, index) -> int:
    w = torch.zeros(6, 5).scatter_(1, index.unsqueeze(1), 1.0)
    net.body.weight_fn = lambda alpha: MixWeights(w, index)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        net(x)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::conv2d")


def test_gdas_forward_computes_only_the_sampled_op(digits) -> None:
    from dnas_plugins.strategies._gumbel import gumbel_hard
    from dnas_search_spaces.nb201 import OPS

    torch.manual_seed(0)
    net = _space().build_supernet(digits).train()
    x, _ = _batch(digits, 8)
    skip, conv3 = OPS.index("skip_connect"), OPS.index("nor_conv_3x3")
    n_skip = _count_convs(net, x, torch.full((6,), skip))
    n_conv = _count_convs(net, x, torch.full((6,), conv3))
    mixed = torch.tensor([conv3, skip, conv3, 0, skip, conv3])
    # 3 cells (N=1 per stage), 6 edges: one convolution per conv edge, none for skip/none.
    assert n_conv - n_skip == 3 * 6
    assert _count_convs(net, x, mixed) - n_skip == 3 * 3

    # Straight-through: exactly one-hot forward, gradient of the soft sample.
    alpha = torch.randn(6, 5, requires_grad=True)
    weights, index = gumbel_hard(alpha, tau=1.0)
    assert torch.equal(weights.detach(), F.one_hot(index, 5).float())
    (weights * torch.arange(5.0)).sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


def test_gdas_arch_step_survives_a_cell_cut_off_from_its_input(digits) -> None:
    """Gumbel-max can draw ``none`` on every edge into the output node: the sampled
    network's loss then does not depend on the logits (nor, in the architecture step, on
    anything that requires a gradient). That step changes nothing instead of failing."""
    from dnas_search_spaces.nb201 import OPS

    from dnas_core import get_plugin_manager

    strategy = get_plugin_manager().registries.strategies.create("gdas", {"epochs": 1})
    torch.manual_seed(0)
    net = _space().build_supernet(digits).train()
    net.body.weight_fn = strategy.weight_fn
    with torch.no_grad():  # every edge all but certain to draw `none`
        net.body.alpha.zero_()
        net.body.alpha[:, OPS.index("none")] = 1e4
    strategy._weights = [p for n, p in net.named_parameters() if not n.endswith("alpha")]
    a_opt = torch.optim.Adam(net.body.arch_parameters(), lr=0.1)
    before = net.body.alpha.detach().clone()
    batch = _batch(digits, 8)
    loss = strategy.arch_step(net, batch, batch, torch.nn.CrossEntropyLoss(), a_opt, None, _NoAutocast())
    assert math.isfinite(loss)
    assert torch.equal(net.body.alpha.detach(), before)
    assert all(p.requires_grad for p in strategy._weights)  # the weights are unfrozen again


def test_gumbel_temperature_schedule() -> None:
    from dnas_plugins.strategies._gumbel import temperature

    assert temperature(0, 10, 10.0, 0.1) == 10.0
    assert temperature(9, 10, 10.0, 0.1) == pytest.approx(0.1)
    assert temperature(9, 10, 1.0, 0.03, "exponential") == pytest.approx(0.03)
    assert math.isclose(temperature(1, 3, 1.0, 0.01, "exponential"), 0.1)


# -- PC-DARTS --------------------------------------------------------------------------------


def test_partial_channels_k1_equals_darts(digits) -> None:
    torch.manual_seed(0)
    space = _space()
    dense = space.build_supernet(digits).train()
    partial = space.build_supernet(digits, partial_channels=1, edge_normalization=False).train()
    partial.load_state_dict(dense.state_dict())
    with torch.no_grad():
        dense.body.alpha.normal_()
        partial.body.alpha.copy_(dense.body.alpha)
    x, _ = _batch(digits, 8)
    torch.testing.assert_close(partial(x), dense(x), rtol=1e-5, atol=1e-5)


def _textbook_partial_cell(cell, x, w, edge_w):
    """Per edge: mixed op on the first C/K channels, concat the rest, shuffle, weight."""
    from dnas_search_spaces.nb201.ops import EDGES, avg_pool, out_edges
    from dnas_search_spaces.nb201.partial import channel_shuffle

    ck = cell.ck
    nodes = [x]
    for j in range(1, 4):
        total = 0
        for e, (t, i) in enumerate(EDGES):
            if t != j:
                continue
            xa, xb = nodes[i][:, :ck], nodes[i][:, ck:]
            src = cell.sources[i]
            k = out_edges(i).index(e)
            sl = slice(k * ck, (k + 1) * ck)
            bn = lambda y: F.batch_norm(y, None, None, training=True)  # noqa: E731
            outs = [xa * 0, xa, bn(F.conv2d(F.relu(xa), src.conv1.weight[sl])),
                    bn(F.conv2d(F.relu(xa), src.conv3.weight[sl], padding=1)), avg_pool(xa)]
            mixed = sum(w[e, o] * outs[o] for o in range(5))
            total = total + edge_w[e] * channel_shuffle(torch.cat([mixed, xb], 1), cell.k)
        nodes.append(total)
    return nodes[-1]


def test_partial_cell_matches_the_textbook_pc_darts_edge(digits) -> None:
    from dnas_search_spaces.nb201.partial import PartialSearchCell, edge_weights

    torch.manual_seed(0)
    cell = PartialSearchCell(8, 4, track=False).train()
    assert cell.sources[0].conv3.weight.shape[1] == 2  # only C/K channels enter the ops
    x = torch.randn(4, 8, 5, 5)
    w = torch.softmax(torch.randn(6, 5), -1)
    beta = torch.randn(6, requires_grad=True)
    ew = edge_weights(beta)
    for j in (1, 2, 3):  # softmax over each node's incoming edges
        from dnas_search_spaces.nb201.partial import INCOMING

        assert float(ew[INCOMING[j]].sum().detach()) == pytest.approx(1.0)
    got = cell(x, MixWeights(w), ew)
    torch.testing.assert_close(got, _textbook_partial_cell(cell, x, w, ew), rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0


def test_partial_channels_must_divide_the_width(digits) -> None:
    from dnas_core import IncompatibleError

    with pytest.raises(IncompatibleError, match="partial_channels=3"):
        _space().build_supernet(digits, partial_channels=3)
    with pytest.raises(IncompatibleError, match="bogus"):
        _space().build_supernet(digits, bogus=1)


# -- DrNAS, beta-DARTS, DARTS-, Fair DARTS, SDARTS ---------------------------------------------


def _strategy(name: str, **cfg):
    from dnas_core import get_plugin_manager

    return get_plugin_manager().registries.strategies.create(name, {"epochs": 5, **cfg})


def test_drnas_samples_the_dirichlet_and_anchors_it(digits) -> None:
    s = _strategy("drnas", kl_weight=1.0)
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, requires_grad=True)
    s.phase = "weight"
    a, b = s.weight_fn(alpha).weights, s.weight_fn(alpha).weights
    torch.testing.assert_close(a.sum(-1), torch.ones(6))
    assert not torch.allclose(a, b)  # a fresh sample every pass
    a.sum().backward()  # pathwise gradient
    s.phase = "eval"
    mean = s.weight_fn(alpha).weights
    assert torch.equal(mean.argmax(-1), (F.elu(alpha) + 1).argmax(-1))
    body = _space().build_supernet(digits).body
    with torch.no_grad():
        body.alpha.zero_()  # concentration 1 everywhere: the anchor itself
    assert float(s.arch_regularizer(body).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        body.alpha.normal_()
    assert float(s.arch_regularizer(body).detach()) > 0


def test_beta_decay_pulls_logits_by_their_softmax(digits) -> None:
    s = _strategy("beta_darts", beta_weight=6.0)
    s.on_epoch_start(4, None)
    assert s.lam == 6.0
    body = _space().build_supernet(digits).body
    with torch.no_grad():
        body.alpha.normal_()
    s.arch_regularizer(body).backward()
    torch.testing.assert_close(body.alpha.grad, torch.softmax(body.alpha.detach(), -1))  # 6 * softmax / 6 rows


def test_darts_minus_auxiliary_skip_decays_to_zero(digits) -> None:
    from dnas_search_spaces.nb201 import OPS

    s = _strategy("darts_minus")
    body = _space().build_supernet(digits).body
    alpha = torch.randn(6, 5)
    s.on_epoch_start(0, body)
    w = s.weight_fn(alpha).weights
    extra = w - torch.softmax(alpha, -1)
    assert torch.allclose(extra[:, OPS.index("skip_connect")], torch.ones(6))
    assert float(extra.abs().sum()) == pytest.approx(6.0)
    s.on_epoch_start(4, body)
    torch.testing.assert_close(s.weight_fn(alpha).weights, torch.softmax(alpha, -1))


def test_fair_darts_sigmoid_weights_and_zero_one_loss() -> None:
    from dnas_plugins.strategies.fair_darts import zero_one_loss

    s = _strategy("fair_darts")
    alpha = torch.randn(6, 5)
    torch.testing.assert_close(s.weight_fn(alpha).weights, torch.sigmoid(alpha))
    assert float(zero_one_loss(torch.full((6, 5), 10.0))) < float(zero_one_loss(torch.zeros(6, 5))) == 0.0


def test_sdarts_perturbs_only_the_weight_step() -> None:
    s = _strategy("sdarts_rs", epsilon=0.3, epsilon_start=0.3)
    s.on_epoch_start(0, None)
    alpha = torch.randn(6, 5)
    clean = torch.softmax(alpha, -1)
    s.phase = "arch"
    torch.testing.assert_close(s.weight_fn(alpha).weights, clean)
    s.phase = "weight"
    noisy = s.weight_fn(alpha).weights
    assert 0 < float((noisy - clean).abs().max()) <= 0.3


# -- collapse monitor, early stop and the NAS-Bench-201 report section ------------------------


def test_collapse_metrics() -> None:
    from dnas_plugins.strategies.differentiable import collapse_metrics

    space = _space()
    collapsed = collapse_metrics(space.genotype(("skip_connect",) * 6))
    assert collapsed == {"collapse/param_free_share": 1.0, "collapse/skip_count": 6.0}
    mixed = collapse_metrics(space.genotype(("nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1",
                                             "nor_conv_3x3")))
    assert mixed == {"collapse/param_free_share": 0.5, "collapse/skip_count": 1.0}


def test_early_stop_and_table_report(tmp_path, shared_data, monkeypatch) -> None:
    import json

    from dnas_core.orchestrator import run_manifest

    monkeypatch.setenv("DNAS_NB201_TABLE", str(shared_data / "nas" / "nas-bench-201-test-accuracy.csv"))
    m = _tiny({"type": "darts", "epochs": 4, "stop_at_skips": 1})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    summary = json.loads((run_dir / "search_summary.json").read_text())
    search = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in search if r["stage"] == "search"]
    assert all(0 <= r["collapse/param_free_share"] <= 1 for r in search)
    assert "early_stop" in summary, "seed 0 derives a cell with a skip connection at once"
    stop = summary["early_stop"]
    assert len(search) == stop["epoch"] + 1 < 4 and search[-1]["collapse/skip_count"] >= 1
    table = json.loads((run_dir / "nb201_table.json").read_text())
    assert table["arch"] == result["genotype"]["text"] and 10 < table["cifar10"] < 95
    assert "NAS-Bench-201 table" in (run_dir / "report.md").read_text()


def test_early_stop_survives_a_kill_before_the_search_is_marked_done(tmp_path) -> None:
    """A run killed after the early-stop checkpoint but before ``state.json`` recorded
    the search as complete resumes as stopped: no further search epochs, same cell."""
    import json

    from dnas_core.orchestrator import resume_run, run_manifest

    m = _tiny({"type": "darts", "epochs": 4, "stop_at_skips": 1})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    stop = json.loads((run_dir / "search_summary.json").read_text())["early_stop"]
    assert stop["epoch"] < 3
    # the on-disk state of a process killed right after the early-stop checkpoint
    state = json.loads((run_dir / "state.json").read_text())
    state["completed"], state["seconds"] = [], {}
    (run_dir / "state.json").write_text(json.dumps(state))
    for name in ("result.json", "search_summary.json"):
        (run_dir / name).unlink()
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "status": "running"}))

    _, resumed = resume_run(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["stage"] == "search"] == list(range(stop["epoch"] + 1))
    assert resumed["genotype"] == result["genotype"]
    assert json.loads((run_dir / "search_summary.json").read_text())["early_stop"] == stop


def test_hard_path_arch_gradient_is_finite_in_channels_last() -> None:
    """Regression: CPU batch norm's backward with an expanded (stride-0) weight on a
    channels-last input returned non-finite garbage, which failed GDAS searches."""
    from dnas_plugins.strategies._gumbel import gumbel_hard
    from dnas_search_spaces.nb201.ops import SearchCell

    torch.manual_seed(0)
    cell = SearchCell(8).train()
    for p in cell.parameters():
        p.requires_grad_(False)
    cl = torch.channels_last
    for _ in range(15):
        x = torch.randn(16, 8, 7, 7)
        alpha = (1e-3 * torch.randn(6, 5)).requires_grad_()
        w, idx = gumbel_hard(alpha, 10.0)
        up = torch.randn(16, 8, 7, 7)
        ref = torch.autograd.grad((cell(x, MixWeights(w, idx)) * up).sum(), alpha, retain_graph=True)[0]
        cell.to(memory_format=cl)
        got = torch.autograd.grad((cell(x.contiguous(memory_format=cl), MixWeights(w, idx)) * up).sum(), alpha)[0]
        cell.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


# -- derived cells: never cut off from the input; operations taken out of the search -----------


def test_nb201_derive_never_returns_a_cell_cut_off_from_its_input(digits) -> None:
    from dnas_search_spaces.nb201 import OPS
    from dnas_search_spaces.nb201.ops import input_nodes

    space = _space()
    net = space.build_supernet(digits)
    conv, none = OPS.index("nor_conv_3x3"), OPS.index("none")
    with torch.no_grad():
        net.body.alpha.zero_()
        net.body.alpha[:, conv] = 1.0
    assert space.derive(net).spec == ("nor_conv_3x3",) * 6  # a connected arg-max is kept as it is
    with torch.no_grad():
        net.body.alpha[3:, none] = 2.0  # every edge into the output node: none
        net.body.alpha[4, conv] = 1.9  # ... but 1 <- conv is the closest runner-up
    derived = space.derive(net).spec
    assert 3 in input_nodes(derived)
    # the most probable connected cell changes the one edge that costs the least
    assert derived == ("nor_conv_3x3",) * 3 + ("none", "nor_conv_3x3", "none")


def test_fair_darts_searches_without_the_zero_op(tmp_path) -> None:
    import json

    from dnas_core.orchestrator import run_manifest

    m = _tiny({"type": "fair_darts", "epochs": 2})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    assert "none" not in result["genotype"]["spec"]
    summary = json.loads((run_dir / "search_summary.json").read_text())
    cols = summary["arch_labels"][0][2]
    # pinned through every update: weight exactly 0 after Adam's steps and weight decay
    assert all(row[cols.index("none")] == 0.0 for row in summary["arch_weights"][summary["arch_labels"][0][0]])


@pytest.mark.parametrize(("strategy", "exclude", "message"), [
    ("darts", ["sep_conv_3x3"], "not among the search space's operations"),
    ("darts", ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"], "leaves no operation"),
    ("drnas", ["none"], "drnas does not support"),
])
def test_exclude_ops_errors_name_the_field(tmp_path, strategy, exclude, message) -> None:
    from dnas_core import IncompatibleError
    from dnas_core.orchestrator import run_manifest

    m = _tiny({"type": strategy, "exclude_ops": exclude})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    with pytest.raises(IncompatibleError, match=message) as err:
        run_manifest(path, out=tmp_path / "run")
    assert "strategy.exclude_ops" in str(err.value)


def test_gdas_never_samples_an_excluded_op(digits) -> None:
    from dnas_search_spaces.nb201 import OPS

    s = _strategy("gdas", exclude_ops=["none", "skip_connect"])
    body = _space().build_supernet(digits).body
    excluded = s._excluded_columns(body)
    assert [idx for _, idx in excluded] == [[OPS.index("none"), OPS.index("skip_connect")]]
    s._pin_excluded(excluded)
    s.on_epoch_start(0, body)  # tau 10: close to uniform sampling
    drawn = torch.stack([s.weight_fn(body.alpha).index for _ in range(200)])
    assert not torch.isin(drawn, torch.tensor([OPS.index("none"), OPS.index("skip_connect")])).any()


@pytest.mark.parametrize("strategy, eager", [("gdas", True), ("darts", False)])
def test_path_sampling_supernets_are_prepared_eager(strategy, eager, tmp_path, monkeypatch) -> None:
    """A backend that compiles (cuda, ``compile: true``) must not compile a supernet that
    branches on every sampled path: the strategy prepares it inside ``backend.eager()``."""
    import contextlib

    from dnas_plugins.backends.torch_devices import CPUBackend

    from dnas_core.orchestrator import run_manifest

    state = {"eager": False}
    prepared: list[tuple[str, bool]] = []

    @contextlib.contextmanager
    def eager_ctx(self):
        state["eager"] = True
        try:
            yield
        finally:
            state["eager"] = False

    plain = CPUBackend.prepare

    def recording(self, module):
        prepared.append((type(module).__name__, state["eager"]))
        return plain(self, module)

    monkeypatch.setattr(CPUBackend, "eager", eager_ctx)
    monkeypatch.setattr(CPUBackend, "prepare", recording)
    m = _tiny({"type": strategy})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_manifest(path, out=tmp_path / "run")
    assert prepared[0][1] is eager  # the supernet, built first


# -- search-time augmentation -------------------------------------------------------------------


def test_search_augments_the_batches_it_is_told_to(tmp_path, monkeypatch) -> None:
    """``strategy.augment`` passes the weight step's batches (``weights``) and also the
    architecture step's (``both``) through the task's augmentation, and the steps
    compute on exactly the images it returned."""
    from dnas_plugins.strategies.darts import DARTS
    from dnas_tasks.vision.tasks import ImageTask

    from dnas_core.orchestrator import run_manifest

    augmented: list[torch.Tensor] = []
    seen: dict[str, list[torch.Tensor]] = {"arch": [], "weights": []}
    plain_augment, plain_arch, plain_weight = ImageTask.augment, DARTS.arch_step, DARTS.weight_step

    def augment(self, inputs, generator):
        out = plain_augment(self, inputs, generator)
        augmented.append(out.clone())
        return out

    def arch_step(self, net, batch_a, batch_w, *args):
        seen["arch"].append(batch_a[0].clone())
        return plain_arch(self, net, batch_a, batch_w, *args)

    def weight_step(self, net, batch_w, *args):
        seen["weights"].append(batch_w[0].clone())
        return plain_weight(self, net, batch_w, *args)

    monkeypatch.setattr(ImageTask, "augment", augment)
    monkeypatch.setattr(DARTS, "arch_step", arch_step)
    monkeypatch.setattr(DARTS, "weight_step", weight_step)

    def was_augmented(x: torch.Tensor) -> bool:
        return any(a.shape == x.shape and torch.equal(a, x) for a in augmented)

    for augment_setting, expect in [("none", {"arch": False, "weights": False}),
                                    ("weights", {"arch": False, "weights": True}),
                                    ("both", {"arch": True, "weights": True})]:
        augmented.clear()
        seen["arch"].clear()
        seen["weights"].clear()
        m = _tiny({"type": "darts", "epochs": 2, "batch_size": 10, "augment": augment_setting})
        m["task"].update(val_fraction=0.5, augment={"crop_padding": 2, "flip": True})
        m["train"]["epochs"], m["export"] = 0, None
        path = tmp_path / f"{augment_setting}.yaml"
        path.write_text(yaml.safe_dump(m))
        run_manifest(path, out=tmp_path / augment_setting)
        # 2 epochs of 3 batches of 10 (the 30 images of the weight half), one arch step each
        assert len(seen["arch"]) == len(seen["weights"]) == 6
        assert len(augmented) == sum(expect.values()) * 6, augment_setting
        for step, wanted in expect.items():
            assert [was_augmented(x) for x in seen[step]] == [wanted] * 6, (augment_setting, step)


def test_search_augmentation_needs_a_task_that_augments(tmp_path) -> None:
    """A task without augmentation, or an image task with all of it switched off, is a
    clear error rather than a search on raw batches."""
    from dnas_core import IncompatibleError
    from dnas_core.orchestrator import run_manifest

    cases = [(tiny_manifest(task={"type": "breast_cancer"}, space={"type": "tabular_mlp"},
                            strategy={"type": "darts", "epochs": 1, "augment": "both"}), "applies none, or set"),
             (_tiny({"type": "darts", "augment": "weights"}), "turn it on with task.augment")]
    for i, (m, message) in enumerate(cases):
        path = tmp_path / f"m{i}.yaml"
        path.write_text(yaml.safe_dump(m))
        with pytest.raises(IncompatibleError, match=message) as err:
            run_manifest(path, out=tmp_path / f"run{i}")
        assert "strategy.augment" in str(err.value)


# -- perturbation-based selection (DARTS-PT) ---------------------------------------------


class TestPerturbationSelection(StrategyContract):
    def manifest(self):
        return _tiny({"type": "darts", "selection": "perturbation"})


def test_weight_editor_fixes_rows_and_switches_off_one_op() -> None:
    from dnas_plugins.strategies._selection import WeightEditor

    alpha = torch.nn.Parameter(torch.randn(3, 4))
    other = torch.nn.Parameter(torch.randn(2, 4))
    editor = WeightEditor(lambda a: MixWeights(torch.softmax(a, dim=-1)), [alpha, other])
    plain = torch.softmax(alpha.detach(), dim=-1)
    assert torch.equal(editor(alpha).weights, plain)  # no edits: the strategy's weights
    editor.fixed[(0, 1)] = 2
    editor.off = (0, 2, 3)
    w = editor(alpha).weights
    assert w[1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert w[2, 3] == 0 and torch.equal(w[2, :3], plain[2, :3])
    assert torch.equal(w[0], plain[0])
    assert torch.equal(editor(other).weights, torch.softmax(other.detach(), dim=-1))  # edits name their tensor
    assert editor.seen == {0, 1}


def test_perturbation_selection_keeps_the_op_whose_removal_hurts_most(tmp_path, monkeypatch) -> None:
    import json

    from dnas_core.orchestrator import run_manifest

    from dnas_plugins.strategies import _selection

    plain_tune, tuned_with = _selection._tune_epoch, []

    def tune(strategy, task, net, *args):
        # the edges decided so far are one-hot in the mixture the weights train on
        strategy.phase = "weight"
        w = net.body.weight_fn(net.body.alpha).weights
        tuned_with.append({r: w[r].tolist() for (_, r) in net.body.weight_fn.fixed})
        return plain_tune(strategy, task, net, *args)

    monkeypatch.setattr(_selection, "_tune_epoch", tune)
    m = _tiny({"type": "darts", "epochs": 2, "selection": "perturbation", "selection_tune_epochs": 1})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    assert [len(t) for t in tuned_with] == [1, 2, 3, 4, 5, 6]
    assert all(sorted(row) == [0, 0, 0, 0, 1] for t in tuned_with for row in t.values())
    summary = json.loads((run_dir / "search_summary.json").read_text())
    sel = summary["selection"]
    rows = summary["arch_labels"][0][1]
    assert sel["method"] == "perturbation" and sorted(d["row"] for d in sel["decisions"]) == sorted(rows)
    chosen = {}
    for d in sel["decisions"]:
        assert d["op"] == max(d["loss_rise"], key=d["loss_rise"].get)
        # switching `none` off changes nothing: the measurement is exact and repeatable
        assert d["loss_rise"]["none"] == 0.0
        chosen[d["row"]] = d["op"]
    # the derived cell is the selected one: "|op~0|+|op~0|op~1|+|..." lists edges j<-i in order
    derived = [tok.split("~") for part in result["genotype"]["text"].split("+") for tok in part.strip("|").split("|")]
    assert {f"{j}<-{i}": op for j, (op, i) in zip([1, 2, 2, 3, 3, 3], derived, strict=True)} == chosen


def test_darts_minus_selects_without_its_auxiliary_skip_after_an_early_stop(tmp_path, monkeypatch) -> None:
    """An early stop leaves DARTS-'s auxiliary skip above 0; the derived cell has none,
    so selection measures and tunes the supernet without it."""
    import json

    from dnas_core.orchestrator import run_manifest

    from dnas_plugins.strategies import _selection, differentiable

    plain_metrics, plain_tune, plain_loss = differentiable.collapse_metrics, _selection._tune_epoch, _selection.val_loss
    aux_tuned, aux_measured = [], []
    # the derived cell "collapses" after the first epoch, so stop_at_skips stops the search there
    monkeypatch.setattr(differentiable, "collapse_metrics",
                        lambda g: {**plain_metrics(g), "collapse/skip_count": 6.0})
    monkeypatch.setattr(_selection, "_tune_epoch",
                        lambda strategy, *a: (aux_tuned.append(strategy.aux), plain_tune(strategy, *a)))

    def measured(net, *args, **kwargs):  # the strategy behind the selection's weight editor
        aux_measured.append(net.body.weight_fn.inner.__self__.aux)
        return plain_loss(net, *args, **kwargs)

    monkeypatch.setattr(_selection, "val_loss", measured)
    m = _tiny({"type": "darts_minus", "epochs": 4, "stop_at_skips": 6, "selection": "perturbation",
               "selection_tune_epochs": 1})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, _ = run_manifest(path, out=tmp_path / "run")
    summary = json.loads((run_dir / "search_summary.json").read_text())
    assert summary["early_stop"]["epoch"] == 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["aux_skip_weight"] for r in metrics if r.get("stage") == "search"] == [1.0]  # on while searching
    assert aux_tuned == [0.0] * 6
    assert len(aux_measured) > 6 and set(aux_measured) == {0.0}


def test_perturbation_selection_leaves_batch_norm_statistics_alone(digits) -> None:
    from dnas_plugins.strategies._selection import val_loss

    net = _space().build_supernet(digits)
    net.body.weight_fn = lambda a: MixWeights(torch.softmax(a, dim=-1))
    before = [b.clone() for b in net.buffers()]
    net.train()
    batches = [_batch(digits, 8, "val"), _batch(digits, 8, "val", offset=8)]
    first = val_loss(net, batches, F.cross_entropy, torch.device("cpu"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers(), strict=True))
    assert val_loss(net, batches, F.cross_entropy, torch.device("cpu"), seed=0) == first


@pytest.mark.parametrize(("strategy", "constraints", "message"), [
    ({"type": "gdas"}, None, "gdas samples one path per edge"),
    ({"type": "fbnet", "hard": True}, None, "fbnet samples one path per edge"),
    ({"type": "fbnet", "hard": False}, None, "fbnet evaluates one path per edge"),
    ({"type": "darts"}, {"max_latency_ms": 5.0}, "does not combine with constraints.max_latency_ms"),
])
def test_perturbation_selection_refuses_what_it_cannot_measure(tmp_path, strategy, constraints, message) -> None:
    from dnas_core import IncompatibleError
    from dnas_core.orchestrator import run_manifest

    m = _tiny({**strategy, "selection": "perturbation"})
    if constraints:
        m["constraints"] = constraints
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    with pytest.raises(IncompatibleError, match=message) as err:
        run_manifest(path, out=tmp_path / "run")
    assert "strategy.selection" in str(err.value)


@pytest.mark.parametrize("checkpoint", ["intact", "from_another_search"])
def test_a_search_killed_during_selection_resumes_to_the_same_cell(tmp_path, monkeypatch, checkpoint) -> None:
    """Selection checkpoints every decided edge: a kill part-way through it resumes at
    the next edge (the decided ones are neither measured nor tuned again) and selects
    the same cell, edge by edge. A selection checkpoint whose architecture weights are
    not this search's belongs to another search: it is set aside and selection starts
    over."""
    import json

    import torch
    from dnas_plugins.strategies import _selection

    from dnas_core.orchestrator import resume_run, run_manifest

    m = _tiny({"type": "sdarts_rs", "epochs": 2, "selection": "perturbation",  # random smoothing while tuning
               "selection_tune_epochs": 1})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    plain_tune, plain_loss, counts = _selection._tune_epoch, _selection.val_loss, {"tune": 0, "measure": 0}

    def counted(key, fn):
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(_selection, "val_loss", counted("measure", plain_loss))
    monkeypatch.setattr(_selection, "_tune_epoch", counted("tune", plain_tune))
    ref_dir, reference = run_manifest(path, out=tmp_path / "ref")
    edges, per_edge = counts["tune"], (counts["measure"] - 1) // counts["tune"]  # one probe, then per edge
    assert edges == 6

    def tune_then_die(*args, **kwargs):
        if counts["tune"] == 2:  # half-way: the third edge is decided, its tuning is cut
            raise KeyboardInterrupt
        counts["tune"] += 1
        return plain_tune(*args, **kwargs)

    counts.update(tune=0, measure=0)
    monkeypatch.setattr(_selection, "_tune_epoch", tune_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_manifest(path, out=tmp_path / "cut")
    ckpt_path = tmp_path / "cut" / "checkpoints" / "select.pt"
    if checkpoint == "from_another_search":
        state = torch.load(ckpt_path, weights_only=True)
        state["arch"][0] += 1.0
        torch.save(state, ckpt_path)
    counts.update(tune=0, measure=0)
    monkeypatch.setattr(_selection, "_tune_epoch", counted("tune", plain_tune))
    _, resumed = resume_run(tmp_path / "cut")
    redone = 4 if checkpoint == "intact" else 6  # edges 3-6 (the third was decided, its tuning cut), or all
    assert counts == {"tune": redone, "measure": 1 + redone * per_edge}
    assert resumed["genotype"] == reference["genotype"]
    decisions = [json.loads((d / "search_summary.json").read_text())["selection"]["decisions"]
                 for d in (ref_dir, tmp_path / "cut")]
    assert decisions[0] == decisions[1]


def test_perturbation_selection_in_the_darts_space_keeps_the_searched_topology(tmp_path) -> None:
    """The DARTS space never derives ``none``, so it is no candidate; each node keeps the
    two inputs the search's weights rank highest, each with its selected operation."""
    import json

    from dnas_search_spaces.darts.space import derive_cell

    from dnas_core.orchestrator import run_manifest

    m = tiny_manifest(strategy={"type": "darts", "epochs": 1, "batch_size": 16, "eval_supernet": False,
                                "selection": "perturbation", "selection_tune_epochs": 0},
                      task={"type": "digits", "limit_train": 64, "limit_test": 20},
                      space={"type": "darts", "C": 4, "layers": 2})
    m["train"]["epochs"], m["export"] = 0, None
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(m))
    run_dir, result = run_manifest(path, out=tmp_path / "run")
    summary = json.loads((run_dir / "search_summary.json").read_text())
    decisions = {(d["tensor"], d["row"]): d for d in summary["selection"]["decisions"]}
    assert len(decisions) == 28
    assert all("none" not in d["loss_rise"] and d["op"] != "none" for d in decisions.values())
    spec = result["genotype"]["spec"]
    for cell in ("normal", "reduce"):
        searched = derive_cell(torch.tensor(summary["arch_weights"][cell]))  # magnitude's choice
        derived = [tuple(e) for e in spec[cell]]
        # same inputs per node (the genotype lists a node's two inputs by index)
        assert [sorted(j for _, j in derived[2 * n:2 * n + 2]) for n in range(4)] == \
            [sorted(j for _, j in searched[2 * n:2 * n + 2]) for n in range(4)]
        nodes = [n for n in range(4) for _ in range(2)]
        assert [op for op, _ in derived] == [decisions[(cell, f"{n + 2}<-{j}")]["op"]
                                             for n, (_, j) in zip(nodes, derived, strict=True)]


def test_selection_measures_whole_batches() -> None:
    """A last validation batch of one example joins the batch before it (batch norm in
    training mode cannot normalise one example); no example is lost."""
    from torch.utils.data import TensorDataset

    from dnas_plugins.strategies._selection import validation_batches

    data = TensorDataset(torch.arange(65.0).unsqueeze(1), torch.arange(65))
    sizes = [y.shape[0] for _, y in validation_batches(data, 32, None)]
    assert sizes == [32, 33]
    assert [y.shape[0] for _, y in validation_batches(data, 30, None)] == [30, 30, 5]
    assert [y.shape[0] for _, y in validation_batches(data, 32, 1)] == [32]
