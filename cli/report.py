"""``biorules report``: the claims, figures and text summary of a gain-study store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.context import Context, pass_context, quiet_option


def _json_option(f):
    """``--json`` on the subcommand, equivalent to the group's ``biorules --json``."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(Context).json = True
        return value

    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=callback,
                        help="Print the claims as strict JSON (null for missing numbers) instead of the summary.")(f)


@click.command(epilog="Example:\n\n\b\n  biorules sweep --out results/sweep.zarr\n"
                      "  biorules report results/sweep.zarr --out results/report --gain 0.5")
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the figures (PNG and PDF), summary.txt and claims.json  "
                   "[default: STORE's name with .report, next to it: results/sweep.zarr -> results/sweep.report]")
@click.option("--gain", type=float, default=None,
              help="Gain of the learning-curve figure, one of the sweep's  [default: the smallest]")
@click.option("--boot", type=click.IntRange(min=100), default=10000, show_default=True,
              help="Bootstrap resamples per claim.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the bootstrap.")
@_json_option
@quiet_option
@pass_context
def report(ctx: Context, store_path: Path, out: Path | None, gain: float | None, boot: int, seed: int) -> None:
    """Report on a gain-study STORE: claims with bootstrap CIs, figures, a text summary.

    Each claim's effect (mean over seeds of a paired difference) comes with a paired bootstrap
    95 % CI and a verdict: supported, not supported, inconclusive or n/a. The summary is printed
    and saved as summary.txt, the claims as claims.json."""
    from biorules import report as rep

    out = store_path.with_name(f"{store_path.stem}.report") if out is None else out
    result = rep.write_report(store_path, out, gain=gain, n_boot=boot, seed=seed)
    ctx.echo(result.summary)
    ctx.echo(f"report: {out}")
    if ctx.json:
        click.echo(json.dumps({"store": str(store_path), "out": str(out), **result.to_dict()}, indent=2,
                              allow_nan=False))
