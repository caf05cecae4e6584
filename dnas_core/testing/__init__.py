"""Contract test suites for plugin authors.

Subclass a contract in your own test module, implement its ``make_*`` methods, and
pytest collects the whole battery::

    from dnas_core.testing import TaskContract

    class TestMyTask(TaskContract):
        def make_task(self):
            return MyTask(MyTask.Config(path="tests/data/slice.csv"))

dnas runs the same suites over every built-in component.
"""

try:
    import pytest  # noqa: F401 - the suites are pytest classes
except ImportError as exc:  # a plain `pip install dnas` has no pytest
    raise ImportError("dnas_core.testing needs pytest: pip install \"dnas[test]\"") from exc

from .contracts import BackendContract, SearchSpaceContract, StrategyContract, TaskContract, tiny_manifest

__all__ = ["BackendContract", "SearchSpaceContract", "StrategyContract", "TaskContract", "tiny_manifest"]
