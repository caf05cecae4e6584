"""The NAS-Bench-201 tabular evaluator: a query is a lookup of the cell's mean test
accuracy after 200 epochs in the benchmark's table (CIFAR-10, CIFAR-100 or
ImageNet16-120), so searches can be compared by the queries they need."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from dnas_core import ComponentConfig, Evaluator, Genotype, IncompatibleError

#: Facts of the three data sets, for the run store's task descriptor.
DATASET_FACTS = {
    "cifar10": {"num_outputs": 10, "input_shape": [3, 32, 32], "train_size": 50000},
    "cifar100": {"num_outputs": 100, "input_shape": [3, 32, 32], "train_size": 50000},
    "imagenet16": {"num_outputs": 120, "input_shape": [3, 16, 16], "train_size": 151700},
}


class NB201TableConfig(ComponentConfig):
    dataset: Literal["cifar10", "cifar100", "imagenet16"] = Field(
        "cifar10", description="which column of the table answers queries (imagenet16 = ImageNet16-120)")
    path: Optional[str] = Field(
        None, description="the table CSV (default: $DNAS_NB201_TABLE, else nas/nas-bench-201-test-accuracy.csv "
                                  "under $DNAS_DATA_ROOT or ../shared/data)")


class NB201TableEvaluator(Evaluator):
    """Test accuracy (percent) of a nb201 cell from the NAS-Bench-201 table."""

    name = "nb201_table"
    description = "NAS-Bench-201 table lookup (CIFAR-10 / CIFAR-100 / ImageNet16-120 test accuracy)"
    Config = NB201TableConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.table = None

    @property
    def metric(self) -> str:
        return f"nb201_{self.config.dataset}_test_accuracy"

    def prepare(self, run: Any = None) -> None:
        if run is not None and getattr(run, "space", None) is not None and run.space.name != "nb201":
            raise IncompatibleError(
                f"evaluator nb201_table scores NAS-Bench-201 cells, but the run's space is {run.space.name!r}")
        from dnas_search_spaces.nb201.table import load_table

        self.table = load_table(self.config.path)

    def score(self, genotype: Genotype) -> float:
        if self.table is None:
            self.setup(None)
        return getattr(self.table.lookup(genotype), self.config.dataset)

    def task_descriptor(self, run: Any = None) -> dict[str, Any]:
        ds = self.config.dataset
        return {"task": f"nb201/{ds}", "benchmark": "NAS-Bench-201", "dataset": ds, "modality": "image",
                "primary_metric": "test_accuracy", **DATASET_FACTS[ds]}
