"""``biorules floss``: gradient flossing of an untrained rate network."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, pass_context, quiet_option


@click.command()
@click.option("--gain", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="Initial gain g.")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Number of units N.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              help="Leak α = dt/τ.")
@click.option("--nonlinearity", type=click.Choice(["tanh", "retanh", "relu"]), default="tanh", show_default=True)
@click.option("--init", type=click.Choice(["gaussian", "orthogonal", "sparse", "dale"]), default="gaussian",
              show_default=True)
@click.option("--mode", type=click.Choice(["exact", "local", "eprop"]), default="local", show_default=True,
              help="Flossing gradient: exact (autograd through QR), local (three-factor), eprop.")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Flossing steps.")
@click.option("--exponents", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number k of largest exponents flossed.")
@click.option("--target", type=float, default=0.0, show_default=True, help="Target λ* in 1/τ.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Flossing Adam learning rate  [default: 1e-3 exact, 3e-4 local/eprop]")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Accumulated steps per flossing window  [default: 39 exact, 150 local/eprop]")
@click.option("--transient", type=click.IntRange(min=0), default=None,
              help="Window steps before accumulation  [default: 16 exact, 50 local/eprop]")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Initial states per flossing step  [default: 1 exact, 4 local/eprop]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/floss.zarr"),
              show_default=True, help="New zarr store for the result.")
@quiet_option
@pass_context
def floss(ctx: Context, gain, n, alpha, nonlinearity, init, mode, steps, exponents, target, lr, window,
          transient, batch, seed, out) -> None:
    """Floss an untrained network: drive its largest Lyapunov exponents toward a target."""
    if exponents > n:
        raise click.BadParameter(f"{exponents} exponents exceed the {n} units (--n)", param_hint="'--exponents'")
    if out.exists():
        raise click.BadParameter(f"{out} already exists; choose another path", param_hint="'--out'")
    from biorules import store
    from biorules.experiments.floss_study import floss_untrained
    from biorules.flossing import FlossConfig
    from biorules.network import NetworkParams

    params = NetworkParams(n=n, alpha=alpha, nonlinearity=nonlinearity, gain=gain, init=init, seed=seed)
    cfg = FlossConfig(mode=mode, n_exponents=exponents, target=target * alpha, lr=lr, window=window,
                      transient=transient, batch=batch, seed=seed)
    ds = floss_untrained(params, cfg, steps, progress=ctx.progress)
    store.save(ds, out)
    before, after = float(ds.lambda_before[0]), float(ds.lambda_after[0])
    status = {v: k for k, v in store.STATUS.items()}[int(ds.status)]
    ctx.echo(f"flossing ({mode}, {steps} steps, k={exponents}) at g={gain}, N={n}: "
             f"λ_max {before:+.4f} -> {after:+.4f} 1/τ (target {target:+.4f}); "
             f"‖ΔW‖/‖W0‖ = {float(ds.weight_change):.3f}; status {status}")
    ctx.echo(f"store: {out}")
    ctx.emit_json({"out": str(out), "lambda_before": before, "lambda_after": after,
                   "weight_change": float(ds.weight_change), "status": status})
