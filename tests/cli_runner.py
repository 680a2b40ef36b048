"""Run the ``biorules`` entry point as a user does: a fresh process, exit code and both streams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
