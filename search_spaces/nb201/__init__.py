"""The NAS-Bench-201 cell search space (registered by the ``nb201`` plugin).

The plugin also implements ``dnas_search_end``: a run over this space gets the
benchmark-table accuracies of its derived cell in its report (see :mod:`.table_report`).
"""

from dnas_core import hookimpl

from .ops import EDGES, OPS
from .space import NB201Space, arch_string, parse_arch_string
from .table_report import dnas_search_end  # noqa: F401  (the run report's NAS-Bench-201 section)

__all__ = ["EDGES", "OPS", "NB201Space", "arch_string", "parse_arch_string"]


@hookimpl
def dnas_register_search_spaces():
    return [NB201Space]
