"""The run directory: every file written atomically, checkpoints safe to load.

Layout (see docs/run-directory.md)::

    manifest.yaml      resolved manifest; `dnas run` on it reproduces the run
    environment.json   versions of python, dnas, torch and every plugin
    status.json        running | completed | failed (+ error)
    metrics.jsonl      one JSON record per epoch and stage
    checkpoints/       <stage>.pt, the latest state of each resumable stage
    genotype.json      the derived architecture
    model.pt           state dict of the retrained network
    model.onnx         the exported network
    plots/             PNG figures used by the report
    report.md          human summary
    result.json        final metrics and facts for scripts; written last

A file is first written beside its destination and moved into place with
``os.replace``, so a reader (or a resume) never sees half a file. ``result.json``
and a ``completed`` status are written last: a directory without them is not a
finished run, whatever else it holds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import RunFailed, UsageError, first_line


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of the files dnas writes: what ``open()`` would give (mkstemp alone gives 0600,
#: which would hide reports and models from the other users of a shared machine).
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise RunFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RunDir:
    """One run's directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation -------------------------------------------------------------------
    #: Written first into every run directory dnas creates: ``--resume`` and ``dnas
    #: export`` act only on folders that hold it (or, for runs made before it existed,
    #: ``status.json``), never on a user's folder that merely has a ``manifest.yaml``.
    MARKER = ".dnas-run"

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise UsageError(f"{p}: exists and is not a folder; the run directory must be a new or empty folder")
        if p.exists() and any(p.iterdir()):
            raise UsageError(f"{p}: run directory exists and is not empty (use --resume to continue it)")
        try:
            p.mkdir(parents=True, exist_ok=True)
            # the marker doubles as the write probe
            (p / cls.MARKER).write_text(json.dumps({"dnas_run": 1}) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{p}: cannot create the run directory: {exc.strerror or exc}") from None
        return cls(p)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"{p}: no such run directory")
        if not p.is_dir():
            raise UsageError(f"{p}: is a file, not a run directory")
        if not (p / "manifest.yaml").is_file():
            raise UsageError(f"{p}: not a dnas run directory (no manifest.yaml)")
        if not (p / cls.MARKER).is_file() and not (p / "status.json").is_file():
            raise UsageError(f"{p}: not a dnas run directory (it has a manifest.yaml but no {cls.MARKER} or "
                             "status.json): dnas resumes only folders that `dnas run` created; to run this "
                             "manifest, give it to `dnas run` with --out pointing to a new folder")
        return cls(p)

    def remove_temp_files(self) -> list[Path]:
        """Delete the ``.<name>.*.tmp`` files that a process killed in the middle of an
        atomic write leaves behind (done when a run is resumed, after its manifest has
        been read back). Only names :func:`atomic_write_bytes` makes are touched: a dot,
        the target's name, a dot, a random part, ``.tmp``."""
        removed = []
        for p in self.path.rglob(".*.tmp"):
            if p.name.count(".") < 3:  # ".<name>.<random>.tmp" has at least three dots
                continue
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
        return removed

    def file(self, name: str) -> Path:
        """A path inside the run directory; names cannot escape it."""
        target = (self.path / name).resolve()
        root = self.path.resolve()
        if target != root and root not in target.parents:
            raise UsageError(f"{name!r} would be written outside the run directory {self.path}")
        return target

    # -- files ----------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        p = self.file(name)
        atomic_write_text(p, text)
        return p

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.file(name)
        atomic_write_json(p, obj)
        return p

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.file(name)
        atomic_write_bytes(p, data)
        return p

    def read_json(self, name: str) -> Any:
        p = self.file(name)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{p}: missing") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    # -- metrics --------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        p = self.file("metrics.jsonl")
        line = json.dumps(record, default=_json_default) + "\n"
        try:
            with open(p, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RunFailed(f"cannot write {p}: {exc.strerror or exc}") from exc

    def metrics(self) -> list[dict[str, Any]]:
        return list(self._iter_metrics())

    def _iter_metrics(self) -> Iterator[dict[str, Any]]:
        p = self.file("metrics.jsonl")
        if not p.exists():
            return
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write

    def truncate_metrics(self, stage: str, from_epoch: int) -> None:
        """Drop ``stage`` records of epochs >= ``from_epoch`` (before a resumed stage
        writes them again)."""
        keep = [r for r in self._iter_metrics() if not (r.get("stage") == stage and r.get("epoch", -1) >= from_epoch)]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep))

    # -- checkpoints ----------------------------------------------------------------
    def save_checkpoint(self, stage: str, state: dict[str, Any]) -> Path:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        p = self.file(f"checkpoints/{stage}.pt")
        atomic_write_bytes(p, buf.getvalue())
        return p

    def load_checkpoint(self, stage: str) -> dict[str, Any] | None:
        p = self.file(f"checkpoints/{stage}.pt")
        if not p.exists():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            # torch's own message suggests weights_only=False: dnas never loads checkpoints
            # that way, so the user gets the cause's first line and what to do instead.
            text = str(exc)
            if "WeightsUnpickler error:" in text:  # keep the cause, drop the unsafe-load advice
                text = text.split("WeightsUnpickler error:", 1)[1]
            first = first_line(text, type(exc).__name__)
            raise RunFailed(f"{p}: checkpoint cannot be loaded safely: corrupt, or not a dnas checkpoint "
                            f"({first[:200]}). dnas loads checkpoints with weights_only=True only; delete the "
                            f"file to restart the {stage} stage from its beginning") from exc

    # -- status ---------------------------------------------------------------------
    def set_status(self, status: str, **extra: Any) -> None:
        self.write_json("status.json", {"status": status, **extra})

    def status(self) -> dict[str, Any]:
        if not self.exists("status.json"):
            return {"status": "unknown"}
        return self.read_json("status.json")
