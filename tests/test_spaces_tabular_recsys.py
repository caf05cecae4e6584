"""The tabular_mlp and recsys search spaces (contract suites) and the one-architecture
baseline spaces small_cnn and neumf."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dnas_core import IncompatibleError, MixWeights, get_plugin_manager
from dnas_core.genotype import GraphEncoding
from dnas_core.testing import SearchSpaceContract
from dnas_core.training import count_parameters, first_inputs, iterate_batches

DATA = Path(__file__).parent / "data"


def _reg():
    return get_plugin_manager().registries


def _bc():
    return _reg().tasks.create("breast_cancer", {"limit_train": 120})


def _ml():
    return _reg().tasks.create("movielens", {"path": str(DATA / "recsys" / "u.data")})


def _pneumonia():
    return _reg().tasks.create("pneumoniamnist", {"path": str(DATA / "medical" / "pneumoniamnist_slice.npz")})


class TestTabularSpace(SearchSpaceContract):
    def make_space(self):
        return _reg().spaces.create("tabular_mlp", {"widths": [8, 16, 32], "max_depth": 3, "stem_width": 16})

    def make_task(self):
        return _bc()


class TestRecsysSpace(SearchSpaceContract):
    def make_space(self):
        return _reg().spaces.create("recsys", {"emb_dims": [4, 8, 16], "proj_dim": 8, "mlp_layers": [16, 8]})

    def make_task(self):
        return _ml()


def _hard(alpha: torch.Tensor) -> MixWeights:
    w = torch.softmax(alpha, dim=-1)
    return MixWeights(w, w.argmax(dim=-1))


@pytest.mark.parametrize("space_name,cfg,task_fn", [
    ("tabular_mlp", {"widths": [8, 16], "max_depth": 2, "stem_width": 8}, _bc),
    ("recsys", {"emb_dims": [4, 8], "proj_dim": 4, "mlp_layers": [8]}, _ml),
])
def test_supernet_with_hard_sampling(space_name, cfg, task_fn):
    """With sampled (GDAS-style) indices the supernet computes only the sampled
    choices, and the loss still reaches every architecture tensor."""
    task = task_fn()
    task.data(0)
    space = _reg().spaces.create(space_name, cfg)
    torch.manual_seed(0)
    net = space.build_supernet(task)
    net.body.weight_fn = _hard
    x, y = next(iterate_batches(task.data(0).train, 8))
    task.loss_fn()(net(x), y).backward()
    grads = [p.grad for p in net.body.arch_parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_tabular_derive_follows_the_logits():
    task = _bc()
    task.data(0)
    space = _reg().spaces.create("tabular_mlp", {"widths": [8, 16, 32], "max_depth": 3})
    net = space.build_supernet(task)
    body = net.body
    with torch.no_grad():
        for p in body.arch_parameters():
            p.zero_()
        body.alpha_depth[0, 1] = 1  # two blocks
        body.alpha_width[0, 2] = body.alpha_width[1, 0] = 1
        body.alpha_activation[:, 1] = 1  # gelu
        body.alpha_norm[:, 2] = 1  # layernorm
        body.alpha_skip[1, 1] = 1
    g = space.derive(net)
    assert g.spec["blocks"] == ((32, "gelu", "layernorm", "none"), (8, "gelu", "layernorm", "residual"))
    assert g.text == "32-gelu-layernorm-none|8-gelu-layernorm-residual"
    assert space.from_string(g.text) == g
    # the residual across 32 -> 8 goes through a projection
    out = space.build_network(g, task)(first_inputs(task.data(0).test, 4))
    assert out.shape == (4, 2)


class TestRecsysSpaceWithLinearTerm(SearchSpaceContract):
    """The opt-in FM first-order operator goes through the same contract."""

    def make_space(self):
        return _reg().spaces.create("recsys", {"emb_dims": [4, 8], "proj_dim": 8, "mlp_layers": [16],
                                               "ops": ["hadamard", "mlp", "linear"]})

    def make_task(self):
        return _ml()


def test_recsys_linear_term_is_a_per_user_and_per_item_bias():
    task = _ml()
    # op_norm off: the raw biases, not their batch-normalised values
    space = _reg().spaces.create("recsys", {"emb_dims": [4, 8], "ops": ["dot", "linear"], "op_norm": False})
    g = space.from_string("emb=4,8;ops=linear")
    net = space.build_network(g, task)
    users, items = task.io_spec().extra["field_sizes"]
    assert count_parameters(net.body) == users * 4 + items * 8 + users + items
    x = first_inputs(task.data(0).test, 6)
    assert torch.equal(net.body(x), torch.zeros(6, 2))  # zero-initialised biases
    with torch.no_grad():
        net.body.inter.bias[1].weight[x[1][0]] = 3.0
    assert float(net.body(x)[0, 1]) == 3.0


def test_recsys_derive_keeps_the_operators_at_or_above_a_uniform_share():
    task = _ml()
    space = _reg().spaces.create("recsys", {"emb_dims": [4, 8, 16]})
    net = space.build_supernet(task)
    assert tuple(net.body.alpha_ops.shape) == (1, 4)  # one softmax over dot, hadamard, mlp, cross
    with torch.no_grad():
        net.body.alpha_emb.zero_()
        net.body.alpha_emb[0, 0] = net.body.alpha_emb[1, 2] = 1
        net.body.alpha_ops.zero_()
    assert space.derive(net).text == "emb=4,16;ops=dot+hadamard+mlp+cross"  # nothing demoted yet
    with torch.no_grad():
        net.body.alpha_ops[0, 3] = 0.5  # cross gains, the others fall below 1/4
    assert space.derive(net).text == "emb=4,16;ops=cross"
    with torch.no_grad():
        net.body.alpha_ops[0] = torch.tensor([0.0, 2.0, 2.0, 0.0])
    assert space.derive(net).spec["ops"] == ("hadamard", "mlp")


def test_recsys_operator_gates_have_no_common_level_to_drift():
    """The cause of the MovieLens search keeping one operator: the head is a linear layer
    right after the gates, so the gates' common level is redundant with the head's
    weights; with one (off, on) softmax per operator the architecture step lowered every
    gate together and an absolute "on > 0.5" rule dropped all but a noise-picked argmax.
    The operators now share one softmax: shifting every logit changes neither the
    network's output nor the derived genotype, and the architecture gradient has no
    component along that shift."""
    task = _ml()
    space = _reg().spaces.create("recsys", {"emb_dims": [4, 8], "proj_dim": 4, "mlp_layers": [8]})
    torch.manual_seed(0)
    net = space.build_supernet(task)
    net.body.weight_fn = lambda a: MixWeights(torch.softmax(a, dim=-1))
    net.eval()
    x, y = next(iterate_batches(task.data(0).train, 64))
    with torch.no_grad():
        net.body.alpha_ops[0] = torch.tensor([0.3, -0.2, 0.1, 0.0])
        before, g_before = net(x), space.derive(net)
        net.body.alpha_ops += 5.0
        after, g_after = net(x), space.derive(net)
    assert torch.allclose(before, after, atol=1e-6) and g_before == g_after
    net.train()
    task.loss_fn()(net(x), y).backward()
    grad = net.body.alpha_ops.grad
    assert float(grad.abs().sum()) > 0
    assert abs(float(grad.sum())) < 1e-6 * float(grad.abs().sum()) + 1e-12


def test_recsys_op_norm_puts_the_operators_at_one_scale():
    """The other half of the cause: the operators' raw outputs differ in scale by an
    order of magnitude or more (products of two projected embeddings against an MLP
    tower or a cross network), so a gate multiplies outputs of unrelated sizes, and at
    NCF's 0.01-std initialisation the dot / hadamard products are tiny and barely train
    in a short search. ``op_norm`` (AutoFIS's batch norm on each operator's output, no
    affine) brings every operator near unit scale once its batch variance exceeds batch
    norm's eps (1e-5), here with the embeddings at a trained-like std of 0.3; at the
    0.01-std initialisation, below eps, it lifts the products by about 300x. Checked
    in the supernet and in the derived network alike."""
    task = _ml()
    x, _ = next(iterate_batches(task.data(0).train, 256))

    def op_stds(net, emb_scale):
        net.inter.train()
        with torch.no_grad():
            embs = [emb_scale * e(i) for e, i in zip(net.embeddings, x, strict=True)]
            outs = net.inter.op_outputs(embs, x)
        # per-channel spread over the batch, ignoring channels a ReLU left constant
        return {op: float(v.std(dim=0)[v.std(dim=0) > 1e-6].mean()) for op, v in outs.items()}

    for build in ("supernet", "network"):
        stds = {}
        for op_norm in (False, True):
            space = _reg().spaces.create("recsys", {"emb_dims": [4, 8], "proj_dim": 4, "mlp_layers": [8],
                                                    "op_norm": op_norm})
            torch.manual_seed(0)
            net = (space.build_supernet(task) if build == "supernet" else
                   space.build_network(space.from_string("emb=8,8;ops=dot+hadamard+mlp+cross"), task)).body
            for scale in (1.0, 30.0):
                stds[op_norm, scale] = op_stds(net, scale)
        raw, normed = stds[False, 30.0], stds[True, 30.0]
        assert max(raw.values()) > 10 * min(raw.values()), raw
        assert all(0.5 < v < 1.05 for v in normed.values()) and max(normed.values()) < 2 * min(normed.values()), normed
        raw, normed = stds[False, 1.0], stds[True, 1.0]
        assert all(normed[op] > 100 * raw[op] for op in ("dot", "hadamard")), (raw, normed)


def test_invalid_graphs_are_rejected():
    tab = _reg().spaces.create("tabular_mlp", {"max_depth": 2})
    g = tab.sample(np.random.default_rng(0))
    enc = tab.encode(g)
    broken = GraphEncoding(enc.adjacency.copy(), enc.ops.copy(), enc.op_names)
    broken.adjacency[0, -1] = 1  # an edge that is no chain edge nor residual
    with pytest.raises(ValueError):
        tab.decode(broken)
    rec = _reg().spaces.create("recsys", {})
    enc = rec.encode(rec.sample(np.random.default_rng(0)))
    ops = enc.ops.copy()
    ops[-2] = 0
    ops[-2, enc.op_names.index("dot")] = 1  # the cross node claims to be dot
    with pytest.raises(ValueError):
        rec.decode(GraphEncoding(enc.adjacency, ops, enc.op_names))


def test_bad_text_forms_raise_value_error():
    with pytest.raises(ValueError, match="width"):
        _reg().spaces.create("tabular_mlp", {}).from_string("100-relu-none-none")
    with pytest.raises(ValueError, match="emb=16,32"):
        _reg().spaces.create("recsys", {}).from_string("garbage")


def test_baselines_of_the_search_spaces():
    task = _bc()
    task.data(0)
    tab = _reg().spaces.create("tabular_mlp", {})
    g = tab.baseline(task)
    assert g.text == "128-relu-batchnorm-none|128-relu-batchnorm-none"
    rec = _reg().spaces.create("recsys", {})
    assert rec.baseline(_ml()).text == "emb=32,32;ops=hadamard+mlp"
    with pytest.raises(IncompatibleError, match="hadamard"):
        _reg().spaces.create("recsys", {"ops": ["dot", "cross"]}).baseline(_ml())


def test_unfit_task_space_pair_is_an_error():
    with pytest.raises(IncompatibleError, match="modality"):
        _reg().spaces.create("tabular_mlp", {}).check_task(_pneumonia())
    with pytest.raises(IncompatibleError, match="modality"):
        _reg().spaces.create("recsys", {}).check_task(_bc())


def _onnx_roundtrip(net, x, tmp_path):
    import onnxruntime as ort

    net = net.eval()
    with torch.no_grad():
        ref = net(x)
    args = tuple(x) if isinstance(x, tuple) else (x,)
    names = [f"in{i}" for i in range(len(args))]
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), dynamo=False, input_names=names, output_names=["out"],
                          dynamic_axes={**{n: {0: "b"} for n in names}, "out": {0: "b"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
    return float(np.max(np.abs(got - ref.numpy())))


@pytest.mark.parametrize("space_name,cfg,task_fn,params", [
    ("small_cnn", {"C": 4, "blocks": 1}, _pneumonia, None),
    ("neumf", {"factors": 8, "mlp_layers": [64, 32, 16, 8]}, _ml, None),
])
def test_one_architecture_spaces(space_name, cfg, task_fn, params, tmp_path):
    task = task_fn()
    task.data(0)
    space = _reg().spaces.create(space_name, cfg)
    g = space.baseline(task)
    assert space.sample(np.random.default_rng(3)) == g
    assert space.decode(space.encode(g)) == g and space.from_string(g.text) == g
    with pytest.raises(IncompatibleError, match="strategy"):
        space.build_supernet(task)
    torch.manual_seed(0)
    net = space.build_network(g, task)
    x = first_inputs(task.data(0).test, 3)
    assert _onnx_roundtrip(net, x, tmp_path) < 1e-4
    with pytest.raises(IncompatibleError):
        space.check_genotype(type(g)(space.name, {"other": 1}))


def test_neumf_matches_the_paper_layout():
    """GMF (8) and MLP (embeddings 32 + 32 -> 32 -> 16 -> 8) concatenated: 16 features."""
    task = _ml()
    space = _reg().spaces.create("neumf", {"factors": 8, "mlp_layers": [64, 32, 16, 8]})
    net = space.build_network(space.baseline(task), task)
    nu, ni = task.io_spec().extra["field_sizes"]
    expected = (nu + ni) * (8 + 32) + (64 * 32 + 32) + (32 * 16 + 16) + (16 * 8 + 8) + (16 + 1)
    assert net.body.out_channels == 16
    assert count_parameters(net) == expected
