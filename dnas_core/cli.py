"""The ``dnas`` command line.

Exit codes: 0 success, 1 a run that failed, 2 bad usage, a bad manifest or a broken
plugin. Errors print one line naming the field, file or plugin at fault; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import DnasError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnas", description="Differentiable neural architecture search from YAML manifests.")
    p.add_argument("--version", action="version", version=f"dnas {__version__}")
    p.add_argument("--debug", action="store_true", help="print full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="search, retrain, evaluate and export from a manifest",
                       description="Run a manifest end to end, or resume an interrupted run.")
    r.add_argument("manifest", nargs="?", help="the YAML manifest")
    r.add_argument("overrides", nargs="*", help="dotted overrides such as strategy.epochs=3 seed=1")
    r.add_argument("--out", help="run directory (default: <output.root>/<name>-<timestamp>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    r.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train the supernet data-parallel on N local processes (torchrun; gloo on CPUs, NCCL on GPUs)")

    t = sub.add_parser("tune", help="tune a manifest's search hyperparameters with Optuna",
                       description="Run or continue an Optuna study over the manifest's tune: section; every trial "
                       "is a run in <study dir>/trials/. Several processes (or machines) on one --storage and "
                       "--study share the study.")
    t.add_argument("manifest")
    t.add_argument("overrides", nargs="*", help="dotted overrides applied to every trial")
    t.add_argument("--storage", help="Optuna RDB URL (postgresql://..., sqlite:///...) or journal file path "
                   "(default: <study dir>/journal.log)")
    t.add_argument("--study", help="study name (default: tune.study_name or the manifest name)")
    t.add_argument("--study-dir", help="folder of the trial runs and the report (default: <output.root>/tune-<study>)")
    t.add_argument("--n-trials", type=int, help="trial budget of the whole study (default: tune.n_trials)")
    t.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    t.add_argument("--no-report", action="store_true", help="skip the plots and report.md")
    t.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)

    v = sub.add_parser("validate", help="check a manifest without running it",
                       description="Validate a manifest (with overrides) and print it resolved. Builds every "
                       "component, sets up the backend, loads the data and lets the strategy build its supernet, "
                       "so that a manifest called valid also starts; nothing is trained or written.")
    v.add_argument("manifest")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    v.add_argument("--no-data", action="store_true",
                   help="check the manifest and components only: no data loading, no supernet")

    pl = sub.add_parser("plugins", help="list installed plugins and what they register",
                        description="List every plugin with its distribution, version and components. When a "
                        "plugin is broken, the installed entry points are listed and the error names it.")
    pl.add_argument("--verbose", "-v", action="store_true", help="also list each component with its description")

    s = sub.add_parser("schema", help="print the JSON schema of manifests",
                       description="Print the JSON schema of the manifest for the installed plugins.")
    s.add_argument("--kind", help="only the config schemas of one component kind (task, space, strategy, ...)")

    sh = sub.add_parser("show", help="summarise a run directory in the terminal",
                        description="Print the status, architecture, metrics and timings of a run (finished or not).")
    sh.add_argument("run_dir")

    c = sub.add_parser("compare", help="compare runs side by side",
                       description="Print a side-by-side table of runs and write their learning curves overlaid.")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--plot", default=None,
                   help="PNG of the overlaid curves (default: compare.png, none with --json unless named)")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")

    e = sub.add_parser("export", help="export a finished run again",
                       description="Re-export the retrained network of a finished run and verify it.")
    e.add_argument("run_dir")
    e.add_argument("--exporter", help="exporter name (default: the manifest's)")
    return p


def _package_roots() -> list[str]:
    """Folders of dnas's own packages (a warning raised there is dnas's, not a library's)."""
    import importlib.util
    from pathlib import Path

    roots = []
    for name in ("dnas_core", "dnas_plugins", "dnas_tasks", "dnas_search_spaces"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            roots.append(str(Path(spec.origin).parent))
    return roots


def _list_plugins(verbose: bool) -> int:
    """``dnas plugins``: the diagnostic command keeps working when a plugin is broken
    (it lists the installed entry points and names the broken one)."""
    from .errors import PluginError
    from .plugin_manager import _entry_points, get_plugin_manager

    import pluggy

    try:
        pm = get_plugin_manager()
    except (PluginError, pluggy.PluginValidationError) as exc:
        for ep in sorted(_entry_points(), key=lambda e: e.name):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            print(f"{ep.name}  {dist} {version}  {ep.value}")
        print(f"dnas: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    rows = []
    for name, info in sorted(pm.info.items()):
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in info.components.items()) or "(hooks only)"
        rows.append([name, f"{info.distribution} {info.version}".strip(), info.module, comps])
    widths = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
        if verbose:
            info = pm.info[r[0]]
            for kind, names in info.components.items():
                for comp in names:
                    desc = pm.registries[kind].get(comp).description
                    print(f"    {kind} {comp}: {desc or '(no description)'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after options (`dnas run m.yaml --out d seed=1`), which
    # argparse leaves over; accept them where a command takes overrides. --debug is a
    # top-level option, but error messages say "rerun with --debug": accept it anywhere.
    if "--debug" in extra:
        args.debug = True
        extra = [e for e in extra if e != "--debug"]
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)
    args.from_command_line = argv is None
    if argv is None:  # the command line (not an embedding program or a test): dnas's warnings as one plain line
        import warnings

        default_format = warnings.formatwarning
        roots = _package_roots()

        def fmt(message, category, filename, lineno, line=None):
            if category is UserWarning and any(str(filename).startswith(r) for r in roots):
                return f"dnas: warning: {message}\n"
            return default_format(message, category, filename, lineno, line)

        warnings.formatwarning = fmt
    if args.command is None:
        parser.print_help()
        return 2
    code = _run_guarded(args, parser)
    distributed_exit = os.environ.get("DNAS_EXIT_CODE_FILE")
    if distributed_exit and code and os.environ.get("RANK", "0") == "0":  # for `dnas run --nproc N`'s own status
        from contextlib import suppress

        with suppress(OSError):
            Path(distributed_exit).write_text(str(code))
    return code


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's or torchrun's stop) and SIGHUP (the terminal went away)
    end a run as Ctrl-C does: the run directory records ``interrupted`` and the command
    says how to resume."""
    import signal

    def stop(signum, frame):
        # once: a second signal (a scheduler signalling every process while torchrun
        # passes its own on) must not cut short the cleanup that records the stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def _run_guarded(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        return _dispatch(args, parser)
    except DnasError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"dnas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # stdout piped into `head` by a listing command: not an error. Anywhere else (a run
        # whose log pipe closed) it is one: 141, as a shell reports SIGPIPE.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the exit flush does not fail again
        return 0 if args.command in ("plugins", "schema", "validate", "show", "compare") else 141
    except KeyboardInterrupt as exc:
        if args.command == "tune":
            print("dnas: interrupted (run the same `dnas tune` command again: the interrupted trial is retried "
                  "and its run resumes)", file=sys.stderr)
        else:
            from . import distributed

            done = getattr(exc, "completed_run_dir", None)
            if done:
                print(f"dnas: interrupted after the run completed ({done}: result.json is written; callbacks "
                      "may not have finished)", file=sys.stderr)
            elif distributed.is_main():  # the data-parallel followers stop quietly
                run_dir = getattr(exc, "run_dir", None) or "RUN_DIR"
                nproc = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
                again = f" --nproc {nproc}" if nproc > 1 else ""
                print(f"dnas: interrupted (resume with `dnas run --resume {run_dir}{again}`)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors end up
        if args.debug:
            traceback.print_exc()
        print(f"dnas: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .plugin_manager import get_plugin_manager

    if args.command == "run":
        from . import distributed
        from .orchestrator import resume_run, run_manifest

        if args.nproc is not None and args.nproc < 1:
            parser.error(f"run: --nproc must be at least 1 (got {args.nproc})")
        if args.resume and args.manifest:
            parser.error("run: give either a manifest or --resume RUN_DIR, not both")
        if not args.resume and not args.manifest:
            parser.error("run: a manifest is required (or --resume RUN_DIR)")
        if args.nproc is not None and args.nproc > 1 and distributed.requested_world_size() <= 1:
            if args.manifest:  # a bad manifest is one error line here, not one per process plus torchrun's
                from .manifest import load_manifest

                load_manifest(args.manifest, get_plugin_manager().registries, args.overrides)
            forward = [a for i, a in enumerate(args.raw_argv) if not _is_nproc_arg(args.raw_argv, i)]
            return distributed.launch(args.nproc, forward)
        if args.from_command_line:
            _interrupt_on_sigterm()
        distributed.init_from_env()

        if args.resume:
            path, result = resume_run(args.resume)
        else:
            path, result = run_manifest(args.manifest, args.overrides, args.out)
        distributed.shutdown()  # a no-op once the run has left the group after its search
        if not distributed.is_main():
            return 0
        metric = result["primary_metric"]
        print(json.dumps({"run_dir": str(path), metric: result["test_metrics"].get(metric),
                          "genotype": result["genotype"]["text"], "onnx_max_abs_diff": result.get("onnx_max_abs_diff")}))
        return 0

    if args.command == "tune":
        return _tune(args, parser)

    if args.command == "show":
        from .runview import show

        print(show(args.run_dir))
        return 0

    if args.command == "compare":
        from .runview import compare

        text, data = compare(args.run_dirs, png=args.plot or (None if args.json else "compare.png"))
        print(json.dumps(data, indent=2) if args.json else text)
        return 0

    if args.command == "plugins":
        return _list_plugins(args.verbose)

    pm = get_plugin_manager()
    if args.command == "validate":
        from .manifest import dump_manifest, load_manifest, resolve_defaults

        manifest = resolve_defaults(load_manifest(args.manifest, pm.registries, args.overrides), pm.registries)
        from .orchestrator import preflight

        preflight(manifest, pm, load_data=not args.no_data)
        if manifest.extends_runs:  # each named run must be a finished run with a record
            from .runstore import RunStore

            RunStore.load(manifest.extends_runs)
        if not args.quiet:
            print(dump_manifest(manifest), end="")
            print(f"# {args.manifest}: valid", file=sys.stderr)
        return 0

    if args.command == "schema":
        if args.kind:
            from .registry import KINDS

            if args.kind not in KINDS:
                parser.error(f"schema: --kind must be one of {', '.join(KINDS)}")
            out = {e.name: e.config_model.model_json_schema() for e in pm.registries[args.kind].entries()}
        else:
            from .manifest import manifest_model

            out = manifest_model(pm.registries).model_json_schema()
        print(json.dumps(out, indent=2))
        return 0

    if args.command == "export":
        from .orchestrator import reexport

        info = reexport(args.run_dir, pm, args.exporter)
        print(json.dumps(info))
        return 0 if info.get("ok") else 1

    parser.error(f"unknown command {args.command}")
    return 2


def _tune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .tune import run_worker, tune

    if args.workers < 1 or (args.n_trials is not None and args.n_trials < 0):
        parser.error("tune: --workers must be >= 1 and --n-trials >= 0")
    if args.from_command_line:
        # SIGTERM/SIGHUP stop the study as Ctrl-C does: the running trials are marked
        # interrupted (the next start resumes them) and --workers N terminates its workers
        _interrupt_on_sigterm()
    if args.worker_index is not None:  # one of the processes that --workers N started
        from pathlib import Path

        run_worker(args.manifest, args.overrides, args.storage, args.study, Path(args.study_dir), args.n_trials,
                   args.worker_index)
        return 0
    summary = tune(args.manifest, args.overrides, storage=args.storage, study=args.study, study_dir=args.study_dir,
                   n_trials=args.n_trials, workers=args.workers, report=not args.no_report)
    print(json.dumps(summary))
    return 0


def _is_nproc_arg(argv: Sequence[str], i: int) -> bool:
    """Whether argv[i] is ``--nproc``, its value, or ``--nproc=N`` (dropped when
    ``dnas run --nproc N`` re-launches itself under torchrun)."""
    a = argv[i]
    return a == "--nproc" or a.startswith("--nproc=") or (i > 0 and argv[i - 1] == "--nproc")
