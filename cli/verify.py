"""``biorules verify``: check a store this tool wrote, and optionally repair it."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import EXIT_USAGE, Context, examples, output_options, pass_context, usage


@click.command(epilog=examples(
    "biorules verify results/sweep.zarr",
    "biorules verify --repair results/sweep.zarr && biorules sweep   # recompute the damaged cells"))
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--repair", is_flag=True,
              help="Mark every damaged cell pending (its chunks rewritten empty, metadata restored from the "
                   "consolidated copy), so the command that made STORE recomputes it.")
@output_options
@pass_context
def verify(ctx: Context, store_path: Path, repair: bool) -> None:
    """Check STORE: metadata, that every chunk is on disk and decodes, and the status codes.

    Each problem is printed with the cell it spoils; exit 0 when the store is whole (or was
    repaired), 2 when damage is left."""
    from biorules import store

    usage(lambda: store.open_store(store_path, verify=False))
    damage = store.verify_store(store_path)
    repaired, left = 0, damage
    if repair and damage:
        repaired, left = store.repair_store(store_path)
    for d in damage:
        ctx.echo(("repaired: " if repair and d not in left else "") + d.text)
    if repair and repaired:
        ctx.echo(f"{repaired} cell(s) of {store_path} marked pending; rerun the command that made it to recompute them")
    elif not damage:
        ctx.echo(f"{store_path}: whole")
    ctx.emit_json({"store": str(store_path), "problems": [d.text for d in damage],
                   "repaired_cells": repaired, "left": [d.text for d in left]})
    if left:
        hint = ("rerun with --repair to mark the damaged cells pending" if not repair and all(d.repairable for d in left)
                else "it cannot be repaired: move it away and rerun with a new --out (or --overwrite)")
        click.echo(f"Error: {store_path} is damaged ({len(left)} problem(s)); {hint}", err=True)
        click.get_current_context().exit(EXIT_USAGE)
