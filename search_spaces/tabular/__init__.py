"""The tabular MLP search space (``tabular_mlp``), with an MLP baseline."""

from dnas_core import hookimpl

from .space import TabularSpace

__all__ = ["TabularSpace"]


@hookimpl
def dnas_register_search_spaces():
    return [TabularSpace]
