"""The plugin manager and the registries."""

from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest
import torch

from dnas_core import ComponentConfig, PluginError, Task, get_plugin_manager, hookimpl
from dnas_core.errors import ComponentNotFoundError
from dnas_core.plugin_manager import _load_entry_points, DnasPluginManager
from dnas_core.registry import Registry


def _task_class(name: str):
    class Cfg(ComponentConfig):
        size: int = 3

    return type(f"T_{name}", (Task,), {"name": name, "Config": Cfg})


def test_builtins_are_plugins_found_through_entry_points(pm):
    names = set(pm.info)
    assert {"vision", "nb201", "darts", "onnx", "torch-backends"} <= names
    assert pm.info["nb201"].distribution == "dnas"
    assert "digits" in pm.registries.tasks and "nb201" in pm.registries.spaces


def test_core_imports_no_builtin():
    import subprocess

    code = "import sys, dnas_core.orchestrator, dnas_core.cli; print([m for m in sys.modules if m.startswith(('dnas_tasks','dnas_plugins','dnas_search_spaces'))])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_block_list_disables_a_builtin(monkeypatch):
    monkeypatch.setenv("DNAS_DISABLE_PLUGINS", "darts, csv-logger")
    pm = get_plugin_manager()
    assert "darts" not in pm.registries.strategies
    assert "csv" not in pm.registries.callbacks
    assert "nb201" in pm.registries.spaces


def test_extra_plugin_registers_components():
    mod = types.ModuleType("my_plugin")
    T = _task_class("my_task")
    mod.dnas_register_tasks = hookimpl(lambda: [T])
    pm = get_plugin_manager(extra_plugins=[mod])
    assert pm.registries.tasks.get("my_task") is T


def test_duplicate_component_names_name_both_plugins():
    a, b = types.ModuleType("plugin_a"), types.ModuleType("plugin_b")
    a.dnas_register_tasks = hookimpl(lambda: [_task_class("dup")])
    b.dnas_register_tasks = hookimpl(lambda: [_task_class("dup")])
    with pytest.raises(PluginError, match=r"'dup' is registered twice.*plugin_a.*plugin_b|'dup' is registered twice.*plugin_b.*plugin_a"):
        get_plugin_manager(extra_plugins=[a, b], autoload=False)


def test_register_hook_that_raises_names_the_plugin():
    bad = types.ModuleType("broken_plugin")

    def boom():
        raise RuntimeError("kaput")

    bad.dnas_register_tasks = hookimpl(boom)
    with pytest.raises(PluginError, match=r"broken_plugin.*kaput.*DNAS_DISABLE_PLUGINS"):
        get_plugin_manager(extra_plugins=[bad], autoload=False)


def test_unknown_hook_is_rejected():
    mod = types.ModuleType("typo_plugin")
    mod.dnas_register_taskz = hookimpl(lambda: [])
    with pytest.raises(Exception, match="dnas_register_taskz"):
        get_plugin_manager(extra_plugins=[mod], autoload=False)


class _FakeDist:
    def __init__(self, name, version):
        self.metadata = {"Name": name}
        self.version = version


class _EP:
    def __init__(self, name, value, dist, load):
        self.name, self.value, self.dist, self._load = name, value, dist, load

    def load(self):
        return self._load()


def test_entry_point_that_fails_to_import_names_distribution(monkeypatch):
    def fail():
        raise ImportError("No module named 'missing_dep'")

    eps = [_EP("shiny", "shiny_plugin", _FakeDist("dnas-shiny", "1.2"), fail)]
    monkeypatch.setattr("dnas_core.plugin_manager._entry_points", lambda: eps)
    with pytest.raises(PluginError) as err:
        _load_entry_points(DnasPluginManager())
    msg = str(err.value)
    assert "dnas-shiny 1.2" in msg and "dnas.plugins:shiny" in msg and "missing_dep" in msg


