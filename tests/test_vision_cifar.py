"""CIFAR-10 / CIFAR-100 from their original python-pickle batches. The data sets are
not on these machines, so the tests write small files in the same format: the batches
as Python 2's cPickle wrote them (``str`` keys, numpy arrays pickled by
``numpy.core.multiarray._reconstruct``; hand-assembled opcodes, as Python 3 cannot
write that dialect), and Python 3 pickles with ``bytes`` keys, folders and ``.tar.gz``.
The contract suites run on the slices committed under ``tests/data/vision`` (24 CIFAR-10
images in the Python 2 dialect, 16 CIFAR-100 images in the Python 3 one), which
``write_cifar10(root, per_batch=4)`` and ``write_cifar100_py3(root)`` regenerate."""

from __future__ import annotations

import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from dnas_tasks.vision.readers import read_cifar

from dnas_core import DataError, get_plugin_manager
from dnas_core.testing import TaskContract


# -- Python 2 pickles, opcode by opcode -----------------------------------------------------
def _py2_str(value: str | bytes) -> bytes:
    b = value.encode("latin1") if isinstance(value, str) else value
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    return b"J" + struct.pack("<i", i)


def _py2_uint8_array(a: np.ndarray) -> bytes:
    out = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str("b") + b"\x87R"
    out += b"(" + _py2_int(1) + b"(" + b"".join(_py2_int(d) for d in a.shape) + b"t"
    out += b"cnumpy\ndtype\n" + _py2_str("u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
    out += b"(" + _py2_int(3) + _py2_str("|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
    return out + b"\x89" + _py2_str(a.tobytes()) + b"tb"


def py2_pickle(d: dict) -> bytes:
    """``cPickle.dumps(d, 2)`` of a dict of str keys -> uint8 arrays, int / str lists, ints, strs."""
    out = b"\x80\x02}("
    for k, v in d.items():
        out += _py2_str(k)
        if isinstance(v, np.ndarray):
            out += _py2_uint8_array(v)
        elif isinstance(v, list):
            out += b"](" + b"".join(_py2_str(x) if isinstance(x, str) else _py2_int(x) for x in v) + b"e"
        elif isinstance(v, int):
            out += _py2_int(v)
        else:
            out += _py2_str(v)
    return out + b"u."


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def write_cifar10(root: Path, per_batch: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        x, y = _images(per_batch, i)
        (folder / name).write_bytes(py2_pickle({"batch_label": name, "labels": [int(v) for v in y], "data": x,
                                                "filenames": [f"img{j}.png" for j in range(per_batch)]}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": names, "num_vis": 3072}))
    return folder


def write_cifar100_py3(root: Path, n: int = 8) -> Path:
    """CIFAR-100 in the layout of cifar-100-python, pickled by Python 3 with bytes keys."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for name in ("train", "test"):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": x, b"fine_labels": list(rng.integers(0, 100, n)),
                                                  b"coarse_labels": list(rng.integers(0, 20, n))}))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                                b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    return folder


SLICES = Path(__file__).parent / "data" / "vision"  # written by write_cifar10 / write_cifar100_py3 below


class TestCIFAR10Task(TaskContract):
    def make_task(self):
        return get_plugin_manager().registries.tasks.create("cifar10", {"path": str(SLICES)})


class TestCIFAR100Task(TaskContract):
    def make_task(self):
        return get_plugin_manager().registries.tasks.create(
            "cifar100", {"path": str(SLICES / "cifar-100-python"), "label": "coarse"})


def test_cifar10_reader_keeps_pixels_labels_and_split(tmp_path):
    folder = write_cifar10(tmp_path)
    tx, ty, vx, vy, classes = read_cifar("cifar10", folder)
    assert tx.shape == (30, 3, 32, 32) and tx.dtype == np.uint8 and vx.shape == (6, 3, 32, 32)
    assert classes[0] == "airplane" and len(classes) == 10
    x0, y0 = _images(6, 0)  # data_batch_1: row = red plane, green plane, blue plane, row-major
    assert np.array_equal(tx[:6, 0, 0], x0[:, :32]) and np.array_equal(tx[:6, 2, 31], x0[:, -32:])
    assert np.array_equal(ty[:6], y0) and np.array_equal(vy, _images(6, 5)[1])


def test_cifar10_from_the_parent_folder_and_the_archive(tmp_path):
    folder = write_cifar10(tmp_path / "data")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    direct = read_cifar("cifar10", folder)
    for source in (tmp_path / "data", archive):
        again = read_cifar("cifar10", source)
        assert all(np.array_equal(a, b) for a, b in zip(direct[:4], again[:4], strict=True)) and again[4] == direct[4]


@pytest.mark.parametrize("label, n_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse_labels(tmp_path, label, n_classes):
    write_cifar100_py3(tmp_path)
    tx, ty, _, _, classes = read_cifar("cifar100", tmp_path, label)
    assert tx.shape == (8, 3, 32, 32) and len(classes) == n_classes and ty.max() < n_classes
    assert classes[0] == ("f0" if label == "fine" else "c0")


def test_a_pickle_naming_code_is_refused_and_not_run(tmp_path):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(DataError, match=r"test_batch: the pickle refers to pathlib"):
        read_cifar("cifar10", folder)
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "data_batch_3").unlink(), r"data_batch_3 not found; expected the python version of CIFAR-10"),
    (lambda f: (f / "data_batch_2").write_bytes(b"not a pickle"), r"data_batch_2 is not a valid pickle"),
    (lambda f: (f / "test_batch").write_bytes(py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})),
     r"test_batch: data uint8 \(2, 100\) with 2 labels; expected uint8 \(N, 3072\)"),
    (lambda f: (f / "data_batch_1").write_bytes(py2_pickle({"data": np.zeros((1, 3072), np.uint8), "labels": [12]})),
     r"data_batch_1: labels outside 0..9"),
])
def test_malformed_files_name_the_file_and_the_format(tmp_path, damage, message):
    folder = write_cifar10(tmp_path)
    damage(folder)
    with pytest.raises(DataError, match=message):
        read_cifar("cifar10", folder)


def test_missing_data_names_the_path_and_expected_layout(tmp_path):
    pm = get_plugin_manager()
    task = pm.registries.tasks.create("cifar10", {"path": str(tmp_path / "nowhere")})
    with pytest.raises(DataError, match=r"cifar10: .*nowhere does not exist; expected the python version of CIFAR-10"):
        task.data(0)


def test_cifar10_task_runs_end_to_end(tmp_path):
    from dnas_core.orchestrator import run_manifest

    write_cifar10(tmp_path / "data", per_batch=12)
    manifest = {
        "name": "cifar", "seed": 0,
        "task": {"type": "cifar10", "path": str(tmp_path / "data"), "augment": {"crop_padding": 4, "flip": True}},
        "space": {"type": "nb201", "C": 2, "N": 1},
        "strategy": {"type": "darts", "epochs": 1, "batch_size": 8},
        "train": {"epochs": 1, "batch_size": 8},
        "backend": {"type": "cpu", "threads": 1}, "export": {"type": "onnx"},
        "output": {"onnx_check_samples": 4},
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    _, result = run_manifest(path, out=tmp_path / "run")
    assert set(result["test_metrics"]) >= {"accuracy"} and result["onnx_max_abs_diff"] < 1e-4
    task = get_plugin_manager().registries.tasks.create("cifar10", {"path": str(tmp_path / "data")})
    data = task.data(0)
    assert task.io_spec().input_shape == (3, 32, 32) and len(data.test) == 12  # the official test batch
    x, _ = data.train[0]
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # pixels scaled to [0, 1]; the stem normalises


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = get_plugin_manager().registries.tasks.create("cifar10", {"path": "data/cifar-10-batches-py"})
    with pytest.raises(DataError, match=r"relative path is read from the current directory, " + str(tmp_path)):
        task.data(0)
