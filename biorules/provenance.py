"""Provenance attrs, one schema for every store (biorules and segment): what made a result.

:func:`provenance_attrs` returns the same keys everywhere: ``biorules_version``, ``versions``
(a JSON object of the python and package versions), ``command``, ``created`` (UTC),
``git_commit`` (the checkout's commit, ``-dirty`` when it has changes, else ``unknown``) and
``device``. Everything here is cheap and never fails: no package is imported to learn its version.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "numba", "torch", "xarray", "zarr", "norse", "scipy", "click")
"""The packages whose versions every store records (with python)."""

PROVENANCE_KEYS = ("biorules_version", "versions", "command", "created", "git_commit", "device")
"""The keys :func:`provenance_attrs` returns, for every store."""

_GIT_TIMEOUT_S = 5.0


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        if name == "biorules":  # run from a checkout that is not installed
            import biorules

            return biorules.__version__
        return "not installed"


def versions() -> dict[str, str]:
    """Python's version and those of :data:`PACKAGES` (from package metadata, nothing imported)."""
    return {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}}


def _git(cwd: Path, *args: str) -> str | None:
    """``git args`` in ``cwd``: its stripped stdout, or None on any failure or timeout."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
            stdin=subprocess.DEVNULL, check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # status must not take the index lock
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the git checkout this package runs from, ``-dirty`` when the checkout has
    changes (``git status --porcelain`` non-empty, or unknown), ``"unknown"`` when the package
    is not in a checkout (an installed copy). Asked once per process."""
    here = Path(__file__).resolve().parent
    head = _git(here, "rev-parse", "HEAD")
    if head is None or not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", head):
        return "unknown"
    if _git(here, "ls-files", "--error-unmatch", "--", Path(__file__).name) is None:
        return "unknown"  # an installed copy that merely lies inside some other repository
    status = _git(here, "status", "--porcelain")
    return head if status == "" else f"{head}-dirty"


def device_name(device: object | None = None) -> str:
    """``device`` as text, with the GPU's name for a CUDA device (``"cuda:0 (NVIDIA H200)"``).

    With no ``device``: the current CUDA device when torch is already imported and CUDA is in
    use, else ``"cpu"``. torch is never imported here.
    """
    torch = sys.modules.get("torch")
    try:
        if device is None:
            if torch is None or not torch.cuda.is_initialized():
                return "cpu"
            device = f"cuda:{torch.cuda.current_device()}"
        text = str(device)
        if text.startswith("cuda") and torch is not None and torch.cuda.is_available():
            return f"{text} ({torch.cuda.get_device_name(device)})"
        return text
    except Exception:  # provenance never fails a run
        return str(device) if device is not None else "unknown"


def provenance_attrs(
    command: Sequence[str] | str | None = None, device: object | None = None
) -> dict[str, str]:
    """The provenance attrs of a store (keys :data:`PROVENANCE_KEYS`, all strings).

    ``command`` is the command line (default ``sys.argv``); ``device`` the device the run used
    (default: see :func:`device_name`).
    """
    if command is None:
        command = sys.argv
    return {
        "biorules_version": _version("biorules"),
        "versions": json.dumps(versions(), sort_keys=True),
        "command": command if isinstance(command, str) else shlex.join(map(str, command)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device": device_name(device),
    }
