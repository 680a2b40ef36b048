"""``biorules sweep``: the gain study, a grid of training runs in one resumable zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, pass_context, quiet_option
from cli.types import RangeParam, step_callback


def _names(kind: str):
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        if not items:
            raise click.BadParameter(f"give at least one {kind}", ctx=ctx, param=param)
        return items

    return convert


def _device(value: str) -> str:
    """``cpu`` or an available CUDA device, else a usage error naming ``--device``."""
    import re

    if value == "cpu":
        return value
    if not re.fullmatch(r"cuda(:\d+)?", value):
        raise click.UsageError(f"--device must be cpu, cuda or cuda:N, got {value!r}")
    import torch

    if not torch.cuda.is_available():
        raise click.UsageError(f"--device {value}: no CUDA device is available here")
    return value


@click.command()
@click.option("--step", type=float, default=None, is_eager=True, callback=step_callback,
              help="Step of a --gain START:STOP range  [default: 0.25]")
@click.option("--gain", type=RangeParam(), default="0.5:2.0", show_default=True,
              help="Initial gains: START:STOP[:STEP] (inclusive) or a comma list.")
@click.option("--rules", default="bptt,eprop,rflo", show_default=True, callback=_names("rule"),
              help="Comma list of rules (bptt, tbptt, eprop, eprop-random, rflo).")
@click.option("--floss", default="none", show_default=True, callback=_names("flossing mode"),
              help="Comma list of flossing modes (none, exact, local, eprop).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds 0..seeds-1.")
@click.option("--task", type=click.Choice(["2af", "dms", "cxt", "xor", "sine"]), default="2af", show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Number of units N.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True)
@click.option("--updates", type=click.IntRange(min=1), default=400, show_default=True, help="Training updates.")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--exponents", type=click.IntRange(min=1), default=5, show_default=True,
              help="Lyapunov exponents before/after training.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes  [default: CPU count]")
@click.option("--scheduler", default=None, help="Address of a dask.distributed scheduler to run the cells on.")
@click.option("--device", default="cpu", show_default=True,
              help="Torch device the stacks train on: cpu, cuda or cuda:N.")
@click.option("--stack", type=click.IntRange(min=1), default=None,
              help="Networks trained together in one tensor program  [default: chosen by the grid]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/sweep.zarr"),
              show_default=True, help="Zarr store (resumed if it holds the same sweep).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save accuracy and λ_max against g.")
@quiet_option
@pass_context
def sweep(ctx: Context, step, gain, rules, floss, seeds, task, n, alpha, updates, batch, lr, exponents, workers,
          scheduler, device, stack, out, plot) -> None:
    """Train every (gain, rule, floss, seed) cell; rerun the same command to resume."""
    from biorules.errors import InputError
    from biorules.experiments import sweep as study
    from biorules.experiments.gain_scan import parse_gains

    try:
        config = study.SweepConfig(gains=parse_gains(gain), rules=rules, floss=floss, seeds=tuple(range(seeds)),
                                   task=task, n=n, alpha=alpha, updates=updates, batch=batch, lr=lr,
                                   n_exponents=exponents, device=_device(device))
    except InputError as e:
        raise click.UsageError(str(e)) from None
    ds = study.run(config, out, workers=workers, scheduler=scheduler, stack=stack, progress=ctx.progress)
    table = study.summary(ds)
    ctx.echo(f"{task}, N={n}, {updates} updates, {seeds} seed(s): held-out accuracy (mean ± sd), λ_max [1/τ]")
    ctx.echo(f"{'gain':>6} {'rule':>13} {'floss':>6} {'accuracy':>15} {'λ before':>9} {'λ after':>9}")
    for g in table.gain.values:
        for r in table.rule.values:
            for f in table.floss.values:
                row = table.sel(gain=g, rule=r, floss=f)
                ctx.echo(f"{g:6.2f} {r:>13} {f:>6} {float(row.accuracy_mean):8.3f} ± {float(row.accuracy_sd):.3f} "
                         f"{float(row.lambda_before_mean):+9.3f} {float(row.lambda_after_mean):+9.3f}")
    failed = int((ds.status == 3).sum())
    if failed:
        ctx.echo(f"{failed} cell(s) failed; see status in the store")
    ctx.echo(f"store: {out}")
    if plot is not None:
        from biorules.report import plot_sweep

        ctx.echo(f"plot: {plot_sweep(ds, plot)}")
    ctx.emit_json({"out": str(out), "cells": int(ds.status.size), "failed": failed,
                   "accuracy_mean": table.accuracy_mean.to_dict()["data"]})
