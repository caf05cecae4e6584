"""Backends that measure latency: the contract for ONNX Runtime and for the CPU backend
with the thread-CPU clock, plus what is specific to each."""

from __future__ import annotations

import pytest
import torch

from dnas_core import get_plugin_manager
from dnas_core.testing import BackendContract


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Backends with threads: 1 set torch's global thread count; restore it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _backend(name, **cfg):
    return get_plugin_manager().registries.backends.create(name, cfg)


class TestOnnxRuntimeBackend(BackendContract):
    def make_backend(self):
        return _backend("onnxruntime", threads=1)


class TestCPUThreadClockBackend(BackendContract):
    def make_backend(self):
        return _backend("cpu", threads=1, clock="thread_cpu")


class TestCUDABackend(BackendContract):
    """Skipped (by the contract) where no CUDA device is present."""

    def make_backend(self):
        return _backend("cuda")


def test_onnxruntime_cannot_train_and_is_never_the_default():
    cls = get_plugin_manager().registries.backends.get("onnxruntime")
    assert cls.trains is False


def test_onnxruntime_session_matches_torch_and_is_reused():
    b = _backend("onnxruntime", threads=1)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 10, 10)
    sess = b.session(m, x)
    got = sess.run(None, {"input": x.numpy()})[0]
    assert abs(got - m(x).detach().numpy()).max() < 1e-4
    b.measure_latency(m, x, warmup=1, repeats=3)
    first = b._sessions[m][tuple(x.shape)]
    b.measure_latency(m, x, warmup=1, repeats=3)
    assert b._sessions[m][tuple(x.shape)] is first


def test_latency_grows_with_work():
    """A 32x larger convolution must measure slower, on both backends."""
    for b in (_backend("cpu", threads=1, clock="thread_cpu"), _backend("onnxruntime", threads=1)):
        b.setup()
        small = torch.nn.Conv2d(8, 8, 3, padding=1)
        big = torch.nn.Conv2d(64, 128, 3, padding=1)
        x_small, x_big = torch.randn(1, 8, 16, 16), torch.randn(1, 64, 16, 16)
        t_small = min(b.measure_latency(small, x_small, 2, 7).median_ms for _ in range(2))
        t_big = min(b.measure_latency(big, x_big, 2, 7).median_ms for _ in range(2))
        assert t_big > 3 * t_small, (b.name, t_small, t_big)


@pytest.mark.parametrize("name", ["cpu", "onnxruntime"])
def test_thread_clock_needs_one_thread(name):
    reg = get_plugin_manager().registries.backends
    with pytest.raises(Exception, match="threads: 1"):
        reg.validate_config(name, {"clock": "thread_cpu", "threads": 2})
    with pytest.raises(Exception, match="threads: 1"):
        reg.validate_config(name, {"clock": "thread_cpu"})


def test_manifest_latency_backend_errors_name_the_field(tmp_path):
    from dnas_core.constraints import _backend_for

    class Run:
        pm = get_plugin_manager()
        backend = None

    with pytest.raises(Exception, match="constraints.latency_backend.type"):
        _backend_for(Run(), {"type": "onnxruntme"})
    with pytest.raises(Exception, match="constraints.latency_backend"):
        _backend_for(Run(), {"type": "cpu", "clock": "sundial"})


def test_cuda_device_gets_an_index(monkeypatch):
    """``torch.cuda.set_device`` refuses a device without an index: a plain ``cuda``
    is ``cuda:0`` in one process and ``cuda:LOCAL_RANK`` in a data-parallel run."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _backend("cuda").device == torch.device("cuda", 0)
    assert _backend("cuda", device="cuda:3").device == torch.device("cuda", 3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _backend("cuda").device == torch.device("cuda", 1)
    assert _backend("cuda", device="cuda:0").device == torch.device("cuda", 0)  # an explicit index stays


def test_cuda_amp_fp16_autocasts_in_float16_with_loss_scaling_and_bf16_without():
    """fp16 (for pre-Ampere tensor cores) comes with an enabled GradScaler; bf16 and off
    need none (tests/test_loss_scaling.py runs the loops under float16 scaling)."""
    assert _backend("cuda", amp="fp16")._dtype() == torch.float16
    assert _backend("cuda", amp="bf16")._dtype() == torch.bfloat16
    assert _backend("cuda", amp="off")._dtype() is None
    assert not _backend("cuda", amp="bf16").grad_scaler().is_enabled()
    assert not _backend("cpu").grad_scaler().is_enabled()
    if torch.cuda.is_available():
        assert _backend("cuda", amp="fp16").grad_scaler().is_enabled()


def test_tune_workers_get_one_gpu_each(monkeypatch):
    """``dnas tune --workers N``: worker i's plain ``cuda`` is GPU i mod n; an explicit
    index stays."""
    from dnas_core.tune import _worker_env

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    devices = []
    for i in range(4):
        monkeypatch.setenv("DNAS_TUNE_WORKER", _worker_env(i)["DNAS_TUNE_WORKER"])
        devices.append(_backend("cuda").device.index)
    assert devices == [0, 1, 2, 0]
    assert _backend("cuda", device="cuda:2").device.index == 2
