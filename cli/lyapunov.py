"""``biorules lyapunov``: Lyapunov spectra over a grid of initial gains."""

from __future__ import annotations

from pathlib import Path

import click

from biorules.activations import NONLINEARITIES
from biorules.network import INITS
from cli.context import Context, examples, output_options, overwrite_option, pass_context, usage
from cli.types import Finite, RangeParam, step_callback


@click.command(epilog=examples(
    "biorules lyapunov --gain 0.5:2.0 --n 200 --seeds 3 --exponents 10",
    "biorules --json lyapunov --gain 0.8,1.0,1.2 --nonlinearity retanh --plot results/lmax.png"))
@click.option("--step", type=Finite(), default=None, is_eager=True, callback=step_callback,
              help="Step of a --gain START:STOP range  [default: 0.25]")
@click.option("--gain", type=RangeParam(), default="0.5:2.0", show_default=True,
              help="Initial gains g: START:STOP[:STEP] (inclusive) or a comma list.")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Number of units N.")
@click.option("--alpha", type=Finite(0, 1, min_open=True), default=0.2, show_default=True,
              help="Leak α = dt/τ.")
@click.option("--nonlinearity", type=click.Choice(NONLINEARITIES), default="tanh", show_default=True,
              help="φ of the rate network.")
@click.option("--init", type=click.Choice(INITS), default="gaussian", show_default=True,
              help="Initial connectivity scheme.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Number of network seeds (0..seeds-1).")
@click.option("--exponents", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of exponents k (largest first).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Accumulated steps T_acc  [default: 400 τ]")
@click.option("--transient", type=click.IntRange(min=0), default=None,
              help="Transient steps T_tr  [default: 100 τ]")
@click.option("--qr-interval", type=click.IntRange(min=1), default=1, show_default=True,
              help="Steps between re-orthonormalisations.")
@click.option("--out", type=click.Path(dir_okay=True, file_okay=False, path_type=Path),
              default=Path("results/lyapunov.zarr"), show_default=True,
              help="Zarr store; the same command again resumes it (docs/lyapunov.md).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save a plot of λ_max against g.")
@overwrite_option
@output_options
@pass_context
def lyapunov(ctx: Context, step, gain, n, alpha, nonlinearity, init, seeds, exponents, steps, transient,
             qr_interval, out, plot, overwrite) -> None:
    """Measure Lyapunov spectra of random rate networks over a grid of initial gains.

    Every (gain, seed) cell is written as it finishes; the same command again resumes."""
    if exponents > n:
        raise click.BadParameter(f"{exponents} exponents exceed the {n} units (--n)", param_hint="'--exponents'")
    from biorules import store
    from biorules.experiments import gain_scan
    from biorules.experiments.grid import check_size
    from biorules.network import NetworkParams

    def configure():
        check_size((len(gain), seeds), gain_scan.CELL_DIMS)
        return gain_scan.LyapunovScanConfig(
            gains=gain_scan.parse_gains(gain), seeds=tuple(range(seeds)),
            network=NetworkParams(n=n, alpha=alpha, nonlinearity=nonlinearity, init=init),
            n_exponents=exponents, steps=steps, transient=transient, qr_interval=qr_interval,
        )

    config = usage(configure)
    if plot is not None:
        usage(lambda: store.check_writable(plot, "--plot"))
    if usage(lambda: store.prepare_out(out, config.to_json(), overwrite=overwrite)) == "replace":
        store.replace_written(out)
    ds = gain_scan.run(config, out, progress=ctx.progress)
    table = gain_scan.summary(ds)
    ctx.echo(f"λ_max [1/τ] over {seeds} seed(s), N={n}, α={alpha}, {nonlinearity}:")
    ctx.echo(f"{'gain':>8}  {'mean':>9}  {'sd':>8}")
    for g in table["gain"].values:
        row = table.sel(gain=g)
        ctx.echo(f"{g:8.3f}  {float(row['mean']):+9.4f}  {float(row['sd']):8.4f}")
    ctx.echo(f"store: {out}")
    if plot is not None:
        from biorules.report import plot_lambda_max

        ctx.echo(f"plot: {plot_lambda_max(ds, plot)}")
    counts = store.status_counts(ds["status"].values)
    if counts["diverged"] or counts["failed"]:
        ctx.echo(f"{counts['diverged']} of {counts['cells']} cell(s) diverged, {counts['failed']} failed "
                 "(reasons in the store's message variable; exit 3)")
    ctx.emit_json({
        "out": str(out),
        "gain": [float(g) for g in table["gain"].values],
        "lambda_max_mean": [float(v) for v in table["mean"].values],
        "lambda_max_sd": [float(v) for v in table["sd"].values],
        **counts,
    })
    ctx.finish(counts["diverged"], counts["failed"])
