"""The peers' benchmark environment, shared by the benchmarks that run the
implementations a user would otherwise pick (facts in ``../shared/PEERS.md``).

``benchmarks/.venv-peers`` holds AutoDL-Projects (``xautodl`` 1.0.0) and NNI 3.0 beside
the same CPU build of torch that dnas is measured with. It is created on first use and
is never a dependency of dnas.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PEERS_VENV = Path(__file__).resolve().parent / ".venv-peers"

#: pip commands that build the peers' environment. The CPU build of torch 2.13.0 is the
#: one dnas is measured with.
PEER_INSTALL = [
    ["install", "-q", "torch==2.13.0", "numpy"],
    ["install", "-q", "--no-deps", "xautodl==1.0.0"],
    ["install", "-q", "nni==3.0", "pytorch-lightning"],
]


def ensure_peers_venv(log: Callable[[str], None]) -> Path | None:
    """The peers' python, building the environment on first use; None (after logging
    the error) when it cannot be built, e.g. without a package index. An environment
    counts as built once every install has succeeded (a marker file): one left
    half-built by a failed or killed install is completed by the next call."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / ".dnas-peers-complete"
    if marker.exists():
        return python
    log(f"building the peers' environment {PEERS_VENV} (AutoDL xautodl 1.0.0, NNI 3.0); a few minutes")
    if not python.exists():
        proc = subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], capture_output=True, text=True,
                              check=False)
        if proc.returncode:
            log(f"peers: `python -m venv {PEERS_VENV}` failed:\n{proc.stderr[-2000:]}")
            return None
    for args in PEER_INSTALL:
        proc = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, check=False)
        if proc.returncode:
            log(f"peers: `pip {' '.join(args)}` failed:\n{proc.stderr[-2000:]}")
            return None
    marker.write_text("every install of benchmarks/_peers.py PEER_INSTALL succeeded\n")
    return python
