"""``biorules floss``: gradient flossing of an untrained rate network."""

from __future__ import annotations

from pathlib import Path

import click

from biorules.activations import NONLINEARITIES
from biorules.network import INITS
from cli.choices import FLOSS_MODES
from cli.context import Context, examples, output_options, overwrite_option, pass_context, usage
from cli.types import Finite


@click.command(epilog=examples(
    "biorules floss --gain 0.5 --mode exact --steps 300 --exponents 5",
    "biorules --json floss --gain 2.0 --mode local --target 0 --out results/floss-g2.zarr"))
@click.option("--gain", type=Finite(min=0, min_open=True), default=0.5, show_default=True,
              help="Initial gain g.")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Number of units N.")
@click.option("--alpha", type=Finite(0, 1, min_open=True), default=0.2, show_default=True,
              help="Leak α = dt/τ.")
@click.option("--nonlinearity", type=click.Choice(NONLINEARITIES), default="tanh", show_default=True,
              help="φ of the rate network.")
@click.option("--init", type=click.Choice(INITS), default="gaussian", show_default=True,
              help="Initial connectivity scheme.")
@click.option("--mode", type=click.Choice(FLOSS_MODES), default="local", show_default=True,
              help="Flossing gradient: exact (autograd through QR), local (three-factor), eprop (docs/flossing.md).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Flossing steps.")
@click.option("--exponents", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number k of largest exponents flossed.")
@click.option("--target", type=Finite(), default=0.0, show_default=True, help="Target λ* in 1/τ.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=None,
              help="Flossing Adam learning rate  [default: 1e-3 exact, 3e-4 local/eprop]")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Accumulated steps per flossing window  [default: 39 exact, 150 local/eprop]")
@click.option("--transient", type=click.IntRange(min=0), default=None,
              help="Window steps before accumulation  [default: 16 exact, 50 local/eprop]")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Initial states per flossing step  [default: 1 exact, 4 local/eprop]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Master seed (network and flossing streams).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/floss.zarr"),
              show_default=True, help="Zarr store for the result; the same command again reports it.")
@overwrite_option
@output_options
@pass_context
def floss(ctx: Context, gain, n, alpha, nonlinearity, init, mode, steps, exponents, target, lr, window,
          transient, batch, seed, out, overwrite) -> None:
    """Floss an untrained network: drive its largest Lyapunov exponents toward a target."""
    import json
    from dataclasses import asdict

    if exponents > n:
        raise click.BadParameter(f"{exponents} exponents exceed the {n} units (--n)", param_hint="'--exponents'")
    from biorules import store

    def configure():
        from biorules.flossing import FlossConfig
        from biorules.network import NetworkParams
        from biorules.train import seeds

        # the master seed builds the same W as `biorules train/sweep/lyapunov --seed`
        params = NetworkParams(n=n, alpha=alpha, nonlinearity=nonlinearity, gain=gain, init=init,
                               seed=seeds(seed)["network"])
        cfg = FlossConfig(mode=mode, n_exponents=exponents, target=target * alpha, lr=lr, window=window,
                          transient=transient, batch=batch, seed=seed)
        return params, cfg

    params, cfg = usage(configure)
    config = json.dumps({"network": asdict(params), "floss": asdict(cfg), "steps": steps}, sort_keys=True,
                        default=str)
    mode_out = usage(lambda: store.prepare_out(out, config, overwrite=overwrite))
    if mode_out == "resume":
        ds = store.open_store(out).load()
        ctx.echo(f"{out} holds this run already; its summary:")
    else:
        from biorules.experiments.floss_study import floss_untrained

        with store.writer_lock(out):
            ds = floss_untrained(params, cfg, steps, progress=ctx.progress).assign_attrs(config=config)
            store.save(ds, out, replace=mode_out == "replace")
    before, after = float(ds.lambda_before[0]), float(ds.lambda_after[0])
    status = {v: k for k, v in store.STATUS.items()}.get(int(ds.status), "failed")
    ctx.echo(f"flossing ({mode}, {steps} steps, k={exponents}) at g={gain}, N={n}: "
             f"λ_max {before:+.4f} -> {after:+.4f} 1/τ (target {target:+.4f}); "
             f"‖ΔW‖/‖W0‖ = {float(ds.weight_change):.3f}; status {status}")
    ctx.echo(f"store: {out}")
    ctx.emit_json({"out": str(out), "lambda_before": before, "lambda_after": after,
                   "weight_change": float(ds.weight_change), "status": status})
    ctx.finish(diverged=int(status == "diverged"), failed=int(status == "failed"))
