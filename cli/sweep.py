"""``biorules sweep``: the gain study, a grid of training runs in one resumable zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from biorules.rules import RULE_NAMES
from biorules.tasks import TASKS
from cli.choices import FLOSS_MODES
from cli.context import Context, output_options, overwrite_option, pass_context, usage
from cli.types import Finite, RangeParam, step_callback


def _names(kind: str, allowed: tuple[str, ...]):
    """A comma list of names from the closed set ``allowed`` (a registry), as a tuple."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        if not items:
            raise click.BadParameter(f"give at least one {kind}", ctx=ctx, param=param)
        bad = [v for v in items if v not in allowed]
        if bad:
            raise click.BadParameter(f"unknown {kind} {bad[0]!r}; choose from {', '.join(allowed)}", ctx=ctx,
                                     param=param)
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


@click.command(epilog="""\b
Examples:
  biorules sweep                                  # the default study (about 10 min on 2 cores)
  biorules sweep --gain 0.5:2.0 --rules bptt,eprop --seeds 3 --out results/mine.zarr
  biorules sweep --preset paper --device cuda     # the full protocol on a GPU""")
@click.option("--preset", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="Named study the other options override: default (dms, N=64, 4 gains, bptt/eprop/rflo, "
                   "no flossing and e-prop flossing, 5 seeds, 300 updates) or paper (2af/dms/cxt, N=200, 7 gains, "
                   "4 rules, 4 flossing modes, 5 seeds, 2000 updates).")
@click.option("--step", type=Finite(), default=None, is_eager=True, callback=step_callback,
              help="Step of a --gain START:STOP range  [default: 0.25]")
@click.option("--gain", type=RangeParam(), default=None,
              help="Initial gains: START:STOP[:STEP] (inclusive) or a comma list  [default: from the preset]")
@click.option("--rules", default=None, callback=_names("rule", RULE_NAMES),
              help="Comma list of rules (bptt, tbptt, eprop, eprop-random, rflo)  [default: from the preset]")
@click.option("--floss", default=None, callback=_names("flossing mode", ("none", *FLOSS_MODES)),
              help="Comma list of flossing modes (none, exact, local, eprop)  [default: from the preset]")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Master seeds 0..seeds-1  [default: from the preset]")
@click.option("--task", "tasks", default=None, callback=_names("task", TASKS),
              help="Comma list of tasks (2af, dms, cxt, xor, sine)  [default: from the preset]")
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Number of units N  [default: from the preset]")
@click.option("--alpha", type=Finite(0, 1, min_open=True), default=None,
              help="α = dt/τ of the rate networks  [default: 0.2]")
@click.option("--updates", type=click.IntRange(min=1), default=None, help="Training updates  [default: from the preset]")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Trials per update  [default: 32]")
@click.option("--lr", type=Finite(min=0, min_open=True), default=None,
              help="Adam learning rate  [default: 0.001]")
@click.option("--exponents", type=click.IntRange(min=1), default=None,
              help="Lyapunov exponents before/after training, in each condition  [default: from the preset]")
@click.option("--floss-target", type=Finite(), default=None,
              help="Flossing target λ* [1/τ]  [default: 0]")
@click.option("--floss-side", type=click.Choice(["both", "below", "above"]), default=None,
              help="Exponents flossing pulls toward λ*: both, below (raise only those under it) or above  "
                   "[default: below for the default preset, both for paper]")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes; they end with this process  [default: CPU count; with --device cuda, "
                   "4 per GPU]")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="dask.distributed scheduler (tcp://HOST:PORT) to run the cells on; the run ends with one line "
                   "when it cannot be reached, is lost, or has had no worker for 2 minutes.")
@click.option("--device", default="cpu", show_default=True,
              help="Torch device the stacks train on: cpu, cuda or cuda:N.")
@click.option("--stack", type=click.IntRange(min=1), default=None,
              help="Networks trained together in one tensor program  [default: chosen by the grid]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/sweep.zarr"),
              show_default=True,
              help="Zarr store. The same command again resumes it: it runs the pending cells and retries the "
                   "failed ones (diverged cells are results and are kept).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save accuracy and λ_max against g.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the report's figures and summary into this folder.")
@click.option("--noise", type=Finite(min=0), default=None,
              help="σ_rec of the activity noise σ_rec√(2α)ξ_t in every trial  [default: 0, off]")
@click.option("--learn-a0", is_flag=True, default=False, help="Every network learns its initial state a_0.")
@click.option("--online", is_flag=True, default=False,
              help="eprop, eprop-random and rflo update at every loss step of a trial (bptt still per batch).")
