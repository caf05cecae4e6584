"""Image classification tasks.

The stem normalises raw pixels in [0, 1] with the training set's mean and standard
deviation, then applies a 3x3 convolution and batch norm; the head is global average
pooling and a linear classifier. Normalisation lives inside the model, so the exported
ONNX file takes raw pixels.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dnas_core import ComponentConfig, DataError, IOSpec, Task, TaskData
from dnas_tasks._common import classification_splits, resolve_path, tensor_task_data

from .readers import read_idx, read_image_folder


class AugmentConfig(ComponentConfig):
    crop_padding: int = Field(0, ge=0, description="random crop after zero-padding by this many pixels (0: off)")
    flip: bool = Field(False, description="random horizontal flip")
    cutout: int = Field(0, ge=0, description="side of a random square set to zero (0: off)")


class ImageConfig(ComponentConfig):
    val_fraction: float = Field(0.5, ge=0, lt=1, description="share of the training data held out as validation")
    limit_train: Optional[int] = Field(None, ge=10, description="use at most this many training examples (stratified)")
    limit_test: Optional[int] = Field(None, ge=10, description="use at most this many test examples (stratified)")
    split_seed: int = Field(0, ge=0, description="seed of the train/val(/test) split, fixed across run seeds")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class Normalize(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.view(1, -1, 1, 1).clone())
        self.register_buffer("std", std.view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ClassifierHead(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class ImageTask(Task):
    """Base of image classification tasks: subclasses implement :meth:`read`."""

    Config = ImageConfig
    primary_metric = "accuracy"
    #: Whether the data set has an official test split (else test_fraction is held out).
    official_test: ClassVar[bool] = True
    test_fraction: ClassVar[float] = 0.2

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
        """(train_x (N,C,H,W) float32 in [0,1], train_y, test_x, test_y, class names)."""
        raise NotImplementedError

    def _arrays(self):
        if not hasattr(self, "_cache"):
            self._cache = self.read()
        return self._cache

    def load_data(self, seed: int) -> TaskData:
        splits = classification_splits(self.name, self.config, self._arrays(), self.test_fraction)
        x_train = splits[0]
        self._mean = torch.from_numpy(x_train.mean(axis=(0, 2, 3))).float()
        self._std = torch.from_numpy(x_train.std(axis=(0, 2, 3))).float().clamp_min(1e-3)
        return tensor_task_data(*splits)

    def io_spec(self) -> IOSpec:
        x, _, _, _, classes = self._arrays()
        c, h, w = x.shape[1:]
        return IOSpec("image", (c, h, w), len(classes), body_size=(h, w), extra={"classes": list(classes)})

    def make_stem(self, channels: int) -> nn.Module:
        spec = self.io_spec()
        if not hasattr(self, "_mean"):
            raise RuntimeError("load_data() must run before make_stem()")
        return nn.Sequential(
            Normalize(self._mean, self._std),
            nn.Conv2d(spec.input_shape[0], channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def make_head(self, channels: int) -> nn.Module:
        return ClassifierHead(channels, self.io_spec().num_outputs)

    def has_augmentation(self) -> bool:
        aug = self.config.augment
        return bool(aug.crop_padding or aug.flip or aug.cutout)

    def augment(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        aug = self.config.augment
        if not self.has_augmentation():
            return inputs
        # keep the caller's memory format (the backend chose it)
        fmt = (torch.channels_last if not inputs.is_contiguous() and inputs.is_contiguous(memory_format=torch.channels_last)
               else torch.contiguous_format)
        n, _, h, w = inputs.shape
        g = generator
        dev = inputs.device
        if aug.crop_padding:
            p = aug.crop_padding
            padded = torch.nn.functional.pad(inputs, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=g).to(dev)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=g).to(dev)
            rows = (dy[:, None] + torch.arange(h, device=dev)[None])[:, None, :, None].expand(n, inputs.shape[1], h, w + 2 * p)
            padded = padded.gather(2, rows)
            cols = (dx[:, None] + torch.arange(w, device=dev)[None])[:, None, None, :].expand(n, inputs.shape[1], h, w)
            inputs = padded.gather(3, cols)
        if aug.flip:
            flip = (torch.rand(n, generator=g) < 0.5).to(dev)
            inputs = torch.where(flip[:, None, None, None], inputs.flip(3), inputs)
        if aug.cutout:
            s = aug.cutout
            cy = torch.randint(0, h, (n,), generator=g).to(dev)
            cx = torch.randint(0, w, (n,), generator=g).to(dev)
            ys = torch.arange(h, device=dev)[None, :, None]
            xs = torch.arange(w, device=dev)[None, None, :]
            mask = ((ys - cy[:, None, None]).abs() <= s // 2) & ((xs - cx[:, None, None]).abs() <= s // 2)
            inputs = inputs.masked_fill(mask[:, None], 0.0)
        return inputs.contiguous(memory_format=fmt)


class DigitsTask(ImageTask):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): the
    embedded default that needs no download. 20 % is held out as the test split."""

    name = "digits"
    description = "scikit-learn digits, 8x8 grey, 10 classes (bundled, no download)"
    official_test = False

    def read(self):
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images.astype(np.float32) / 16.0)[:, None]
        return x, d.target.astype(np.int64), None, None, [str(i) for i in range(10)]


