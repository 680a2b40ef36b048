"""Process-level settings (biorules.runtime): freed memory stays in the process."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

_RSS_DROP = """
import sys
import numpy as np
from biorules.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
a = np.ones(64 << 20, dtype=np.uint8)   # 64 MiB, written
before = rss()
del a
print(kept, before - rss())
"""


@pytest.mark.skipif(platform.system() != "Linux" or "libc.so" not in str(ctypes.util.find_library("c")),
                    reason="mallopt is glibc's")
def test_freed_blocks_stay_in_the_process_only_when_asked():
    def drop(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _RSS_DROP, mode], capture_output=True, text=True, check=True)
        kept, dropped = out.stdout.split()
        return kept, int(dropped)

    kept, dropped = drop("keep")
    assert kept == "True" and dropped < 8 << 20  # the 64 MiB block went back to the heap, not the system
    assert drop("plain")[1] > 48 << 20  # glibc's default: a block this large is unmapped when freed
