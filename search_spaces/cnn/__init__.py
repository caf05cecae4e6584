"""``small_cnn``: a hand-designed small CNN for image tasks, the baseline searched image
architectures are compared with (a one-architecture space for ``strategy: fixed``)."""

from dnas_core import hookimpl

from .space import SmallCNNSpace

__all__ = ["SmallCNNSpace"]


@hookimpl
def dnas_register_search_spaces():
    return [SmallCNNSpace]
