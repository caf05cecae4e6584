"""Image classification tasks: digits (built in), Fashion-MNIST (IDX files), CIFAR-10 /
CIFAR-100 (python-pickle batches), a user's image folder. Registered by the ``vision``
plugin."""

from dnas_core import hookimpl

from .tasks import (
    CIFAR10Task,
    CIFAR100Task,
    DigitsTask,
    FashionMNISTTask,
    ImageFolderTask,
    ImageTask,
)

__all__ = ["CIFAR10Task", "CIFAR100Task", "DigitsTask", "FashionMNISTTask", "ImageFolderTask", "ImageTask"]


@hookimpl
def dnas_register_tasks():
    return [DigitsTask, FashionMNISTTask, CIFAR10Task, CIFAR100Task, ImageFolderTask]
