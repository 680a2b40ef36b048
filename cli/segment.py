"""``biorules segment``: RWKV-UNet segmentation commands (train by default, info, predict, eval)."""

from __future__ import annotations

import click

from cli.lazy import LazyGroup

SUBCOMMANDS = {
    "info": "cli.segment_info:info",
}


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS, invoke_without_command=True)
@click.pass_context
def segment(ctx: click.Context) -> None:
    """Medical image segmentation with RWKV-UNet."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