class FashionMNISTConfig(ImageConfig):
    path: Optional[str] = Field(
        None, description="folder with the four IDX files (default: <data root>/vision/fashion-mnist)"
    )


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class FashionMNISTTask(ImageTask):
    """Fashion-MNIST from its original IDX files (28x28 grey, 10 classes, official
    60,000 / 10,000 split)."""

    name = "fashion_mnist"
    default_data = "vision/fashion-mnist"
    description = "Fashion-MNIST from IDX files (official train/test split)"
    Config = FashionMNISTConfig

    FILES = {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }

    def read(self):
        root = resolve_path(self.config.path, self.default_data, "fashion_mnist", "a folder with the IDX files "
                            + ", ".join(f"{v}[.gz]" for v in self.FILES.values()))
        arrays = {}
        for key, stem in self.FILES.items():
            cands = [root / f"{stem}.gz", root / stem]
            found = next((c for c in cands if c.exists()), None)
            if found is None:
                raise DataError(f"fashion_mnist: {cands[0]} not found; expected the IDX file {stem}[.gz] in {root}")
            arrays[key] = read_idx(found)
        for split in ("train", "test"):
            xs, ys = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
                raise DataError(f"fashion_mnist: {split} images {xs.shape} and labels {ys.shape} do not match")
        f = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
        return (f(arrays["train_x"]), arrays["train_y"].astype(np.int64), f(arrays["test_x"]),
                arrays["test_y"].astype(np.int64), FASHION_CLASSES)


class CIFAR10Config(ImageConfig):
    path: Optional[str] = Field(
        None, description="the unpacked folder cifar-10-batches-py, a folder holding it, or the archive "
        "cifar-10-python.tar.gz (default: <data root>/vision/cifar-10-batches-py)")


class CIFAR10Task(ImageTask):
    """CIFAR-10 from its original python-pickle batches (32x32 RGB, 10 classes,
    official 50,000 / 10,000 split). The pickles are read with a restricted unpickler
    that allows numpy arrays and plain containers only."""

    name = "cifar10"
    description = "CIFAR-10 from the python-pickle batches or their .tar.gz (official train/test split)"
    Config = CIFAR10Config
    which: ClassVar[str] = "cifar10"
    default_data = "vision/cifar-10-batches-py"

    def _label(self) -> str:
        return "fine"

    def read(self):
        from .readers import _cifar_expected, read_cifar

        root = resolve_path(self.config.path, self.default_data, self.which, _cifar_expected(self.which))
        tx, ty, vx, vy, classes = read_cifar(self.which, root, self._label())
        f = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
        return f(tx), ty, f(vx), vy, classes


class CIFAR100Config(ImageConfig):
    path: Optional[str] = Field(
        None, description="the unpacked folder cifar-100-python, a folder holding it, or the archive "
        "cifar-100-python.tar.gz (default: <data root>/vision/cifar-100-python)")
    label: Literal["fine", "coarse"] = Field("fine", description="fine: the 100 classes; coarse: the 20 superclasses")


class CIFAR100Task(CIFAR10Task):
    """CIFAR-100 from its original python-pickle batches (32x32 RGB, 100 fine or 20
    coarse classes, official 50,000 / 10,000 split)."""

    name = "cifar100"
    description = "CIFAR-100 (fine or coarse labels) from the python-pickle batches or their .tar.gz"
    Config = CIFAR100Config
    default_data = "vision/cifar-100-python"
    which: ClassVar[str] = "cifar100"

    def _label(self) -> str:
        return self.config.label


class ImageFolderConfig(ImageConfig):
    path: str = Field(..., description="root folder laid out as root/<class_name>/*.png")
    size: Optional[tuple[int, int]] = Field(None, description="resize to (height, width); default: the first image's size")
    channels: int = Field(3, description="1 for grey, 3 for RGB")
    test_path: Optional[str] = Field(None, description="a separate test folder with the same classes (else 20 % is held out)")


class ImageFolderTask(ImageTask):
    """A user's images in ``root/<class_name>/*.png`` (the usual ImageFolder layout)."""

    name = "image_folder"
    description = "a folder of images, one sub-folder per class"
    Config = ImageFolderConfig
    official_test = False

    def read(self):
        cfg = self.config
        x, y, classes = read_image_folder(cfg.path, cfg.size, cfg.channels)
        if cfg.test_path:
            tx, ty, tclasses = read_image_folder(cfg.test_path, tuple(x.shape[2:]), cfg.channels)
            if tclasses != classes:
                raise DataError(f"{cfg.test_path}: test classes {tclasses} differ from training classes {classes}")
            return x, y, tx, ty, classes
        return x, y, None, None, classes