def test_same_entry_point_name_from_two_distributions(monkeypatch):
    mod = types.ModuleType("x")
    eps = [
        _EP("tasks-x", "pkg_one", _FakeDist("dnas-one", "1.0"), lambda: mod),
        _EP("tasks-x", "pkg_two", _FakeDist("dnas-two", "2.0"), lambda: mod),
    ]
    monkeypatch.setattr("dnas_core.plugin_manager._entry_points", lambda: eps)
    with pytest.raises(PluginError, match=r"dnas-one 1.0.*dnas-two 2.0"):
        _load_entry_points(DnasPluginManager())


def test_a_blocked_name_skips_both_clashing_distributions(monkeypatch):
    """The clash error cannot be worked round by uninstalling when the user cannot: with
    the name blocked, neither distribution is loaded and dnas starts."""
    mod = types.ModuleType("x")
    eps = [
        _EP("tasks-x", "pkg_one", _FakeDist("dnas-one", "1.0"), lambda: mod),
        _EP("tasks-x", "pkg_two", _FakeDist("dnas-two", "2.0"), lambda: mod),
    ]
    monkeypatch.setattr("dnas_core.plugin_manager._entry_points", lambda: eps)
    pm = DnasPluginManager()
    pm.set_blocked("tasks-x")
    _load_entry_points(pm)
    assert "tasks-x" not in pm.info


def _config_class(**fields):
    from pydantic import ConfigDict

    return type("Cfg", (ComponentConfig,), {"__annotations__": {k: v[0] for k, v in fields.items()},
                                             "model_config": ConfigDict(arbitrary_types_allowed=True),
                                             **{k: v[1] for k, v in fields.items()}})


@pytest.mark.parametrize("cls, message", [
    ("iris", "a str"),
    (lambda: type("T", (Task,), {"name": "t", "Config": dict}), "does not subclass dnas_core.ComponentConfig"),
    (lambda: type("T", (Task,), {"name": "t", "Config": _config_class(type=(str, "x"))}), "field named 'type'"),
    (lambda: type("T", (Task,), {"name": "t", "Config": _config_class(dtype=(torch.dtype, torch.float32))}),
     "cannot be used in a manifest"),
], ids=["a-name", "plain-config", "type-field", "torch-dtype-field"])
def test_registry_names_the_plugin_for_unusable_components(cls, message):
    reg = Registry("task", Task)
    with pytest.raises(PluginError, match=message) as err:
        reg.register(cls if isinstance(cls, str) else cls(), plugin="nodef", distribution="dnas-nodef 0.1")
    assert "'nodef' (dnas-nodef 0.1)" in str(err.value)


def test_registry_did_you_mean_and_create_validates():
    reg = Registry("task", Task)
    reg.register(_task_class("fashion_mnist"))
    with pytest.raises(ComponentNotFoundError, match="did you mean 'fashion_mnist'"):
        reg.get("fashon_mnist")
    t = reg.create("fashion_mnist", {"size": 5})
    assert t.config.size == 5
    from dnas_core import ManifestError

    with pytest.raises(ManifestError, match=r"task\.sise: unknown field"):
        reg.create("fashion_mnist", {"sise": 5})
    with pytest.raises(ManifestError, match=r"task\.size: Input should be a valid integer"):
        reg.create("fashion_mnist", {"size": "big"})


def test_registry_rejects_nameless_and_wrong_base():
    reg = Registry("task", Task)
    with pytest.raises(PluginError, match="without a `name`"):
        reg.register(type("NoName", (Task,), {}))
    with pytest.raises(PluginError, match="does not subclass"):
        reg.register(type("NotATask", (), {"name": "x"}))


def test_entry_points_group_lists_builtins():
    names = {ep.name for ep in md.entry_points(group="dnas.plugins")}
    assert {"vision", "nb201", "darts", "onnx"} <= names


class _RemoteConfig(ComponentConfig):
    host: str  # required: no default config can be built


