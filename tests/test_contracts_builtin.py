"""The contract suites applied to dnas's own vision task, NB201 space, DARTS and the
CPU backend (other built-ins add their own subclasses next to their tests)."""

from __future__ import annotations

from dnas_core.testing import BackendContract, SearchSpaceContract, StrategyContract, TaskContract, tiny_manifest


def _digits(pm, **cfg):
    return pm.registries.tasks.create("digits", {"limit_train": 200, "limit_test": 60, **cfg})


class TestDigitsTask(TaskContract):
    def make_task(self):
        from dnas_core import get_plugin_manager

        return _digits(get_plugin_manager())


class TestNB201Space(SearchSpaceContract):
    def make_space(self):
        from dnas_core import get_plugin_manager

        return get_plugin_manager().registries.spaces.create("nb201", {"C": 4, "N": 1})

    def make_task(self):
        from dnas_core import get_plugin_manager

        return _digits(get_plugin_manager())


class TestDARTS(StrategyContract):
    def manifest(self):
        return tiny_manifest()


class TestCPUBackend(BackendContract):
    def make_backend(self):
        from dnas_core import get_plugin_manager

        return get_plugin_manager().registries.backends.create("cpu", {"threads": 2})
