"""The chain-structured mobile search space (FBNet / ProxylessNAS). Registered by the
``mobile`` plugin."""

from dnas_core import hookimpl

from .space import MobileConfig, MobileSpace, StageConfig

__all__ = ["MobileConfig", "MobileSpace", "StageConfig"]


@hookimpl
def dnas_register_search_spaces():
    return [MobileSpace]