class _BrokenBackendsPlugin:
    """A third-party plugin whose backends outrank the built-ins for the automatic
    choice but cannot be that choice."""

    @hookimpl
    def dnas_register_backends(self):
        from dnas_core import Backend

        class Remote(Backend):
            name, Config, auto_priority = "remote-needs-host", _RemoteConfig, 1000

        class Flaky(Backend):
            name, auto_priority = "flaky", 999

            @classmethod
            def is_available(cls):
                raise OSError("cannot reach remote host")

        return [Remote, Flaky]


def test_automatic_backend_skips_broken_candidates_with_a_warning(tmp_path):
    import yaml
    from conftest import MINI_MANIFEST

    from dnas_core.manifest import load_manifest, resolve_defaults

    pm = get_plugin_manager(extra_plugins=[_BrokenBackendsPlugin()])
    data = yaml.safe_load(MINI_MANIFEST.read_text())
    data.pop("backend", None)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.warns(UserWarning) as caught:
        m = resolve_defaults(load_manifest(path, pm.registries), pm.registries)
    assert m.backend.type not in ("remote-needs-host", "flaky")  # a built-in backend instead
    text = " ".join(str(w.message) for w in caught)
    assert "'remote-needs-host'" in text and "'flaky'" in text and "_BrokenBackendsPlugin" in text


def test_dnas_plugins_lists_entry_points_when_a_plugin_is_broken(monkeypatch, capsys):
    from dnas_core.cli import main
    from dnas_core.plugin_manager import _entry_points

    def fail():
        raise ImportError("No module named 'missing_dep'")

    real = _entry_points()
    monkeypatch.setattr("dnas_core.plugin_manager._entry_points",
                        lambda: [*real, _EP("shiny", "shiny_plugin", _FakeDist("dnas-shiny", "1.2"), fail)])
    assert main(["plugins"]) == 2
    out, err = capsys.readouterr()
    assert "shiny  dnas-shiny 1.2  shiny_plugin" in out and "nb201" in out  # the broken one and the rest
    assert "'shiny'" in err and "missing_dep" in err


class _MissingFilePlugin:
    """A third-party task whose data loading fails with a plain Python error."""

    @hookimpl
    def dnas_register_tasks(self):
        from dnas_tasks.vision.tasks import DigitsTask

        class CsvDigits(DigitsTask):
            name = "csv_digits"

            def load_data(self, seed):
                raise FileNotFoundError("iris2.csv")

        return [CsvDigits]


def test_a_components_own_error_names_the_stage_and_its_plugin(tmp_path):
    import yaml
    from conftest import MINI_MANIFEST

    from dnas_core import RunFailed
    from dnas_core.orchestrator import Orchestrator

    pm = get_plugin_manager(extra_plugins=[_MissingFilePlugin()])
    data = yaml.safe_load(MINI_MANIFEST.read_text())
    data["task"]["type"] = "csv_digits"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RunFailed) as err:
        Orchestrator.new(path, out=tmp_path / "run", pm=pm).run()
    msg = str(err.value)
    assert msg.startswith("run start failed: FileNotFoundError: iris2.csv")
    assert "task 'csv_digits' from plugin '_MissingFilePlugin'" in msg and "space 'nb201'," in msg
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_a_misspelt_hook_names_the_plugin(monkeypatch):
    mod = types.ModuleType("typo_plugin")

    @hookimpl
    def dnas_register_task():  # the spec is dnas_register_tasks
        return []

    mod.dnas_register_task = dnas_register_task
    eps = [_EP("typo", "typo_plugin", _FakeDist("dnas-typo", "0.1"), lambda: mod)]
    monkeypatch.setattr("dnas_core.plugin_manager._entry_points", lambda: eps)
    with pytest.raises(PluginError, match=r"plugin 'typo' \(distribution dnas-typo 0.1.*dnas_register_task"):
        get_plugin_manager()
