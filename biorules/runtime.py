"""Process-level settings of a run: what a worker process or the CLI sets once, before it computes.

glibc's allocator hands a freed block above its mmap threshold (at most 32 MB, adjusted as the
process runs) back to the system at once, and trims the top of the heap when it frees there. A
training loop allocates the same tens of megabytes at every update (a stack's recorded trial,
its learning signals), so each update faulted them in afresh: a stack of 35 networks at N = 64
spent a quarter of its time in page faults. :func:`keep_freed_memory` raises both thresholds, so
that freed memory stays in the process for the next update; the process's memory then stays at its
peak until it exits, which suits worker processes and the CLI, not a long-lived notebook.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
KEEP_BYTES = 1 << 30
"""Blocks up to this size come from the heap, and the heap keeps up to this much free memory [B]."""


def keep_freed_memory() -> bool:
    """Keep freed memory in the process (module docstring); True where the C library is glibc's
    and took the setting, False elsewhere (macOS, musl: nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) & bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
