"""Recommendation spaces: ``recsys`` (embedding sizes per field + interaction operators,
AutoFIS / NASRec style) and ``neumf`` (the NeuMF baseline as a one-architecture space)."""

from dnas_core import hookimpl

from .space import NeuMFSpace, RecsysSpace

__all__ = ["NeuMFSpace", "RecsysSpace"]


@hookimpl
def dnas_register_search_spaces():
    return [RecsysSpace, NeuMFSpace]
