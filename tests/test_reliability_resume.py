"""SIGKILL a real `dnas run` at a random point of search or retraining; `dnas run
--resume` must end with the same genotype, epoch records, test metrics and weights as
the uninterrupted run (same manifest, same seed)."""

from __future__ import annotations

import os
import random

from dnas_core.testing.faults import compare_runs, kill_and_resume, leftovers

from conftest import MINI_MANIFEST


def test_kill_then_resume_matches_the_uninterrupted_run(finished_run, tmp_path):
    seed = int(os.environ.get("DNAS_KILL_SEED", random.randrange(10**6)))
    trial = kill_and_resume(MINI_MANIFEST, tmp_path / "killed", random.Random(seed), epochs=4)
    note = f"(DNAS_KILL_SEED={seed}: killed after {trial.killed_after_records} epoch records + {trial.delay_s:.2f}s)"
    assert trial.killed, f"the run finished before the kill {note}"
    assert trial.resume_rc == 0, f"resume failed {note}: {trial.resume_stderr}"
    assert compare_runs(finished_run, tmp_path / "killed") == [], note
    assert leftovers(tmp_path / "killed") == []


def test_resume_refuses_a_completed_run(finished_run, capsys):
    from dnas_core.cli import main

    assert main(["run", "--resume", str(finished_run)]) == 2
    assert "already completed" in capsys.readouterr().err
