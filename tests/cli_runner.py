"""Run the ``biorules`` entry point as a user does: a fresh process, exit code and both streams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from cli.main import main; main()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_in_process(args: list[str], capsys) -> tuple[int, str, str]:
    """The entry point called in this process (``main(args)``): exit code, stdout, stderr."""
    from cli.main import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
