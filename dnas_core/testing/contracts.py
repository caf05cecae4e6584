"""The contract suites (see :mod:`dnas_core.testing`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from dnas_core.backend import Backend
from dnas_core.genotype import Genotype
from dnas_core.space import SearchSpace
from dnas_core.task import Task
from dnas_core.training import first_inputs, iterate_batches

_LAYOUT_DIMS = {"image": 4, "sequence": 3, "tabular": 2, "recsys": 2}


def _batch_size(x: Any) -> int:
    return x[0].shape[0] if isinstance(x, (tuple, list)) else x.shape[0]


class TaskContract:
    """What every task must do. Implement :meth:`make_task` (small data, fast)."""

    seed = 0

    def make_task(self) -> Task:
        raise NotImplementedError

    @pytest.fixture
    def task(self) -> Task:
        return self.make_task()

    def test_declares_name_and_config(self, task: Task) -> None:
        assert isinstance(task.name, str) and task.name
        assert task.config is not None
        assert task.metric_direction in ("maximize", "minimize")

    def test_splits_are_nonempty_and_reproducible(self, task: Task) -> None:
        data = task.data(self.seed)
        sizes = data.sizes()
        assert sizes["train"] > 0 and sizes["test"] > 0, sizes
        again = type(task)(task.config).data(self.seed)
        assert again.sizes() == sizes
        a = next(iterate_batches(data.train, 8))
        b = next(iterate_batches(again.train, 8))
        for x, y in zip(a, b, strict=True):
            xs = x if isinstance(x, (tuple, list)) else [x]
            ys = y if isinstance(y, (tuple, list)) else [y]
            for u, v in zip(xs, ys, strict=True):
                assert torch.equal(u, v)

    def test_io_spec_matches_data(self, task: Task) -> None:
        data = task.data(self.seed)
        spec = task.io_spec()
        assert spec.modality in _LAYOUT_DIMS, spec.modality
        x, _ = next(iterate_batches(data.train, 4))
        if not isinstance(x, (tuple, list)):
            assert tuple(x.shape[1:]) == tuple(spec.input_shape), (x.shape, spec.input_shape)
        assert spec.num_outputs >= 1

    def test_stem_and_head_adapt_the_body_layout(self, task: Task) -> None:
        data = task.data(self.seed)
        spec = task.io_spec()
        x, _ = next(iterate_batches(data.train, 4))
        h = task.make_stem(8)(x)
        assert h.dim() == _LAYOUT_DIMS[spec.modality] and h.shape[0] == _batch_size(x) and h.shape[1] == 8
        out = task.make_head(8)(h)
        assert out.shape[0] == _batch_size(x)

    def test_loss_and_metrics_on_a_trivial_model(self, task: Task) -> None:
        from dnas_core.space import Network

        data = task.data(self.seed)
        torch.manual_seed(0)
        model = Network(task.make_stem(8), torch.nn.Identity(), task.make_head(8))
        x, y = next(iterate_batches(data.train, 8))
        loss = task.loss_fn()(model(x), y)
        assert torch.isfinite(loss)
        loss.backward()
        metrics = task.evaluate(model, data.test, torch.device("cpu"))
        assert task.primary_metric in metrics
        assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))

    def test_descriptor_is_json(self, task: Task) -> None:
        task.data(self.seed)
        json.dumps(task.descriptor())


class SearchSpaceContract:
    """What every search space must do. Implement :meth:`make_space` and
    :meth:`make_task` (a small task of a modality the space serves)."""

    supernet_options: dict[str, Any] = {}

    def make_space(self) -> SearchSpace:
        raise NotImplementedError

    def make_task(self) -> Task:
        raise NotImplementedError

    @pytest.fixture
    def space(self) -> SearchSpace:
        return self.make_space()

    @pytest.fixture
    def task(self) -> Task:
        t = self.make_task()
        t.data(0)
        return t

    def test_fits_its_task(self, space: SearchSpace, task: Task) -> None:
        space.check_task(task)

    def test_sample_encode_decode_roundtrip(self, space: SearchSpace) -> None:
        rng = np.random.default_rng(0)
        for _ in range(20):
            g = space.sample(rng)
            graph = space.encode(g)
            assert graph.adjacency.shape[0] == graph.ops.shape[0]
            assert np.allclose(graph.ops.sum(1), 1)
            assert np.allclose(np.tril(graph.adjacency), 0), "adjacency must be upper triangular (topological order)"
            assert space.decode(graph) == g

    def test_genotype_json_and_hash_are_stable(self, space: SearchSpace) -> None:
        g = space.sample(np.random.default_rng(1))
        back = Genotype.from_json(json.loads(json.dumps(g.to_json())))
        assert back == g and back.hash() == g.hash()
        assert space.format(g)

    def test_supernet_forward_backward_reaches_arch_parameters(self, space: SearchSpace, task: Task) -> None:
        torch.manual_seed(0)
        net = space.build_supernet(task, **self.supernet_options)
        x, y = next(iterate_batches(task.data(0).train, 4))
        loss = task.loss_fn()(net(x), y)
        loss.backward()
        arch = net.body.arch_parameters()
        assert arch, "a supernet must expose architecture parameters"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in arch)

    def test_derive_gives_a_valid_genotype(self, space: SearchSpace, task: Task) -> None:
        net = space.build_supernet(task, **self.supernet_options)
        g = space.derive(net)
        space.check_genotype(g)
        space.decode(space.encode(g))

    def test_network_forward_and_onnx_export(self, space: SearchSpace, task: Task, tmp_path: Path) -> None:
        import onnxruntime as ort

        torch.manual_seed(0)
        g = space.sample(np.random.default_rng(2))
        net = space.build_network(g, task).eval()
        x = first_inputs(task.data(0).test, 3)
        with torch.no_grad():
            out = net(x)
        assert out.shape[0] == 3
        args = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        names = [f"input{i}" for i in range(len(args))]
        path = tmp_path / "net.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, args, str(path), dynamo=False, input_names=names, output_names=["out"],
                              dynamic_axes={**{n: {0: "b"} for n in names}, "out": {0: "b"}}, opset_version=17)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})[0]
        assert np.max(np.abs(got - out.numpy())) < 1e-4


class BackendContract:
    """What every backend must do. Implement :meth:`make_backend`."""

    def make_backend(self) -> Backend:
        raise NotImplementedError

    @pytest.fixture
    def backend(self) -> Backend:
        b = self.make_backend()
        if not type(b).is_available():
            pytest.skip(f"backend {b.name} is not available on this machine")
        b.setup()
        return b

    def test_device_and_prepare(self, backend: Backend) -> None:
        m = backend.prepare(torch.nn.Conv2d(3, 4, 3))
        x = backend.prepare_input(torch.randn(2, 3, 8, 8))
        with backend.autocast():
            y = m(x)
        assert y.shape == (2, 4, 6, 6)
        assert y.device.type == backend.device.type

    def test_latency_is_positive_and_repeatable(self, backend: Backend) -> None:
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        lat = backend.measure_latency(m, torch.randn(1, 3, 16, 16), warmup=2, repeats=5)
        assert lat.median_ms > 0 and lat.p90_ms >= lat.median_ms * 0.5 and lat.repeats == 5


def tiny_manifest(**sections: Any) -> dict[str, Any]:
    """A manifest dict for a seconds-long run on digits (override any section). The
    space is ``nb201`` (images): a task of another modality needs ``space=`` as well,
    e.g. ``tiny_manifest(task={"type": "iris"}, space={"type": "tabular_mlp"})``."""
    base: dict[str, Any] = {
        "name": "contract",
        "seed": 0,
        "task": {"type": "digits", "limit_train": 300, "limit_test": 100},
        "space": {"type": "nb201", "C": 4, "N": 1},
        "strategy": {"type": "darts", "epochs": 2, "batch_size": 32},
        "train": {"epochs": 1, "batch_size": 64},
        "backend": {"type": "cpu"},
        "export": {"type": "onnx"},
    }
    for key, value in sections.items():
        base[key] = copy.deepcopy(value)
    return base


class StrategyContract:
    """What every strategy must do. Implement :meth:`manifest` returning a manifest
    dict (see :func:`tiny_manifest`) that runs in seconds."""

    def manifest(self) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, tmp_path: Path, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
        from dnas_core.orchestrator import run_manifest

        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        _, result = run_manifest(path, out=tmp_path / name)
        return result

    def test_search_gives_a_valid_genotype_and_is_deterministic(self, tmp_path: Path) -> None:
        m = self.manifest()
        m = {**m, "train": {**m.get("train", {}), "epochs": 0}, "export": None}
        a = self._run(tmp_path, "a", m)
        b = self._run(tmp_path, "b", m)
        assert a["genotype"]["hash"] == b["genotype"]["hash"]
        assert (tmp_path / "a" / "genotype.json").exists()
