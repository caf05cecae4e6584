"""An example third-party dnas plugin: a task of procedurally drawn shapes.

Each image is a circle, a square, a triangle or a cross at a random position and size
on a noisy background. The data is generated from the config's seed, so the task
needs no files. It shows everything a task plugin needs: a ``Config`` model, data
splits, the stem and head for its modality, and one registration hook.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from dnas_core import ComponentConfig, IOSpec, Task, TaskData, hookimpl

CLASSES = ("circle", "square", "triangle", "cross")


class ShapesConfig(ComponentConfig):
    per_class: int = Field(150, ge=4, description="images generated per class")
    size: int = Field(16, ge=8, le=64, description="image side in pixels")
    noise: float = Field(0.15, ge=0, le=1, description="std of the Gaussian background noise")
    data_seed: int = Field(0, ge=0, description="seed of the generated data (fixed across run seeds)")


def draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One shape as a float32 image in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.2, 0.35) * size
    cy, cx = rng.uniform(r, size - r, size=2)
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        mask = dy**2 + dx**2 <= r**2
    elif kind == "square":
        mask = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    elif kind == "triangle":
        mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
    else:
        t = max(1.0, r * 0.25)
        mask = ((np.abs(dy) <= t) & (np.abs(dx) <= r)) | ((np.abs(dx) <= t) & (np.abs(dy) <= r))
    return mask.astype(np.float32)


class ShapesTask(Task):
    """Classify synthetic shapes (circle, square, triangle, cross)."""

    name = "shapes"
    description = "synthetic shapes, 4 classes (example third-party plugin)"
    Config = ShapesConfig

    def load_data(self, seed: int) -> TaskData:
        cfg = self.config
        rng = np.random.default_rng(cfg.data_seed)
        images, labels = [], []
        for label, kind in enumerate(CLASSES):
            for _ in range(cfg.per_class):
                img = draw(kind, cfg.size, rng) + rng.normal(0, cfg.noise, (cfg.size, cfg.size)).astype(np.float32)
                images.append(np.clip(img, 0, 1)[None])
                labels.append(label)
        x = torch.from_numpy(np.stack(images))
        y = torch.tensor(labels)
        order = torch.from_numpy(rng.permutation(len(y)))
        x, y = x[order], y[order]
        n = len(y)
        a, b = int(0.6 * n), int(0.8 * n)
        return TaskData(TensorDataset(x[:a], y[:a]), TensorDataset(x[a:b], y[a:b]), TensorDataset(x[b:], y[b:]))

    def io_spec(self) -> IOSpec:
        s = self.config.size
        return IOSpec("image", (1, s, s), len(CLASSES), body_size=(s, s))

    def make_stem(self, channels: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def make_head(self, channels: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, len(CLASSES)))


@hookimpl
def dnas_register_tasks():
    return [ShapesTask]
