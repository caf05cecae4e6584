"""The example plugin's own tests: dnas's contract suites, subclassed."""

from dnas_core.testing import StrategyContract, TaskContract, tiny_manifest

from dnas_example_shapes import ShapesTask


class TestShapesTask(TaskContract):
    def make_task(self):
        return ShapesTask(ShapesTask.Config(per_class=20))


class TestSearchOnShapes(StrategyContract):
    def manifest(self):
        return tiny_manifest(task={"type": "shapes", "per_class": 20})
