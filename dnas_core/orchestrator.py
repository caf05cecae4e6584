"""The orchestrator: one run from a manifest to a finished run directory.

Follow a run top to bottom in :meth:`Orchestrator.run`::

    search -> derive -> retrain -> evaluate -> export -> report

Each stage is one method below, in that order. Stages that finished are recorded in
``state.json``; ``dnas run --resume DIR`` skips them and continues the interrupted one
from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import platform
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from . import distributed
from .context import RunContext
from .errors import DnasError, RunFailed, UsageError
from .genotype import Genotype
from .manifest import (
    ManifestBase,
    component_config,
    dump_manifest,
    load_manifest,
    read_yaml,
    resolve_defaults,
    validate_manifest,
)
from .markers import PROJECT_NAME
from .plugin_manager import DnasPluginManager, get_plugin_manager
from .progress import log
from .rundir import RunDir
from .seeding import derive_seed, seed_everything
from .task import data_root
from .training import count_parameters, fit

STAGES = ("search", "derive", "retrain", "evaluate", "export", "report")


class Orchestrator:
    """Runs the stages of one run. Build it with :meth:`new` or :meth:`resume`."""

    def __init__(self, pm: DnasPluginManager, manifest: ManifestBase, run_dir: RunDir, resumed: bool = False):
        self.pm = pm
        self.manifest = manifest
        self.run_dir = run_dir
        reg = pm.registries
        self.ctx = RunContext(
            manifest=manifest,
            run_dir=run_dir,
            pm=pm,
            task=reg.tasks.create(manifest.task.type, component_config(manifest.task)),
            space=reg.spaces.create(manifest.space.type, component_config(manifest.space)),
            strategy=reg.strategies.create(manifest.strategy.type, component_config(manifest.strategy)),
            backend=reg.backends.create(manifest.backend.type, component_config(manifest.backend)),
            resumed=resumed,
        )
        self.exporter = (
            reg.exporters.create(manifest.export.type, component_config(manifest.export)) if manifest.export else None
        )
        self.callbacks = [reg.callbacks.create(c.type, component_config(c)) for c in manifest.callbacks]
        self.state: dict[str, Any] = run_dir.read_json("state.json") if run_dir.exists("state.json") else {}
        self.state.setdefault("completed", [])
        self.state.setdefault("seconds", {})

    # -- construction ---------------------------------------------------------------
    @classmethod
    def new(
        cls,
        manifest_path: str | Path,
        overrides: list[str] | None = None,
        out: str | Path | None = None,
        pm: DnasPluginManager | None = None,
    ) -> Orchestrator:
        pm = pm or get_plugin_manager()
        manifest = resolve_defaults(load_manifest(manifest_path, pm.registries, overrides), pm.registries)
        if out is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path(manifest.output.root) / f"{manifest.name}-{stamp}"
        if not distributed.is_main():  # data-parallel follower: rank 0 owns the directory
            return cls(pm, manifest, distributed.FollowerRunDir(distributed.broadcast_object(None)))
        run_dir = RunDir.create(out)
        run_dir.write_text("manifest.yaml", dump_manifest(manifest))
        found = _data_paths(manifest, pm.registries.tasks.get(manifest.task.type))
        if found:
            run_dir.write_json("data_paths.json", found)
        distributed.broadcast_object(str(run_dir.path))
        try:
            return cls(pm, manifest, run_dir)
        except Exception as exc:  # a component that cannot be built (e.g. a logger whose package is missing)
            run_dir.set_status("failed", error=f"{type(exc).__name__}: {exc}", finished=_now())
            raise

    @classmethod
    def resume(cls, path: str | Path, pm: DnasPluginManager | None = None) -> Orchestrator:
        pm = pm or get_plugin_manager()
        run_dir = RunDir.open(path) if distributed.is_main() else distributed.FollowerRunDir(RunDir.open(path).path)
        if run_dir.status().get("status") == "completed":
            raise UsageError(f"{path}: this run has already completed")
        data = read_yaml(run_dir.file("manifest.yaml"))
        manifest = validate_manifest(data, pm.registries, source=str(run_dir.file("manifest.yaml")))
        _use_recorded_data_paths(manifest, run_dir, pm.registries.tasks.get(manifest.task.type))
        run_dir.remove_temp_files()  # half-written files of the killed process (only once the run is known good)
        return cls(pm, manifest, run_dir, resumed=True)

    # -- the run --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every stage that has not finished yet; returns ``result.json``'s content."""
        ctx = self.ctx
        if not distributed.is_main():
            self.callbacks = []  # data-parallel followers only help train the supernet
        for cb in self.callbacks:
            self.pm.register(cb, name=f"callback:{cb.name}:{id(cb)}")
        t_start = time.perf_counter()
        completed = False
        distributed.announce_run_dir(self.run_dir.path)
        try:
            self._start()
            self._stage("search", self.search)
            self._leave_group()  # a resumed run whose search had finished: leave here
            if not distributed.is_main():
                return {}
            self._stage("derive", self.derive)
            self._stage("retrain", self.retrain)
            self._stage("evaluate", self.evaluate)
            self._stage("export", self.export)
            self._stage("report", self.report)
            result = self._result(time.perf_counter() - t_start)
            self.run_dir.write_json("result.json", result)
            self.run_dir.set_status("completed", finished=_now())
            completed = True
            ctx.notify("dnas_run_end", status="completed", result=result)
            log(f"run completed: {self.run_dir.path}")
            return result
        except BaseException as exc:
            if completed:  # a stop while the end was being announced: the run itself is done
                exc.completed_run_dir = str(self.run_dir.path)
                raise
            # Ctrl-C, or SIGTERM (which `dnas run` turns into KeyboardInterrupt): stopped
            # from outside, resumable; anything else failed
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = f"{type(exc).__name__}: {exc}" if str(exc) else \
                ("KeyboardInterrupt (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__)
            # data parallel: torchrun SIGTERMs the survivors when a rank fails; rank 0
            # finishes recording the failure first (the stop is under way anyway)
            with distributed.signals_deferred():
                if distributed.is_distributed():
                    if not distributed.is_main():
                        if status == "failed":
                            distributed.record_failure(error)
                    # another rank's failure reaches rank 0 as a broken collective, or as
                    # the SIGTERM torchrun sends: record the failed rank's own error
                    elif failures := distributed.other_rank_failures(wait_s=3.0 if status == "failed" else 0.5):
                        status = "failed"
                        error = f"{'; '.join(failures)} (rank 0: {error})"
                if status == "interrupted" and distributed.is_main():
                    exc.run_dir = str(self.run_dir.path)  # for the command's resume hint
                try:
                    self.run_dir.set_status(status, error=error, finished=_now(),
                                            traceback="".join(traceback.format_exception(exc))[-4000:])
                except DnasError:
                    pass  # the directory itself is unwritable; the original error matters more
                ctx.notify("dnas_run_end", status=status, result={"error": error})
            raise
        finally:
            for cb in self.callbacks:
                self.pm.unregister(cb)
                cb.close()

    _threads_alone: int | None = None

    def _leave_group(self) -> None:
        """Data-parallel: every rank leaves the group; rank 0, alone from here on, takes
        back the CPU threads it shared with the others."""
        distributed.shutdown()
        if self._threads_alone is not None and distributed.is_main():
            torch.set_num_threads(self._threads_alone)
            self._threads_alone = None

    def _start(self) -> None:
        ctx = self.ctx
        with self._name_errors("run start"):
            ctx.backend.setup()
            if distributed.is_distributed() and ctx.device.type == "cpu":
                self._threads_alone = torch.get_num_threads()  # rank 0's again once the others have gone
                torch.set_num_threads(distributed.local_threads(self._threads_alone))
            seed_everything(self.manifest.seed)
            ctx.space.check_task(ctx.task)
            data = ctx.data  # load now so that data errors surface before any training
        self.run_dir.set_status("running", started=_now(), resumed=ctx.resumed)
        self.run_dir.write_json("environment.json", environment(self.pm, ctx))
        log(
            f"dnas {__version__}: run {self.manifest.name!r} in {self.run_dir.path} "
            f"(task {ctx.task.name}, space {ctx.space.name}, strategy {ctx.strategy.name}, "
            f"backend {ctx.backend.name} on {ctx.device}; data {data.sizes()})"
            + (" [resumed]" if ctx.resumed else "")
        )
        ctx.notify("dnas_run_start")

    def _stage(self, name: str, fn) -> None:
        if name in self.state["completed"] and name not in ("derive",):
            return
        self.ctx.notify("dnas_stage_start", stage=name)
        t0 = time.perf_counter()
        with self._name_errors(f"{name} stage"):
            info = fn() or {}
        seconds = time.perf_counter() - t0 + (self.state["seconds"].get(name, 0.0) if name not in self.state["completed"] else 0.0)
        if name not in self.state["completed"]:
            self.state["completed"].append(name)
            self.state["seconds"][name] = round(seconds, 3)
        self.run_dir.write_json("state.json", self.state)
        self.ctx.notify("dnas_stage_end", stage=name, seconds=seconds, info=info)

    @contextlib.contextmanager
    def _name_errors(self, where: str) -> Iterator[None]:
        """A component's own error (FileNotFoundError, ...) becomes a RunFailed that says
        where it happened and which components ran; dnas's errors pass unchanged."""
        try:
            yield
        except (DnasError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the run's components named
            raise RunFailed(f"{where} failed: {type(exc).__name__}: {exc} (components: "
                            f"{self._components_text()})") from exc

    def _check_constraints(self, genotype: Genotype) -> dict[str, Any] | None:
        """The manifest's limits measured on the derived architecture, whatever the
        strategy (only the latency-aware differentiable ones enforce a limit while they
        search): ``{"limits", "values", "exceeded", "met"}``, and a warning per limit it
        misses, so that no limit is ignored silently. None without limits."""
        c = self.manifest.constraints
        if c is None or all(getattr(c, k, None) is None for k in ("max_params", "max_flops", "max_latency_ms")):
            return None
        import warnings

        from .constraints import Constraints

        try:
            cons = Constraints.from_run(self.ctx)
            note = None
            if cons.max_latency_ms is not None and not self.ctx.space.supports_latency():
                cons.max_latency_ms = None
                note = f"max_latency_ms not checked: space {self.ctx.space.name!r} has no latency model"
            values = cons.measure(genotype)
            exceeded = cons.violations(genotype)
        except Exception as exc:  # noqa: BLE001 - a report on a finished search must not fail it
            warnings.warn(f"constraints: could not check the derived architecture ({type(exc).__name__}: {exc})",
                          stacklevel=2)
            return {"error": f"{type(exc).__name__}: {exc}", "met": None}
        limits = cons.limits()
        out: dict[str, Any] = {"limits": limits, "values": {k: values[k] for k in limits},
                               "exceeded": sorted(exceeded), "met": not exceeded}
        if note:
            out["note"] = note
            log(f"[constraints] {note}")
        for name, (value, limit) in exceeded.items():
            how = ("no built-in strategy enforces it while searching" if name != "latency_ms" else
                   "only differentiable strategies steer towards it while searching (a penalty and a "
                   "constrained derivation), and they could not meet it")
            warnings.warn(f"constraints: the derived architecture of strategy {self.ctx.strategy.name!r} misses "
                          f"{name} <= {limit:g} ({value:g}); {how}", stacklevel=2)
        if not exceeded:
            log("[constraints] the derived architecture meets " +
                ", ".join(f"{k} {values[k]:g} <= {lim:g}" for k, lim in limits.items()))
        return out

    def _components_text(self) -> str:
        """The run's task, space and strategy; a third-party one with its plugin and
        distribution, so an error inside it points at who to ask."""
        m, reg, parts = self.manifest, self.pm.registries, []
        for kind, section in (("task", m.task), ("space", m.space), ("strategy", m.strategy)):
            entry = reg[kind].entry(section.type)
            where = "" if entry.distribution.split()[0] == PROJECT_NAME else \
                f" from plugin {entry.plugin!r} ({entry.distribution})"
            parts.append(f"{kind} {section.type!r}{where}")
        return ", ".join(parts)

    # -- stages ---------------------------------------------------------------------
    def search(self) -> dict[str, Any]:
        """The strategy's search loop (resumable through its checkpoints)."""
        ctx = self.ctx
        log(f"[search] {ctx.strategy.name} over {ctx.space.name}")
        outcome = ctx.strategy.search(ctx)
        # Data-parallel: the ranks are in step here, the last moment they are. They leave
        # the group together; the followers stop and rank 0 goes on alone (its constraint
        # check may build a latency table, which must not wait for the others).
        self._leave_group()
        if not distributed.is_main():
            return {}
        if outcome.genotype is None:
            if outcome.supernet is None:
                raise RunFailed(f"strategy {ctx.strategy.name!r} returned neither a supernet nor a genotype")
            outcome.genotype = ctx.space.derive(outcome.supernet)
        genotype = outcome.genotype
        ctx.space.check_genotype(genotype)
        check = self._check_constraints(genotype) if distributed.is_main() else None
        if check is not None:
            self.run_dir.write_json("constraints.json", check)
            outcome.summary = {**outcome.summary, "constraints": check}
        self.run_dir.write_json("search_summary.json", outcome.summary)
        self.run_dir.write_json("genotype.json", genotype.to_json())
        ctx.notify("dnas_search_end", genotype=genotype, summary=outcome.summary)
        log(f"[search] genotype {ctx.space.format(genotype)}")
        return {"genotype": genotype.to_json()}

    def derive(self) -> dict[str, Any]:
        """Build the stand-alone network of the searched genotype."""
        ctx = self.ctx
        genotype = Genotype.from_json(self.run_dir.read_json("genotype.json"))
        _ = ctx.data  # the task's stem depends on its (training) data statistics
        torch.manual_seed(derive_seed(self.manifest.seed, "retrain", "init"))
        network = ctx.backend.prepare(ctx.space.build_network(genotype, ctx.task))
        ctx.state["genotype"] = genotype
        ctx.state["network"] = network
        ctx.state["params"] = count_parameters(network)
        return {"params": ctx.state["params"]}

    def retrain(self) -> dict[str, Any]:
        """Train the derived network from scratch (``train:`` section)."""
        network = self.ctx.state["network"]
        last = fit(self.ctx, network, stage="retrain")
        _save_model(self.run_dir, network)
        return last

    def evaluate(self) -> dict[str, Any]:
        """Test metrics of the retrained network on the held-out test split."""
        ctx = self.ctx
        network = self._network()
        metrics = ctx.task.evaluate(network, ctx.data.test, ctx.device)
        latency = ctx.backend.measure_latency(network, ctx.task.example_inputs(ctx.data.test, 1))
        metrics_out = {"test": metrics, "latency_ms": latency.median_ms}
        untrained = self.manifest.train.epochs == 0
        if untrained:  # a search-only run: its result is the genotype, not these figures
            metrics_out["untrained"] = True
        self.run_dir.write_json("test_metrics.json", metrics_out)
        log(f"[evaluate] test {ctx.task.primary_metric} = {metrics.get(ctx.task.primary_metric, float('nan')):.4f}"
            + (" (train.epochs is 0: the derived network at its initial weights, not a result)" if untrained else ""))
        return metrics_out

    def export(self) -> dict[str, Any]:
        """Export the derived network and verify the file against torch."""
        if self.exporter is None:
            return {}
        info = export_run(self.ctx, self.exporter, self._network())
        log(f"[export] {info['file']}: max abs diff vs torch {info['max_abs_diff']:.2e} ({'ok' if info['ok'] else 'MISMATCH'})")
        return info

    def report(self) -> dict[str, Any]:
        """Plots, ``report.md`` and the self-contained ``report.html``."""
        from .report import write_report

        network = self._network()
        return write_report(self.ctx, self._partial_result(), network=network)

    # -- helpers --------------------------------------------------------------------
    def _network(self):
        ctx = self.ctx
        if "network" not in ctx.state:
            self.derive()
        net = ctx.state["network"]
        if not ctx.state.get("weights_loaded"):
            state = torch.load(self.run_dir.file("model.pt"), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            ctx.state["weights_loaded"] = True
        return net.eval()

    def _partial_result(self) -> dict[str, Any]:
        rd = self.run_dir
        genotype = Genotype.from_json(rd.read_json("genotype.json"))
        test = rd.read_json("test_metrics.json") if rd.exists("test_metrics.json") else {}
        export = rd.read_json("export.json") if rd.exists("export.json") else {}
        return {
            "name": self.manifest.name,
            "task": self.ctx.task.name,
            "space": self.ctx.space.name,
            "strategy": self.ctx.strategy.name,
            "seed": self.manifest.seed,
            "primary_metric": self.ctx.task.primary_metric,
            "test_metrics": test.get("test", {}),
            "untrained": bool(test.get("untrained", False)),
            "latency_ms": test.get("latency_ms"),
            "genotype": genotype.to_json(),
            "params": self.ctx.state.get("params"),
            "export": export,
            "onnx_max_abs_diff": export.get("max_abs_diff"),
            "stage_seconds": dict(self.state["seconds"]),
            "plugin_errors": self.ctx.plugin_errors,
            "constraints": rd.read_json("constraints.json") if rd.exists("constraints.json") else None,
        }

    def _result(self, wall: float) -> dict[str, Any]:
        result = self._partial_result()
        result["stage_seconds"] = dict(self.state["seconds"])
        result["wall_seconds"] = round(sum(result["stage_seconds"].values()), 3)
        return result


def _save_model(run_dir: RunDir, network: torch.nn.Module) -> None:
    import io

    buf = io.BytesIO()
    # host tensors: model.pt of a GPU run loads on a machine without one
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, buf)
    run_dir.write_bytes("model.pt", buf.getvalue())


def export_run(ctx: RunContext, exporter: Any, network: torch.nn.Module) -> dict[str, Any]:
    """Export ``network`` into the run directory and verify it on real test inputs."""
    rd = ctx.run_dir
    path = rd.file(f"model{exporter.suffix}")
    n = ctx.manifest.output.onnx_check_samples
    inputs = ctx.task.example_inputs(ctx.data.test, n)
    # A host copy: the run's network stays where the backend put it (the report still
    # evaluates it there), and a torch.compile'd network exports as the plain module
    # (deepcopy drops the compiled forward; tracing a compiled one fails).
    network = copy.deepcopy(network).cpu().float().eval()
    facts = exporter.export(network, _first(inputs, 2), path)
    check = exporter.verify(path, network, inputs)
    info = {"file": path.name, "exporter": exporter.name, **facts, **check, "checked_inputs": int(_batch(inputs))}
    rd.write_json("export.json", info)
    return info


def _first(inputs: Any, n: int) -> Any:
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(t[:n] for t in inputs)
    return inputs[:n]


def _data_paths(manifest: ManifestBase, task_cls: type) -> dict[str, str]:
    """The absolute paths a new run's task reads, for the fields whose manifest value
    depends on where the run was started: a relative ``task.path`` (or ``*_path``) as
    found from the working directory, an empty ``task.path`` as the task's default
    under the data root. Saved as ``data_paths.json``: the fallback of a resume or
    re-export started where those do not resolve (:func:`_use_recorded_data_paths`)."""
    cfg, out = manifest.task, {}
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if (name == "path" or name.endswith("_path")) and isinstance(value, str) and value:
            p = Path(value).expanduser()
            if not p.is_absolute() and p.exists():
                out[name] = str(p.absolute())
    default = _default_data_path(task_cls)
    if default is not None and "path" in type(cfg).model_fields and cfg.path is None and default.exists():
        out["path"] = str(default.absolute())
    return out


def _default_data_path(task_cls: type) -> Path | None:
    """Where the task reads its data when ``task.path`` is empty (``Task.default_data``
    under the data root), or None if it names no default."""
    default = getattr(task_cls, "default_data", None)
    return data_root() / default if default else None


def _use_recorded_data_paths(manifest: ManifestBase, run_dir: RunDir, task_cls: type) -> None:
    """A resumed or re-exported run reads its data as the manifest says, from here (a
    relative path from the working directory, an empty one under ``DNAS_DATA_ROOT``);
    where that finds nothing, from the absolute path the run recorded when it started."""
    if not run_dir.exists("data_paths.json"):
        return
    cfg = manifest.task
    for name, recorded in run_dir.read_json("data_paths.json").items():
        if name not in type(cfg).model_fields:
            continue
        value = getattr(cfg, name)
        here = _default_data_path(task_cls) if value is None else Path(value).expanduser()
        if (here is None or not here.exists()) and Path(recorded).exists():
            log(f"task.{name}: {value or 'the data root default'} is not found from here; reading the path "
                f"recorded when the run started, {recorded}")
            setattr(cfg, name, recorded)


def _batch(inputs: Any) -> int:
    return inputs[0].shape[0] if isinstance(inputs, (tuple, list)) else inputs.shape[0]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def environment(pm: DnasPluginManager, ctx: RunContext | None = None) -> dict[str, Any]:
    import numpy

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dnas": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "plugins": {
            name: {"distribution": i.distribution, "version": i.version, "module": i.module}
            for name, i in sorted(pm.info.items())
        },
    }
    if ctx is not None:
        env["device"] = str(ctx.device)
        if ctx.device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(ctx.device)
    return env


