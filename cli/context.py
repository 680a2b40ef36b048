"""Shared CLI state (``--debug``, ``--quiet``, ``--json``), the shared options, and the exit codes.

Exit codes: 0 ok, 1 the run failed, 2 bad usage or bad input, 3 the run finished but some cells
(or the run itself) diverged or failed, 130 interrupted.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNFINISHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

INTERRUPTED = "Interrupted; finished results are kept, rerun the same command to resume."


def strict(value: Any) -> Any:
    """``value`` made strict-JSON-safe: NaN and ±inf become None, numpy scalars and arrays plain values."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars and arrays
        return strict(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


@dataclass
class Context:
    """Options of the ``biorules`` group, handed to every subcommand."""

    debug: bool = False
    quiet: bool = False
    json: bool = False

    def echo(self, message: str = "") -> None:
        """Print a human-readable line unless ``--quiet`` or ``--json``."""
        if not (self.quiet or self.json):
            click.echo(message)

    def emit_json(self, payload: dict[str, Any]) -> None:
        """Print the machine-readable summary when ``--json`` was given: strict JSON (null, never NaN)."""
        if self.json:
            click.echo(json.dumps(strict(payload), indent=2, allow_nan=False))

    @property
    def progress(self) -> bool:
        """Whether to draw progress bars: only on a terminal, and not with ``--quiet`` or ``--json``."""
        return not (self.quiet or self.json) and _isatty(sys.stderr)

    def finish(self, diverged: int = 0, failed: int = 0) -> None:
        """End the command: exit 3 when cells (or the run) diverged or failed, else return (exit 0)."""
        if diverged or failed:
            click.get_current_context().exit(EXIT_UNFINISHED)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


pass_context = click.make_pass_decorator(Context, ensure=True)


def _flag(name: str, attr: str, help_text: str):
    def decorator(f):
        def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
            if value:
                setattr(ctx.ensure_object(Context), attr, True)
            return value

        return click.option(name, is_flag=True, expose_value=False, callback=callback, is_eager=True,
                            help=help_text)(f)

    return decorator


quiet_option = _flag("--quiet", "quiet", "No progress bars or summary (the same as biorules --quiet).")
"""``--quiet`` on a subcommand, equivalent to the group's ``biorules --quiet``."""

json_option = _flag("--json", "json", "Print a machine-readable summary, strict JSON (the same as biorules --json).")
"""``--json`` on a subcommand, equivalent to the group's ``biorules --json``."""


def output_options(f):
    """``--quiet`` and ``--json``, the display options of every command."""
    return quiet_option(json_option(f))


OVERWRITE_HELP = ("Replace an existing --out that biorules wrote (a store of another configuration or version); "
                  "anything else is never touched.")


def overwrite_option(f):
    """``--overwrite``: replace an existing output this tool wrote (and nothing else)."""
    return click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)(f)


def usage(call):
    """Run ``call()``; an InputError it raises becomes a usage error (exit 2, one line)."""
    from biorules.errors import InputError

    try:
        return call()
    except InputError as e:
        raise click.UsageError(str(e)) from None


def fail(message: str, code: int = EXIT_FAILED) -> None:
    """Leave with one line on stderr and ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def examples(*lines: str) -> str:
    """A command's epilog: its examples, kept as written (click does not rewrap them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
