"""Binary medical classification tasks with class-imbalance handling.

* ``pneumoniamnist``: PneumoniaMNIST (MedMNIST v2) from its ``.npz`` file, 28x28 grey
  chest X-rays, normal (0) vs pneumonia (1), with the official train / val / test
  splits. Modality ``image``, so the NAS-Bench-201 space (and the ``small_cnn``
  baseline) serve it.
* ``breast_cancer``: the Wisconsin diagnostic breast cancer data (569 x 30, bundled
  with scikit-learn), malignant (1) vs benign (0). Modality ``tabular``.

In both the positive class (label 1) is the disease, so *sensitivity* is the recall
of the disease and *specificity* the recall of the healthy class. The primary metric
is the ROC AUC of the positive-class probability (MedMNIST reports AUC and accuracy).

Class imbalance (``imbalance``): ``weighted_loss`` weights the cross-entropy by the
inverse class frequency of the training split; ``oversample`` repeats minority-class
training examples until the classes are balanced (deterministic for ``split_seed``);
``none`` leaves the data as it is.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field
from sklearn.metrics import confusion_matrix, roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from dnas_core import ComponentConfig, DataError, IOSpec, Task, TaskData
from dnas_core.errors import first_line
from dnas_tasks._common import check_labels, resolve_path, stratified_split, subsample
from dnas_tasks.vision.tasks import ImageConfig, ImageTask

Imbalance = Literal["none", "weighted_loss", "oversample"]


def binary_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """AUC, accuracy, sensitivity and specificity of two-class logits ``(N, 2)``."""
    prob = torch.softmax(outputs.float(), dim=1)[:, 1].numpy()
    y = targets.numpy().astype(np.int64)
    pred = (prob >= 0.5).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "auc": float(roc_auc_score(y, prob)) if both else float("nan"),
        "accuracy": float((pred == y).mean()),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
    }


def oversample(indices: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """``indices`` plus repeats of minority-class indices drawn (with replacement)
    until every class is as frequent as the largest one."""
    rng = np.random.default_rng(seed)
    y = labels[indices]
    counts = np.bincount(y, minlength=2)
    extra = [rng.choice(indices[y == c], counts.max() - n, replace=True) for c, n in enumerate(counts) if 0 < n < counts.max()]
    return np.concatenate([indices, *extra]) if extra else indices


class BinaryMedicalMixin:
    """Loss and metrics shared by the medical tasks (see the module docstring)."""

    primary_metric = "auc"
    metric_direction = "maximize"
    _class_weight: torch.Tensor | None = None

    def _set_class_weight(self, train_labels: np.ndarray) -> None:
        counts = np.bincount(train_labels, minlength=2).astype(np.float64)
        if self.config.imbalance == "weighted_loss" and counts.min() > 0:
            w = counts.sum() / (2 * counts)  # inverse frequency, mean weight 1 over the data
            self._class_weight = torch.tensor(w, dtype=torch.float32)
        else:
            self._class_weight = None

    def _train_indices(self, train: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.config.imbalance == "oversample":
            return oversample(train, labels, self.config.split_seed)
        return train

    def loss_fn(self) -> nn.Module:
        return nn.CrossEntropyLoss(weight=self._class_weight)

    def compute_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return binary_metrics(outputs, targets)


# --------------------------------------------------------------------------------------
# PneumoniaMNIST
# --------------------------------------------------------------------------------------

MEDMNIST_KEYS = tuple(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))


def read_medmnist(path, name: str) -> dict[str, np.ndarray]:
    """The six arrays of a MedMNIST ``.npz`` (grey 2-D images), validated."""
    expected = f"a MedMNIST .npz with arrays {', '.join(MEDMNIST_KEYS)} (images uint8 (N, H, W), labels (N, 1))"
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in MEDMNIST_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{name}: {path} lacks the arrays {missing}; expected {expected}")
            arrays = {k: npz[k] for k in MEDMNIST_KEYS}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/format/pickle errors all mean a bad file
        # numpy's own message for a non-zip file advises allow_pickle=True, which dnas never
        # uses: say what the file is not, and only the cause's first line
        try:
            with open(path, "rb") as fh:
                head = fh.read(4)
        except OSError:
            head = b""
        why = ("not a zip archive (an .npz file is one)" if head != b"PK\x03\x04"
               else f"{type(exc).__name__}: {first_line(exc)}")
        raise DataError(f"{name}: {path} is not a readable .npz file ({why}); expected {expected}") from None
    for split in ("train", "val", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
        if x.ndim != 3 or len(x) != len(y) or not len(x):
            raise DataError(f"{name}: {path}: {split}_images {x.shape} and {split}_labels "
                            f"{arrays[f'{split}_labels'].shape} do not match; expected {expected}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name}: {path}: {split}_labels has dtype {y.dtype}, expected integer class labels")
        arrays[f"{split}_labels"] = y.astype(np.int64)
    return arrays


class PneumoniaMNISTConfig(ImageConfig):
    path: Optional[str] = Field(None, description="the pneumoniamnist.npz file (default: <data root>/medical/pneumoniamnist.npz)")
    imbalance: Imbalance = Field("weighted_loss", description="class-imbalance handling: none, weighted_loss or oversample")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="unused: the official MedMNIST val split is used")
    limit_val: Optional[int] = Field(None, ge=10, description="use at most this many validation examples (stratified)")


class PneumoniaMNISTTask(BinaryMedicalMixin, ImageTask):
    """PneumoniaMNIST (MedMNIST v2): 28x28 chest X-rays, normal vs pneumonia,
    official 4,708 / 524 / 624 splits; about 74 % of the training images show pneumonia."""

    name = "pneumoniamnist"
    default_data = "medical/pneumoniamnist.npz"
    description = "PneumoniaMNIST from the MedMNIST .npz (official splits), AUC/accuracy/sensitivity/specificity"
    Config = PneumoniaMNISTConfig
    CLASSES = ["normal", "pneumonia"]

    def _npz(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_raw"):
            path = resolve_path(self.config.path, self.default_data, self.name,
                                "a MedMNIST .npz file with train/val/test images and labels")
            self._raw = read_medmnist(path, self.name)
        return self._raw

    def read(self):
        a = self._npz()
        f = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
        return f(a["train_images"]), a["train_labels"], f(a["test_images"]), a["test_labels"], self.CLASSES

    def load_data(self, seed: int) -> TaskData:
        cfg = self.config
        a = self._npz()
        f = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
        splits = {}
        for split, limit, off in (("train", cfg.limit_train, 0), ("val", cfg.limit_val, 1), ("test", cfg.limit_test, 2)):
            y = a[f"{split}_labels"]
            check_labels(y, 2, f"{self.name} {split}")
            idx = subsample(np.arange(len(y)), limit, y, cfg.split_seed + off)
            splits[split] = (a[f"{split}_images"][idx], y[idx])
        x, y = splits["train"]
        x = f(x)
        self._mean = torch.from_numpy(x.mean(axis=(0, 2, 3))).float()
        self._std = torch.from_numpy(x.std(axis=(0, 2, 3))).float().clamp_min(1e-3)
        self._set_class_weight(y)
        train = self._train_indices(np.arange(len(y)), y)
        t = lambda a_: torch.from_numpy(np.ascontiguousarray(a_))  # noqa: E731
        return TaskData(
            train=TensorDataset(t(x[train]), t(y[train])),
            val=TensorDataset(t(f(splits["val"][0])), t(splits["val"][1])),
            test=TensorDataset(t(f(splits["test"][0])), t(splits["test"][1])),
        )

    def io_spec(self) -> IOSpec:
        h, w = self._npz()["train_images"].shape[1:]
        return IOSpec("image", (1, h, w), 2, body_size=(h, w), extra={"classes": self.CLASSES})


# --------------------------------------------------------------------------------------
# Wisconsin breast cancer (tabular)
# --------------------------------------------------------------------------------------


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training split's statistics, stored in the model
    so that the exported file takes raw features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1).clone())
        self.register_buffer("std", std.view(1, -1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def tabular_stem(mean: torch.Tensor, std: torch.Tensor, channels: int) -> nn.Module:
    """Standardise, then a linear projection to ``channels`` with batch norm and ReLU."""
    return nn.Sequential(Standardize(mean, std), nn.Linear(mean.numel(), channels), nn.BatchNorm1d(channels), nn.ReLU())


class BreastCancerConfig(ComponentConfig):
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out as the test split (stratified)")
    val_fraction: float = Field(0.25, ge=0, lt=1, description="share of the rest held out as validation (stratified)")
    split_seed: int = Field(0, ge=0, description="seed of the splits, fixed across run seeds")
    imbalance: Imbalance = Field("weighted_loss", description="class-imbalance handling: none, weighted_loss or oversample")
    limit_train: Optional[int] = Field(None, ge=10, description="use at most this many training examples (stratified)")


class BreastCancerTask(BinaryMedicalMixin, Task):
    """Wisconsin diagnostic breast cancer (scikit-learn's bundled copy of the UCI data):
    30 features of cell nuclei, 212 malignant / 357 benign. No official split: a
    stratified ``test_fraction`` is held out with ``split_seed``."""

    name = "breast_cancer"
    description = "Wisconsin breast cancer (scikit-learn, tabular), AUC/accuracy/sensitivity/specificity"
    Config = BreastCancerConfig
    CLASSES = ["benign", "malignant"]

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if not hasattr(self, "_cache"):
            from sklearn.datasets import load_breast_cancer

            d = load_breast_cancer()
            # scikit-learn codes malignant as 0; the disease is the positive class here.
            self._cache = (d.data.astype(np.float32), (d.target == 0).astype(np.int64), list(d.feature_names))
        return self._cache

    def load_data(self, seed: int) -> TaskData:
        cfg = self.config
        x, y, _ = self._arrays()
        rest, test = stratified_split(y, cfg.test_fraction, cfg.split_seed)
        rest = subsample(rest, cfg.limit_train, y, cfg.split_seed)
        tr, va = stratified_split(y[rest], cfg.val_fraction, cfg.split_seed)
        train, val = rest[tr], rest[va]
        self._mean = torch.from_numpy(x[train].mean(axis=0))
        self._std = torch.from_numpy(x[train].std(axis=0)).clamp_min(1e-6)
        self._set_class_weight(y[train])
        train = self._train_indices(train, y)
        t = lambda i: TensorDataset(torch.from_numpy(x[i]), torch.from_numpy(y[i]))  # noqa: E731
        return TaskData(train=t(train), val=t(val), test=t(test))

    def io_spec(self) -> IOSpec:
        x, _, features = self._arrays()
        return IOSpec("tabular", (x.shape[1],), 2, extra={"classes": self.CLASSES, "features": [str(f) for f in features]})

    def make_stem(self, channels: int) -> nn.Module:
        if not hasattr(self, "_mean"):
            raise RuntimeError("load_data() must run before make_stem()")
        return tabular_stem(self._mean, self._std, channels)

    def make_head(self, channels: int) -> nn.Module:
        return nn.Linear(channels, 2)
