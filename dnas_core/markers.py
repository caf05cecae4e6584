"""The one marker pair every dnas plugin uses.

``hookspec`` marks the specifications in :mod:`dnas_core.hookspecs`; plugins mark
their implementations with ``hookimpl``. Both are re-exported from ``dnas_core``.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "dnas"
ENTRY_POINT_GROUP = "dnas.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
