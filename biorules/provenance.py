"""Provenance attrs for every result: package versions, command line, creation time."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance_attrs() -> dict[str, str]:
    """Versions of biorules and its numeric stack, the command line and the UTC time."""
    return {
        "biorules_version": _version("biorules"),
        "versions": ", ".join(
            f"{p} {_version(p)}" for p in ("numpy", "numba", "torch", "xarray", "zarr", "norse")
        ),
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
