"""Wall-clock timing shared by the benchmark scripts: best of several runs, and the files of an
older revision of this repository to time against in the same run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def best_time(fn: Callable[[], Any], repeat: int = 1, warmup: bool = False) -> tuple[float, Any]:
    """The shortest of ``repeat`` timed calls of ``fn`` [s] (after one untimed call if ``warmup``),
    and the last call's result."""
    if warmup:
        fn()
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


ROOT = Path(__file__).resolve().parents[1]


def old_tree(rev: str, into: Path) -> Path:
    """The files of git revision ``rev`` of this repository, written under ``into`` (run them with
    ``into`` first on ``PYTHONPATH``)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_in_tree(tree: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c code args`` with ``tree`` first on the path (so its ``biorules`` is the one that
    runs), its output captured; raises if it fails."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=tree, check=True,
                          capture_output=True, text=True)
