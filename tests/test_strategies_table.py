"""The NAS-Bench-201 accuracy table reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnas_core import UsageError
from dnas_search_spaces.nb201.table import NB201Table, load_table, to_arch_string

BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_SKIP = ("skip_connect",) * 6


@pytest.fixture
def table(shared_data):
    path = shared_data / "nas" / "nas-bench-201-test-accuracy.csv"
    if not path.is_file():
        pytest.skip(f"NAS-Bench-201 table not found at {path}")
    return load_table(path)  # cached: parsed once per session


def test_known_rows(table: NB201Table) -> None:
    assert len(table) == 15625
    best = table.best("cifar10")
    assert best.arch == BEST_C10
    assert round(best.cifar10, 2) == 94.37
    assert round(table.best("cifar100").cifar100, 2) == 73.51
    assert round(table.best("imagenet16").imagenet16, 2) == 47.31
    collapsed = table.lookup(ALL_SKIP)
    assert round(collapsed.cifar10, 2) == 54.30 and round(collapsed.cifar100, 2) == 15.61
    assert table.percentile(best.cifar10) < 0.02  # the top cell (a near-tie at 94.37 makes two)
    assert table.percentile(0.0) == 100.0


def test_lookup_accepts_genotypes_strings_and_ops(table: NB201Table, pm) -> None:
    space = pm.registries.spaces.create("nb201", {})
    g = space.from_string(BEST_C10)
    assert table.lookup(g) == table.lookup(BEST_C10) == table.lookup(tuple(g.spec))
    with pytest.raises(ValueError, match="6 ops"):
        to_arch_string(("skip_connect",) * 5)


def test_bad_paths_and_formats_are_named(tmp_path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(UsageError, match="nope.csv"):
        load_table(missing)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match=r"bad\.csv.*missing column"):
        NB201Table.from_csv(bad)
    header = "CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,ImageNetTestAccuracy200Epochs,ArchitectureString\n"
    broken = tmp_path / "broken.csv"
    broken.write_text(header + "1,2,3,|bogus~0|+|a~0|b~1|+|c~0|d~1|e~2|\n")
    with pytest.raises(UsageError, match=r"broken\.csv, line 2"):
        NB201Table.from_csv(broken)


def test_default_path_follows_the_data_root(tmp_path, monkeypatch) -> None:
    """Without $DNAS_NB201_TABLE the table is looked up under $DNAS_DATA_ROOT, the
    root every task reads its data from; $DNAS_NB201_TABLE still wins."""
    from dnas_search_spaces.nb201.table import default_table_path

    monkeypatch.delenv("DNAS_NB201_TABLE", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    monkeypatch.setenv("DNAS_DATA_ROOT", str(tmp_path))
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / "nas-bench-201-test-accuracy.csv").write_text("x\n")
    assert default_table_path() == tmp_path / "nas" / "nas-bench-201-test-accuracy.csv"
    (tmp_path / "nas" / "nas-bench-201-test-accuracy.csv").unlink()
    # Not under the data root: the copy beside the source checkout is next (if there is
    # one), else the data-root path is returned and the error names the variables.
    from dnas_search_spaces.nb201 import table as table_module

    checkout = Path(table_module.__file__).resolve().parents[2] / table_module.DEFAULT_RELATIVE_PATH
    assert default_table_path() == (checkout if checkout.is_file()
                                    else tmp_path / "nas" / "nas-bench-201-test-accuracy.csv")
    with pytest.raises(UsageError, match="DNAS_DATA_ROOT"):
        NB201Table.from_csv(tmp_path / "nas" / "nas-bench-201-test-accuracy.csv")
    monkeypatch.setenv("DNAS_NB201_TABLE", str(tmp_path / "t.csv"))
    assert default_table_path() == tmp_path / "t.csv"
