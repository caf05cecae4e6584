"""Lazy imports of optional integrations, with an error that says how to install them."""

from __future__ import annotations

import importlib
from typing import Any

from dnas_core import UsageError


def require(module: str, extra: str, package: str | None = None) -> Any:
    """Import ``module`` or raise a :class:`UsageError` naming the ``pip install`` that
    provides it (the dnas extra and the plain package)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"the {extra} callback needs the '{package or extra}' package, which is not installed "
            f"({exc}); install it with: pip install 'dnas[{extra}]'  (or: pip install {package or extra})"
        ) from None
