"""The ``seq1d`` cell search space for sequences, and the hand-designed sequence
baselines ``seq_cnn`` and ``seq_bigru`` (registered by the ``seq1d`` plugin)."""

from dnas_core import hookimpl

from .baselines import SeqBiGRUSpace, SeqCNNSpace
from .ops import EDGES, OPS
from .space import Seq1DSpace, arch_string, edit_distance, parse_arch_string

__all__ = ["EDGES", "OPS", "Seq1DSpace", "SeqBiGRUSpace", "SeqCNNSpace", "arch_string", "edit_distance",
           "parse_arch_string"]


@hookimpl
def dnas_register_search_spaces():
    return [Seq1DSpace, SeqCNNSpace, SeqBiGRUSpace]
