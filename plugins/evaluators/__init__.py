"""Evaluators: how query-based strategies score genotypes (table lookup, weight
sharing, short training from scratch)."""

from dnas_core import hookimpl

from .nb201_table import NB201TableEvaluator
from .short_training import ShortTrainingEvaluator
from .weight_sharing import WeightSharingEvaluator

__all__ = ["NB201TableEvaluator", "ShortTrainingEvaluator", "WeightSharingEvaluator"]


@hookimpl
def dnas_register_evaluators():
    return [NB201TableEvaluator, WeightSharingEvaluator, ShortTrainingEvaluator]
