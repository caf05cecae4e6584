"""Medical tasks: PneumoniaMNIST (slice of the MedMNIST .npz) and breast cancer."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dnas_core import DataError, get_plugin_manager
from dnas_core.orchestrator import run_manifest
from dnas_core.testing import TaskContract
from dnas_tasks.medical import binary_metrics

SLICE = Path(__file__).parent / "data" / "medical" / "pneumoniamnist_slice.npz"


def _task(name, **cfg):
    return get_plugin_manager().registries.tasks.create(name, cfg)


class TestPneumoniaMNISTTask(TaskContract):
    def make_task(self):
        return _task("pneumoniamnist", path=str(SLICE))


class TestBreastCancerTask(TaskContract):
    def make_task(self):
        return _task("breast_cancer")


def test_official_splits_are_used():
    data = _task("pneumoniamnist", path=str(SLICE)).data(0)
    assert data.sizes() == {"train": 160, "val": 40, "test": 60}
    with np.load(SLICE) as npz:
        assert torch.equal(data.test.tensors[1], torch.from_numpy(npz["test_labels"].reshape(-1).astype(np.int64)))


def test_binary_metrics_match_hand_counts():
    # 3 positives, 2 negatives; predictions (p>=0.5): 1, 1, 0 | 1, 0
    p = torch.tensor([0.9, 0.6, 0.4, 0.7, 0.2])
    logits = torch.stack([torch.zeros(5), torch.log(p / (1 - p))], dim=1)
    m = binary_metrics(logits, torch.tensor([1, 1, 1, 0, 0]))
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["auc"] == pytest.approx(4 / 6)  # 4 of the 6 (positive, negative) pairs ordered correctly


def test_imbalance_options():
    weighted = _task("breast_cancer", imbalance="weighted_loss")
    y = weighted.data(0).train.tensors[1]
    counts = torch.bincount(y).float()
    w = weighted.loss_fn().weight
    assert w is not None and torch.allclose(w * counts, (counts.sum() / 2).expand(2))
    assert _task("breast_cancer", imbalance="none").loss_fn().weight is None
    over = _task("breast_cancer", imbalance="oversample")
    yo = over.data(0).train.tensors[1]
    assert torch.bincount(yo)[0] == torch.bincount(yo)[1] == counts.max()
    assert over.loss_fn().weight is None


def test_malformed_npz_names_the_file(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="broken.npz.*MedMNIST"):
        _task("pneumoniamnist", path=str(bad)).data(0)
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="partial.npz lacks the arrays"):
        _task("pneumoniamnist", path=str(partial)).data(0)
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(pickled, "w") as z:  # an object array needs pickle: refused
        import io

        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        for key in ("train", "val", "test"):
            z.writestr(f"{key}_images.npy", buf.getvalue())
            z.writestr(f"{key}_labels.npy", buf.getvalue())
    with pytest.raises(DataError, match="pickled.npz"):
        _task("pneumoniamnist", path=str(pickled)).data(0)
    with pytest.raises(DataError, match="does-not-exist.npz does not exist"):
        _task("pneumoniamnist", path=str(tmp_path / "does-not-exist.npz")).data(0)


def _run(tmp_path, name, manifest):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return run_manifest(path, out=tmp_path / name)[1]


@pytest.mark.slow
def test_breast_cancer_search_end_to_end(tmp_path):
    """DARTS over the tabular space, retrain, evaluate, ONNX export."""
    result = _run(tmp_path, "bc", {
        "name": "bc", "seed": 0,
        "task": {"type": "breast_cancer", "limit_train": 200},
        "space": {"type": "tabular_mlp", "widths": [16, 32], "max_depth": 2, "stem_width": 16},
        "strategy": {"type": "darts", "epochs": 2, "batch_size": 64, "arch_lr": 3e-3},
        "train": {"epochs": 6, "batch_size": 64, "lr": 0.05},
        "backend": {"type": "cpu", "threads": 1}, "export": {"type": "onnx"},
    })
    assert set(result["test_metrics"]) >= {"auc", "accuracy", "sensitivity", "specificity"}
    assert result["test_metrics"]["auc"] > 0.9  # the data set is easy: a failed training would not get here
    assert result["onnx_max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_pneumonia_small_cnn_baseline_end_to_end(tmp_path):
    result = _run(tmp_path, "pn", {
        "name": "pn", "seed": 0,
        "task": {"type": "pneumoniamnist", "path": str(SLICE)},
        "space": {"type": "small_cnn", "C": 4, "blocks": 1},
        "strategy": {"type": "fixed"},
        "train": {"epochs": 2, "batch_size": 64},
        "backend": {"type": "cpu", "threads": 1}, "export": {"type": "onnx"},
    })
    assert result["genotype"]["text"] == "small_cnn(C=4, blocks=1)"
    assert 0.0 <= result["test_metrics"]["auc"] <= 1.0
    assert result["onnx_max_abs_diff"] < 1e-4