@click.option("--save-weights", is_flag=True, default=False,
              help="Keep every cell's initial and final weights in the store's weights group "
                   "(about 2(N²+N·n_in+N+n_out·N+n_out)·4 bytes per cell: 36 kB at N=64).")
@overwrite_option
@output_options
@pass_context
def sweep(ctx: Context, preset, step, gain, rules, floss, seeds, tasks, n, alpha, updates, batch, lr, exponents,
          floss_target, floss_side, workers, scheduler, device, stack, out, plot, report_dir, noise, learn_a0, online,
          save_weights, overwrite) -> None:
    """Train every (task, gain, rule, floss, seed) cell, test it and measure its spectra; rerun the same
    command to resume. Ends with the study's claims and their verdicts (the protocol: docs/study.md)."""
    from biorules.experiments import sweep as study
    from biorules.experiments.gain_scan import parse_gains

    given = dict(gains=None if gain is None else parse_gains(gain), rules=rules, floss=floss,
                 seeds=None if seeds is None else tuple(range(seeds)), tasks=tasks, n=n, alpha=alpha,
                 updates=updates, batch=batch, lr=lr, n_exponents=exponents, noise=noise,
                 learn_a0=learn_a0 or None, online=online or None)
    overrides = {k: v for k, v in given.items() if v is not None}
    if save_weights:
        overrides["save_weights"] = True
    if floss_target is not None or floss_side is not None:
        options = dict(study.preset(preset).floss_options)
        if floss_target is not None:
            options["target"] = floss_target * (alpha or 0.2)
        if floss_side is not None:
            options["side"] = floss_side
        overrides["floss_options"] = options
    from biorules import store
    from biorules.experiments.grid import check_scheduler, check_size

    def configure():
        config = study.preset(preset, device=_device(device), **overrides)
        check_size([len(getattr(config, f)) for f in ("tasks", "gains", "rules", "floss", "seeds")], study.CELL_DIMS)
        return config

    config = usage(configure)
    for path, option in ((plot, "--plot"), (report_dir, "--report")):
        if path is not None:
            usage(lambda path=path, option=option: store.check_writable(path, option))
    if scheduler is not None:
        usage(lambda: check_scheduler(scheduler))
    if usage(lambda: store.prepare_out(out, config.to_json(), overwrite=overwrite)) == "replace":
        store.replace_written(out)
    ds = study.run(config, out, workers=workers, scheduler=scheduler, stack=stack, progress=ctx.progress)
    table = study.summary(ds)
    n_seeds = ds.sizes["seed"]
    ctx.echo(f"{', '.join(config.tasks)}, N={config.n}, {config.updates} updates, {n_seeds} seed(s): "
             f"test accuracy (mean ± sd), λ_max [1/τ, {table.attrs['condition']}]")
    ctx.echo(f"{'task':>5} {'gain':>6} {'rule':>13} {'floss':>6} {'accuracy':>15} {'λ before':>9} {'λ after':>9}")
    for t in table.task.values:
        for g in table.gain.values:
            for r in table.rule.values:
                for f in table.floss.values:
                    row = table.sel(task=t, gain=g, rule=r, floss=f)
                    ctx.echo(f"{t:>5} {g:6.2f} {r:>13} {f:>6} {float(row.accuracy_mean):8.3f} ± "
                             f"{float(row.accuracy_sd):.3f} {float(row.lambda_before_mean):+9.3f} "
                             f"{float(row.lambda_after_mean):+9.3f}")
    counts = store.status_counts(ds["status"].values)
    if counts["diverged"] or counts["failed"]:
        ctx.echo(f"{counts['diverged']} of {counts['cells']} cell(s) diverged, {counts['failed']} failed: reasons in "
                 "the store's message variable; a rerun retries the failed cells (exit 3)")
    _report(ctx, ds, report_dir)
    ctx.echo(f"store: {out}")
    if plot is not None:
        from biorules.report import plot_sweep

        ctx.echo(f"plot: {plot_sweep(ds, plot)}")
    ctx.emit_json({"out": str(out), **counts, "accuracy_mean": table.accuracy_mean.to_dict()["data"]})
    ctx.finish(counts["diverged"], counts["failed"])


def _report(ctx: Context, ds, report_dir: Path | None) -> None:
    """The claims' summary (and, with ``--report``, the figures) of the finished sweep."""
    from biorules import report

    ctx.echo("")
    ctx.echo(report.summary(ds))
    if report_dir is not None:
        report.write_report(ds, report_dir)
        ctx.echo(f"report: {report_dir}")
