"""Callbacks (loggers): components that observe a run through the lifecycle hooks.

Subclass :class:`Callback`, implement any of the run-lifecycle hooks of
:mod:`dnas_core.hookspecs` as methods marked ``@dnas_core.hookimpl``, and register
the class with ``dnas_register_callbacks``. A manifest's ``callbacks:`` list
instantiates it for one run.
"""

from __future__ import annotations

from .components import Component


class Callback(Component):
    """Base class of callbacks."""

    def close(self) -> None:
        """Release files or connections at the end of the run."""
