"""Fault injection for reliability tests and benchmarks: kill a real ``dnas run`` at a
random point, resume it, and compare it with an uninterrupted run.

Used by ``tests/test_reliability_*.py`` and ``benchmarks/resume.py``; plugin authors
can run the same check on their own strategies::

    ref = run_cli(["run", manifest, "--out", str(tmp / "ref")])
    trial = kill_and_resume(manifest, tmp / "trial", random.Random(0), epochs=4)
    assert not compare_runs(tmp / "ref", tmp / "trial")
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

#: Files whose content must be identical between an uninterrupted and a resumed run.
COMPARED_JSON = ("genotype.json", "test_metrics.json")


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DNAS_PROGRESS", "0")
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], timeout: float = 600, env: dict[str, str] | None = None,
            preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """``dnas ARGS`` in a fresh interpreter (``python -m dnas_core``)."""
    return subprocess.run([sys.executable, "-m", "dnas_core", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(env), preexec_fn=preexec_fn)


def _records(run_dir: Path) -> int:
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return 0
    return sum(1 for line in p.read_text(encoding="utf-8").splitlines() if line.endswith("}"))


@dataclass
class KillTrial:
    killed: bool
    killed_after_records: int
    delay_s: float
    resume_rc: int
    resume_stderr: str


def kill_and_resume(manifest: str | Path, out: Path, rng: random.Random, epochs: int,
                    overrides: Sequence[str] = (), timeout: float = 600, target: int | None = None,
                    max_delay: float = 0.5) -> KillTrial:
    """Start ``dnas run``, SIGKILL it once ``k`` epoch records (random in
    ``[0, epochs)`` unless ``target`` names it; search and retrain epochs together) are
    in metrics.jsonl plus a random delay of up to ``max_delay`` seconds, then ``dnas run
    --resume`` it to the end."""
    drawn = rng.randrange(0, epochs)
    target = drawn if target is None else target
    delay = rng.uniform(0.0, max_delay)
    proc = subprocess.Popen([sys.executable, "-m", "dnas_core", "run", str(manifest), *overrides, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())
    start = time.monotonic()
    killed = False
    try:
        while proc.poll() is None and time.monotonic() - start < timeout:
            if (out / "status.json").exists() and _records(out) >= target:
                time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    if not killed and (out / "result.json").exists():
        return KillTrial(False, _records(out), delay, 0, "")
    res = run_cli(["run", "--resume", str(out)], timeout=timeout)
    return KillTrial(killed, target, delay, res.returncode, res.stderr[-2000:])


def _epoch_records(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({"corrupt line": line})
    return out


def compare_runs(a: str | Path, b: str | Path) -> list[str]:
    """Differences between two finished runs of the same manifest: the genotype, the
    test metrics, every epoch record and every tensor of the retrained model. Empty
    when they are identical."""
    import torch

    a, b = Path(a), Path(b)
    diffs: list[str] = []
    for d in (a, b):
        status = json.loads((d / "status.json").read_text()).get("status") if (d / "status.json").exists() else None
        if status != "completed" or not (d / "result.json").exists():
            diffs.append(f"{d}: not a completed run (status {status})")
    if diffs:
        return diffs
    for name in COMPARED_JSON:
        ja, jb = (json.loads((d / name).read_text()) for d in (a, b))
        if name == "test_metrics.json":  # latency is a measurement, not a result
            ja, jb = ja.get("test"), jb.get("test")
        if ja != jb:
            diffs.append(f"{name}: {ja} != {jb}")
    ra, rb = _epoch_records(a), _epoch_records(b)
    if ra != rb:
        diffs.append(f"metrics.jsonl differs ({len(ra)} vs {len(rb)} records)")
    sa, sb = (torch.load(d / "model.pt", map_location="cpu", weights_only=True) for d in (a, b))
    if sa.keys() != sb.keys():
        diffs.append("model.pt: different tensors")
    else:
        for k in sa:
            if not torch.equal(sa[k], sb[k]):
                diffs.append(f"model.pt: tensor {k} differs")
                break
    return diffs


def install_plugin_module(module_file: str | Path, folder: str | Path, entry_name: str | None = None) -> Path:
    """Make a one-module plugin visible to ``dnas`` in fresh interpreters without pip:
    copy ``module_file`` into ``folder`` together with a ``.dist-info`` that declares its
    ``dnas.plugins`` entry point (named ``entry_name``, default the module's name). Put
    ``folder`` on ``PYTHONPATH`` for the subprocesses (``run_cli`` and
    ``kill_and_resume`` pass the environment on). Returns ``folder``."""
    import shutil

    module_file, folder = Path(module_file), Path(folder)
    module = module_file.stem
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(module_file, folder / module_file.name)
    info = folder / f"{module}-0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[dnas.plugins]\n{entry_name or module} = {module}\n")
    return folder


def leftovers(run_dir: str | Path) -> list[str]:
    """Temporary files (``.<name>.*.tmp``) left in a run directory."""
    return sorted(str(p.relative_to(run_dir)) for p in Path(run_dir).rglob(".*.tmp"))


__all__ = ["KillTrial", "cli_env", "compare_runs", "install_plugin_module", "kill_and_resume", "leftovers", "run_cli"]
