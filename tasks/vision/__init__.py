"""Image classification tasks: digits (built in), Fashion-MNIST (IDX files), a user's
image folder. Registered by the ``vision`` plugin."""

from dnas_core import hookimpl

from .tasks import DigitsTask, FashionMNISTTask, ImageFolderTask, ImageTask

__all__ = ["DigitsTask", "FashionMNISTTask", "ImageFolderTask", "ImageTask"]


@hookimpl
def dnas_register_tasks():
    return [DigitsTask, FashionMNISTTask, ImageFolderTask]
