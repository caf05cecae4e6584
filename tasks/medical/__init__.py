"""Medical tasks: PneumoniaMNIST (MedMNIST .npz, image) and Wisconsin breast cancer
(scikit-learn, tabular), with class-imbalance handling and AUC / accuracy /
sensitivity / specificity. Registered by the ``medical`` plugin."""

from dnas_core import hookimpl

from .tasks import BreastCancerTask, PneumoniaMNISTTask, binary_metrics, read_medmnist

__all__ = ["BreastCancerTask", "PneumoniaMNISTTask", "binary_metrics", "read_medmnist"]


@hookimpl
def dnas_register_tasks():
    return [PneumoniaMNISTTask, BreastCancerTask]