def preflight(manifest: ManifestBase, pm: DnasPluginManager, load_data: bool = True) -> None:
    """What ``dnas validate`` checks beyond the manifest's schema: every component can be
    built (a logger's package is installed), the space fits the task, and, with
    ``load_data``, the backend can be set up (a requested GPU exists), the data loads
    and the strategy can build its supernet with its options (:meth:`Strategy.preflight`).
    Raises the error the run would raise at its start; writes nothing that stays."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dnas-validate-") as tmp:
        orch = Orchestrator(pm, manifest, RunDir.create(Path(tmp) / "run"))
        ctx = orch.ctx
        with orch._name_errors("validate"):
            ctx.space.check_task(ctx.task)
            if load_data:  # without: no backend set-up either (a GPU manifest checked on a login node)
                ctx.backend.setup()
                ctx.data  # noqa: B018 - loading is the check
                ctx.strategy.preflight(ctx)


def run_manifest(manifest_path: str | Path, overrides: list[str] | None = None, out: str | Path | None = None,
                 pm: DnasPluginManager | None = None) -> tuple[Path, dict[str, Any]]:
    """Run a manifest end to end; returns the run directory and the result."""
    orch = Orchestrator.new(manifest_path, overrides, out, pm)
    return orch.run_dir.path, orch.run()


def resume_run(path: str | Path, pm: DnasPluginManager | None = None) -> tuple[Path, dict[str, Any]]:
    orch = Orchestrator.resume(path, pm)
    return orch.run_dir.path, orch.run()


def reexport(path: str | Path, pm: DnasPluginManager | None = None, exporter_name: str | None = None) -> dict[str, Any]:
    """Export a finished run again (``dnas export RUN_DIR``)."""
    pm = pm or get_plugin_manager()
    run_dir = RunDir.open(path)
    if not run_dir.exists("model.pt") or not run_dir.exists("genotype.json"):
        raise UsageError(f"{path}: no retrained model to export (model.pt / genotype.json missing)")
    manifest = validate_manifest(read_yaml(run_dir.file("manifest.yaml")), pm.registries,
                                 source=str(run_dir.file("manifest.yaml")))
    _use_recorded_data_paths(manifest, run_dir, pm.registries.tasks.get(manifest.task.type))
    orch = Orchestrator(pm, manifest, run_dir)
    orch.ctx.backend.setup()
    name = exporter_name or (orch.manifest.export.type if orch.manifest.export else None)
    if name is None:
        raise UsageError("no exporter: the manifest has no export section and none was named")
    exporter = orch.exporter if orch.exporter and orch.exporter.name == name else pm.registries.exporters.create(name)
    info = export_run(orch.ctx, exporter, orch._network())
    if run_dir.exists("result.json"):
        result = run_dir.read_json("result.json")
        result["export"] = info
        result["onnx_max_abs_diff"] = info.get("max_abs_diff")
        run_dir.write_json("result.json", result)
    return info


__all__ = ["Orchestrator", "STAGES", "preflight", "run_manifest", "resume_run", "reexport", "environment", "export_run"]
