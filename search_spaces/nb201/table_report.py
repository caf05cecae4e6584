"""The ``dnas_search_end`` hook of the nb201 plugin: whenever a run searched the
NAS-Bench-201 space, look the derived cell up in the benchmark's accuracy table, add a
section to the run report and write ``nb201_table.json`` into the run directory.

The table is found as :func:`.table.load_table` does (``$DNAS_NB201_TABLE``, else
``nas/nas-bench-201-test-accuracy.csv`` under ``$DNAS_DATA_ROOT`` or ``../shared/data``). Without the table the run
goes on; the report says where the table was looked for.
"""

from __future__ import annotations

from typing import Any

from dnas_core import hookimpl
from dnas_core.progress import log

from .table import DATASETS, TABLE_ENV, default_table_path, load_table

#: Reference points printed next to the derived cell (CIFAR-10 test accuracy, %).
OPTIMUM_C10 = 94.37
COLLAPSED_C10 = 54.30


def table_section(genotype: Any) -> tuple[str, dict[str, Any] | None]:
    """The Markdown report section and the JSON record for a nb201 genotype."""
    path = default_table_path()
    if not path.is_file():
        return (f"## NAS-Bench-201 table\n\nNot looked up: no table at `{path}` (set ${TABLE_ENV} to "
                "`nas-bench-201-test-accuracy.csv`).", None)
    table = load_table(path)
    acc = table.lookup(genotype)
    record = {**acc.to_json(), "table": str(table.source),
              "percentile": {d: table.percentile(getattr(acc, d), d) for d in DATASETS},
              "best": {d: getattr(table.best(d), d) for d in DATASETS}}
    rows = [f"| {label} | {getattr(acc, d):.2f} | top {record['percentile'][d]:.2f} % | {record['best'][d]:.2f} |"
            for d, label in zip(DATASETS, ("CIFAR-10", "CIFAR-100", "ImageNet16-120"), strict=True)]
    text = "\n".join([
        "## NAS-Bench-201 table",
        "",
        f"The derived cell `{acc.arch}` (NAS-Bench-201 index {acc.index}), trained by the benchmark for "
        "200 epochs:",
        "",
        "| data set | test accuracy (%) | rank among 15,625 cells | best cell |",
        "|---|---|---|---|",
        *rows,
        "",
        f"For reference: DARTS's collapsed all-skip cell reaches {COLLAPSED_C10:.2f} % on CIFAR-10, the optimum "
        f"{OPTIMUM_C10:.2f} %.",
    ])
    return text, record


@hookimpl
def dnas_search_end(run, genotype, summary) -> None:
    if genotype.space != "nb201":
        return
    text, record = table_section(genotype)
    run.state.setdefault("report_sections", []).append(text)
    if record is not None:
        run.run_dir.write_json("nb201_table.json", record)
        log(f"[search] NAS-Bench-201 table: CIFAR-10 {record['cifar10']:.2f} %, CIFAR-100 {record['cifar100']:.2f} %, "
            f"ImageNet16-120 {record['imagenet16']:.2f} %")
