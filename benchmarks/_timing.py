"""Wall-clock timing shared by the benchmark scripts: best of several runs, and the files of an
older revision of this repository to time against in the same run."""

from __future__ import annotations

import subprocess
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
