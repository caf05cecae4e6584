"""Exceptions with a meaning for the user.

Every error the CLI reports on one line derives from :class:`DnasError`. Its
``exit_code`` decides the process status: 2 for bad usage or a bad manifest, 1 for a
run that failed.
"""

from __future__ import annotations


def first_line(text: object, default: str = "") -> str:
    """The first non-empty line of ``str(text)`` (a library's error message is often many
    lines, with advice that does not apply), or ``default``."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else default


class DnasError(Exception):
    """Base of all errors dnas reports to the user on one line."""

    exit_code = 1


class UsageError(DnasError):
    """Bad command-line usage, a bad manifest, or a bad path given by the user."""

    exit_code = 2


class ManifestError(UsageError):
    """A manifest that does not validate. ``source`` names the file at fault."""

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class ComponentNotFoundError(UsageError):
    """A component name that no installed plugin registers."""


class PluginError(DnasError):
    """A plugin failed to load or one of its hooks raised.

    The message names the plugin, its distribution and the entry point.
    """

    exit_code = 2


class DataError(UsageError):
    """Data missing or malformed: the message names the path and the expected format."""


class IncompatibleError(UsageError):
    """Two components that do not fit together (e.g. a task and an unfit search space)."""


class RunFailed(DnasError):
    """A run that started but could not finish (divergence, an I/O failure, ...)."""


class StopRun(DnasError):
    """Raised by an observer hook to end a run on purpose (e.g. a pruned tuning trial).

    :meth:`DnasPluginManager.notify` lets it through instead of reporting it as a
    plugin error; the run ends with it like with any other exception.
    """
