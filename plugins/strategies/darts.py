"""DARTS (Liu et al., 2019), first order: softmax-relaxed mixing, alternating
architecture (Adam, validation batch) and weight (SGD, training batch) updates."""

from __future__ import annotations

from dnas_core import hookimpl

from .differentiable import DifferentiableConfig, DifferentiableStrategy


class DARTSConfig(DifferentiableConfig):
    pass


class DARTS(DifferentiableStrategy):
    """Differentiable architecture search, first-order approximation."""

    name = "darts"
    description = "DARTS (first order): softmax relaxation, alternating updates"
    Config = DARTSConfig


@hookimpl
def dnas_register_strategies():
    return [DARTS]
