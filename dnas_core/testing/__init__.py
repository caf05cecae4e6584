"""Contract test suites for plugin authors.

Subclass a contract in your own test module, implement its ``make_*`` methods, and
pytest collects the whole battery::

    from dnas_core.testing import TaskContract

    class TestMyTask(TaskContract):
        def make_task(self):
            return MyTask(MyTask.Config(path="tests/data/slice.csv"))

dnas runs the same suites over every built-in component.
"""

from .contracts import BackendContract, SearchSpaceContract, StrategyContract, TaskContract, tiny_manifest

__all__ = ["BackendContract", "SearchSpaceContract", "StrategyContract", "TaskContract", "tiny_manifest"]
