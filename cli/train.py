"""``biorules train``: one network, one task, one learning rule; the run goes to a zarr store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from biorules.activations import NONLINEARITIES
from biorules.network import INITS
from biorules.rules import RULE_NAMES
from biorules.tasks import TASKS
from cli.choices import FLOSS_MODES, NETWORK_MODELS, OPTIMIZERS
from cli.context import Context, examples, output_options, overwrite_option, pass_context, usage
from cli.types import Finite

_RULE_FLAGS = {"window": "--window", "mode": "--tbptt-mode", "form": "--form", "feedback": "--feedback"}
"""CLI flags of the rule options; which rule takes which option is the rules registry's to say."""


def _default_out(task: str, rule: str, model: str, seed: int) -> Path:
    return Path("results") / f"train-{task}-{rule}-{model}-seed{seed}.zarr"


@click.command(epilog=examples(
    "biorules train --task 2af --rule eprop --gain 1.0 --n 64 --updates 400",
    "biorules --json train --task dms --rule rflo --online --noise 0.1 --learn-a0 --n 64 --out results/dms.zarr"))
@click.option("--task", type=click.Choice(TASKS), default="2af", show_default=True, help="Task (docs/tasks.md).")
@click.option("--rule", type=click.Choice(RULE_NAMES), default="eprop", show_default=True,
              help="Learning rule (docs/rules.md); lif supports bptt, eprop, eprop-random.")
@click.option("--model", type=click.Choice(NETWORK_MODELS), default="rate", show_default=True,
              help="Rate network or spiking LIF network (docs/model.md).")
@click.option("--gain", type=Finite(min=0), default=1.0, show_default=True, help="Initial gain g.")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Number of units N.")
@click.option("--alpha", type=Finite(0, 1, min_open=True), default=0.2, show_default=True,
              help="Leak α = dt/τ (rate model).")
@click.option("--nonlinearity", type=click.Choice(NONLINEARITIES), default="tanh", show_default=True,
              help="φ (rate model).")
@click.option("--init", type=click.Choice(INITS), default="gaussian", show_default=True,
              help="Initial connectivity (rate model).")
@click.option("--noise", type=Finite(min=0), default=0.0, show_default=True,
              help="σ_rec of the activity noise σ_rec√(2α)ξ_t added to a_t in every trial (rate model; 0: off).")
@click.option("--learn-a0", is_flag=True, help="Learn the initial pre-activation a_0 (rate model; default a_0 = 0).")
@click.option("--online", is_flag=True,
              help="Apply eprop/eprop-random/rflo updates at every loss step of a trial, not once per batch.")
@click.option("--dt", type=Finite(min=0, min_open=True), default=None,
              help="Time step of the task (and of the LIF network) [ms]  [default: 20 rate, 1 lif]")
@click.option("--updates", type=click.IntRange(min=1), default=2000, show_default=True, help="Training updates.")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="Trials per update.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=1e-3, show_default=True,
              help="Learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True,
              help="Optimiser of the task loss.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Master seed (network, B, data).")
@click.option("--exponents", type=click.IntRange(min=0), default=10, show_default=True,
              help="Lyapunov exponents k before/after training (rate model; 0 skips).")
@click.option("--window", type=click.IntRange(min=1), default=None, help="tbptt window K  [default: 10]")
@click.option("--tbptt-mode", type=click.Choice(["chunk", "sliding"]), default=None,
              help="tbptt truncation  [default: chunk]")
@click.option("--form", type=click.Choice(["a", "r"]), default=None,
              help="Network form for bptt and rflo  [default: a]")
@click.option("--feedback", type=click.Choice(["random", "symmetric"]), default=None,
              help="rflo feedback matrix B  [default: random]")
@click.option("--floss", type=click.Choice(["none", *FLOSS_MODES]), default="none", show_default=True,
              help="Gradient flossing around training (rate model, docs/flossing.md).")
@click.option("--floss-pre", type=click.IntRange(min=0), default=50, show_default=True,
              help="E_p flossing steps before training.")
