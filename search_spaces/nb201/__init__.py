"""The NAS-Bench-201 cell search space (registered by the ``nb201`` plugin)."""

from dnas_core import hookimpl

from .ops import EDGES, OPS
from .space import NB201Space, arch_string, parse_arch_string

__all__ = ["EDGES", "OPS", "NB201Space", "arch_string", "parse_arch_string"]


@hookimpl
def dnas_register_search_spaces():
    return [NB201Space]
