"""Shared CLI state (``--debug``, ``--quiet``, ``--json``) and the one place exit codes are decided."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
        """Print the machine-readable summary when ``--json`` was given."""
        if self.json:
            click.echo(json.dumps(payload, indent=2, default=float))

    @property
    def progress(self) -> bool:
        """Whether to draw progress bars (off when quiet, in JSON mode, or without a terminal)."""
        return not (self.quiet or self.json)


pass_context = click.make_pass_decorator(Context, ensure=True)


def quiet_option(f):
    """``--quiet`` on a subcommand, equivalent to the group's ``biorules --quiet``."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(Context).quiet = True
        return value

    return click.option(
        "--quiet", is_flag=True, expose_value=False, callback=callback,
        help="No progress bars or summary.",
    )(f)


def fail(message: str, code: int = EXIT_FAILED) -> None:
    """Leave with one line on stderr and ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