@click.option("--floss-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="E_f: a flossing bout every this many updates.")
@click.option("--floss-steps", type=click.IntRange(min=0), default=50, show_default=True,
              help="E_i flossing steps per bout.")
@click.option("--floss-times", type=click.IntRange(min=0), default=2, show_default=True,
              help="N_i, the most interleaved bouts.")
@click.option("--floss-exponents", type=click.IntRange(min=1), default=None,
              help="k exponents flossed  [default: min(75, N) exact, 1 local/eprop]")
@click.option("--floss-target", type=Finite(), default=0.0, show_default=True, help="Flossing target λ* in 1/τ.")
@click.option("--floss-lr", type=Finite(min=0, min_open=True), default=None,
              help="Flossing Adam learning rate  [default: 1e-3 exact, 3e-4 local/eprop]")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Zarr store; the same command again reports it  [default: results/train-TASK-RULE-MODEL-seedSEED.zarr]")
@overwrite_option
@output_options
@pass_context
def train(ctx: Context, task, rule, model, gain, n, alpha, nonlinearity, init, noise, learn_a0, online, dt, updates, batch, lr, optimizer,
          seed, exponents, window, tbptt_mode, form, feedback, floss, floss_pre, floss_every, floss_steps,
          floss_times, floss_exponents, floss_target, floss_lr, threads, out, overwrite) -> None:
    """Train a network on a task with a learning rule; store curves, spectra and final scores.

    An existing --out made by the same command is reported again, not retrained."""
    from biorules.errors import InputError

    out = _default_out(task, rule, model, seed) if out is None else out
    options = {"window": window, "mode": tbptt_mode, "form": form, "feedback": feedback}
    given = {k: v for k, v in options.items() if v is not None}

    def configure():
        from biorules.rules import get_rule, rule_options
        from biorules.train import TrainConfig, check_choice

        check_choice(task, rule, model)
        for key in given:
            if key not in rule_options(rule, model):
                raise InputError(f"{_RULE_FLAGS[key]} does not apply to rule {rule} ({model} model)")
        if floss != "none" and model != "rate":
            raise InputError("--floss is defined for rate networks only (--model rate)")
        if model != "rate" and (noise or learn_a0):
            raise InputError("--noise and --learn-a0 are options of the rate network (--model rate)")
        if floss_exponents is not None and floss_exponents > n:
            raise InputError(f"--floss-exponents {floss_exponents} exceeds the {n} units (--n)")
        get_rule(rule, kind=model, **given)  # a bad option value fails here, before any work
        from biorules.network import NetworkParams

        floss_cfg = schedule = None
        if floss != "none":
            from biorules.flossing import FlossConfig, FlossSchedule

            floss_cfg = FlossConfig(mode=floss, n_exponents=floss_exponents, target=floss_target * alpha,
                                    lr=floss_lr, seed=seed)
            schedule = FlossSchedule(pre=floss_pre, every=floss_every, steps=floss_steps, times=floss_times)
        network = NetworkParams(n=n, gain=gain, alpha=alpha, nonlinearity=nonlinearity, init=init, noise=noise,
                                learn_a0=learn_a0)
        return TrainConfig(task=task, rule=rule, network=network, model=model, online=online, optimizer=optimizer, lr=lr, batch=batch, updates=updates, seed=seed,
                           n_exponents=exponents, rule_options=given, task_options={"dt": dt},
                           floss=floss_cfg, floss_schedule=schedule)

    from biorules import store

    config = usage(configure)
    mode = usage(lambda: store.prepare_out(out, config.to_json(), overwrite=overwrite))
    if mode == "resume":
        ds = store.open_store(out).load()
        ctx.echo(f"{out} holds this run already; its summary:")
    else:
        import torch

        from biorules.train import train as run_training

        with store.writer_lock(out):
            torch.set_num_threads(threads)
            ds = run_training(config, progress=ctx.progress)
            store.save(ds, out, replace=mode == "replace")

    status = {v: k for k, v in store.STATUS.items()}.get(int(ds.status), "failed")
    has_lam = ds.sizes.get("exponent", 0) > 0 and "lambda_before" in ds
    lam = {c: (float(ds.lambda_before.sel(condition=c, exponent=1)), float(ds.lambda_after.sel(condition=c, exponent=1)))
           for c in ds.condition.values} if has_lam else {}
    lam0, lam1 = lam.get("autonomous", (float("nan"), float("nan")))
    ctx.echo(f"{task} / {rule} / {model} (N={n}, g={gain}): {status} after {updates} updates "
             f"in {float(ds.wall_time):.1f} s")
    ctx.echo(f"test accuracy {float(ds.test_accuracy):.3f}, test loss {float(ds.test_loss):.4f} "
             f"({json.loads(ds.attrs['config'])['test_batch']} fresh trials; ceiling {ds.attrs['ceiling']:.3f}, chance {ds.attrs['chance']:.2f})")
    if has_lam:
        ctx.echo("λ_max [1/τ] before -> after: " + ", ".join(f"{c} {a:+.4f} -> {b:+.4f}" for c, (a, b) in lam.items())
                 + f"; ||ΔW||/||W0|| = {float(ds.weight_change):.3f}")
    message = str(ds.attrs.get("status_message", ""))
    if status != "done":
        ctx.echo(f"note: the run {status}" + (f": {message}" if message else "") + " (exit 3)")
    ctx.echo(f"store: {out}")
    ctx.emit_json({
        "out": str(out), "task": task, "rule": rule, "model": model, "status": status, "message": message,
        "final_accuracy": float(ds.final_accuracy), "final_loss": float(ds.final_loss),
        "test_accuracy": float(ds.test_accuracy), "test_loss": float(ds.test_loss),
        "lambda_max_before": lam0, "lambda_max_after": lam1, "weight_change": float(ds.weight_change),
        "lambda_max": {c: {"before": a, "after": b} for c, (a, b) in lam.items()},
        "wall_time": float(ds.wall_time),
    })
    ctx.finish(diverged=int(status == "diverged"), failed=int(status == "failed"))
