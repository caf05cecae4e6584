"""The DARTS cell search space (registered by the ``darts-space`` plugin)."""

from dnas_core import hookimpl

from .ops import EDGES, OPS
from .space import DARTSSpace, format_genotype, parse_genotype
from .supernet import SearchCell, reference_cell_forward

__all__ = ["EDGES", "OPS", "DARTSSpace", "SearchCell", "format_genotype", "parse_genotype", "reference_cell_forward"]


@hookimpl
def dnas_register_search_spaces():
    return [DARTSSpace]
