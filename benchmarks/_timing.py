"""Wall-clock timing shared by the benchmark scripts: best of several runs."""

from __future__ import annotations

import time
from collections.abc import Callable
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
