"""The gain study (spec §6): a grid of training runs written cell by cell into one zarr store.

A cell is (gain, rule, floss, seed). The plan groups pending cells that can share a stack (same
rule and flossing mode; gains and seeds vary inside it) into stacks of at most ``stack`` members;
each stack builds W(g, seed) for every member (bit-identical to the network built alone), measures
the spectra before, trains all members in one tensor program (:func:`biorules.train.train`, members
independent), measures after, and hands back one Dataset per cell, which
:func:`biorules.experiments.grid.run_grid` writes into the cell's region, ``status`` last. A rerun
skips finished cells, so an interrupted sweep resumes where it stopped; the grouping depends on
the configuration (and ``stack``) only, so the resumed store equals an uninterrupted one exactly.
A stacked member gives the numbers of its single run to rounding (1e-10 in float64; in float32
training amplifies rounding differences to about 1e-3 in the final loss after 100 updates).
Flossed cells stack too: each member flosses its own exponents with its own seed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.experiments.grid import Cell, Job, chunks, default_workers, run_grid, stack_size
from biorules.flossing import MODES as FLOSS_MODES
from biorules.flossing import FlossSchedule
from biorules.provenance import provenance_attrs

CELL_DIMS = ("gain", "rule", "floss", "seed")
CURVES = ("loss", "accuracy")
SCALARS = ("final_loss", "final_accuracy", "weight_change", "wall_time")


@dataclass(frozen=True)
class SweepConfig:
    """A gain study: every option, with its default, serialised into the store's ``config`` attr."""

    gains: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    rules: tuple[str, ...] = ("bptt", "eprop", "rflo")
    floss: tuple[str, ...] = ("none",)
    seeds: tuple[int, ...] = (0, 1, 2)
    task: str = "2af"
    n: int = 64
    alpha: float = 0.2
    nonlinearity: str = "tanh"
    init: str = "gaussian"
    updates: int = 400
    batch: int = 32
    lr: float = 1e-3
    n_exponents: int = 5
    eval_every: int = 50
    eval_batch: int = 512
    schedule: FlossSchedule = field(default_factory=FlossSchedule)
    device: str = "cpu"
    """Torch device the stacks train on (``cpu``, ``cuda``)."""
    dtype: str = "float32"
    """Training precision (``float32`` or ``float64``)."""

    def __post_init__(self) -> None:
        from biorules.network import NetworkParams
        from biorules.rules import RULE_NAMES
        from biorules.tasks import TASKS

        for name, values, allowed in (("rule", self.rules, RULE_NAMES), ("floss", self.floss, ("none", *FLOSS_MODES))):
            if not values:
                raise InputError(f"at least one {name} is needed")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise InputError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
        if not self.gains or not self.seeds:
            raise InputError("the sweep needs at least one gain and one seed")
        if self.task not in TASKS:
            raise InputError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.updates < 1 or self.batch < 1:
            raise InputError("updates and batch must be positive")
        if not 1 <= self.n_exponents <= self.n:
            raise InputError(f"exponents must lie in 1..{self.n} (the number of units)")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        NetworkParams(n=self.n, alpha=self.alpha, nonlinearity=self.nonlinearity, init=self.init)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def template(config: SweepConfig) -> xr.Dataset:
    """The empty sweep store: NaN curves and scalars, every cell pending."""
    shape = (len(config.gains), len(config.rules), len(config.floss), len(config.seeds))
    n_eval = len(range(0, config.updates, config.eval_every)) + 1
    k = config.n_exponents

    def nan(*extra: int) -> np.ndarray:
        return np.full(shape + extra, np.nan)

    per_tau = {"units": "1/tau"}
    metric = "R^2" if config.task == "sine" else "fraction correct"
    data = {
        "loss": (CELL_DIMS + ("update",), nan(config.updates), {"units": "1", "long_name": "task loss of the training batch"}),
        "accuracy": (CELL_DIMS + ("update",), nan(config.updates), {"units": "1", "long_name": f"task metric of the training batch ({metric})"}),
        "eval_accuracy": (CELL_DIMS + ("eval_update",), nan(n_eval), {"units": "1", "long_name": f"held-out task metric ({metric})"}),
        "lambda_before": (CELL_DIMS + ("exponent",), nan(k), {**per_tau, "long_name": "Lyapunov exponent before training (autonomous)"}),
        "lambda_after": (CELL_DIMS + ("exponent",), nan(k), {**per_tau, "long_name": "Lyapunov exponent after training (autonomous)"}),
        "final_loss": (CELL_DIMS, nan(), {"units": "1", "long_name": "held-out task loss after training"}),
        "final_accuracy": (CELL_DIMS, nan(), {"units": "1", "long_name": f"held-out task metric after training ({metric})"}),
        "weight_change": (CELL_DIMS, nan(), {"units": "1", "long_name": "||W - W0||_F / ||W0||_F"}),
        "wall_time": (CELL_DIMS, nan(), {"units": "s", "long_name": "wall-clock time of the cell"}),
        "status": store.status_variable(CELL_DIMS, shape),
    }
    coords = {
        "gain": ("gain", np.asarray(config.gains, float), {"units": "1", "long_name": "initial gain g"}),
        "rule": ("rule", np.array(config.rules, dtype=object), {"long_name": "learning rule"}),
        "floss": ("floss", np.array(config.floss, dtype=object), {"long_name": "flossing mode"}),
        "seed": ("seed", np.asarray(config.seeds, int), {"long_name": "master seed"}),
        "update": ("update", np.arange(config.updates), {"long_name": "training update (0-based)"}),
        "eval_update": ("eval_update", np.array(list(range(0, config.updates, config.eval_every)) + [config.updates]),
                        {"long_name": "updates done before the evaluation"}),
        "exponent": ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"}),
    }
    return xr.Dataset(data, coords=coords, attrs={"title": f"gain study: {config.task}",
                                                  "config": config.to_json(), **provenance_attrs()})


def run_stack(config: SweepConfig, job: Job) -> list[xr.Dataset]:
    """Train the cells of ``job`` (one rule and flossing mode; ``job.key``) as one stack and return
    their variables (no cell dims), in the job's order; a failure becomes ``status=failed``."""
    from biorules import train as training
    from biorules.flossing import FlossConfig
    from biorules.network import NetworkParams

    rule, floss = job.key
    gains = tuple(float(config.gains[i]) for i, _, _, _ in job.cells)
    seeds = tuple(int(config.seeds[s]) for _, _, _, s in job.cells)
    t0 = time.perf_counter()
    network = NetworkParams(n=config.n, alpha=config.alpha, nonlinearity=config.nonlinearity, init=config.init)
    common = dict(task=config.task, rule=rule, network=network, batch=config.batch, updates=config.updates,
                  lr=config.lr, n_exponents=config.n_exponents, eval_every=config.eval_every,
                  eval_batch=config.eval_batch, cosine_every=0, device=config.device, dtype=config.dtype)
    try:
        flossing = {} if floss == "none" else {"floss": FlossConfig(mode=floss, seed=seeds[0]),
                                               "floss_schedule": config.schedule}
        if len(job.cells) == 1:  # a stack of one runs as the single network it is
            one = training.TrainConfig(seed=seeds[0], **{**common, "network": replace(network, gain=gains[0])},
                                       **flossing)
            members = [training.train(one)]
        else:
            ds = training.train(training.TrainConfig(gains=gains, seeds=seeds, **common, **flossing))
            members = [ds.isel(member=m).drop_vars(["gain", "seed"]) for m in range(len(gains))]
    except Exception as e:  # one failed stack must not end the sweep: its cells are recorded as failed
        wall = (time.perf_counter() - t0) / len(job.cells)
        cell = xr.Dataset({"status": ((), np.int8(store.STATUS["failed"])), "wall_time": ((), wall)})
        cell.attrs["message"] = f"{type(e).__name__}: {e}"
        return [cell] * len(job.cells)
    wall = (time.perf_counter() - t0) / len(job.cells)
    keep = [*CURVES, "eval_accuracy", "lambda_before", "lambda_after", *SCALARS, "status"]
    cells = []
    for ds in members:
        cell = ds[keep].drop_vars(list(ds[keep].coords))
        cell["status"] = ((), np.int8(int(ds.status)))
        cell["wall_time"] = ((), wall)
        cells.append(cell)
    return cells


def plan(config: SweepConfig, cells: list[Cell], stack: int | None = None, workers: int = 1) -> list[Job]:
    """Group the grid's cells by (rule, floss) into stacks of at most ``stack`` members (default:
    whole groups, split only as far as needed to keep ``workers`` busy, and on the CPU at most
    :func:`cpu_stack_cap` members)."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for idx in cells:
        groups.setdefault((config.rules[idx[1]], config.floss[idx[2]]), []).append(idx)
    size = stack or min(stack_size([len(g) for g in groups.values()], workers), cpu_stack_cap(config))
    return [Job(part, key) for key, cells in groups.items() for part in chunks(cells, size)]


CPU_STACK_WORK = 65536
"""On the CPU a stack holds at most this many recurrent weights (members × N²) by default: below it
a stack saves the interpreter's per-operation cost (14 members at N = 64: flossing ≈ 6×, training
≈ 2.3× per cell); above it a stacked step is bound by the arithmetic and one cell per process
balances the workers better (N = 200, stacks of 4: 0.72× the per-cell path)."""


def cpu_stack_cap(config: SweepConfig) -> int:
    """Members per stack on the CPU by default (no cap on a GPU, which wants whole groups)."""
    if config.device != "cpu":
        return 1 << 30
    return max(1, CPU_STACK_WORK // (config.n * config.n))


def run(config: SweepConfig, out: str | Path, *, workers: int | None = None, scheduler: str | None = None,
        stack: int | None = None, progress: bool = False,
        on_cell: Callable[[tuple, xr.Dataset], None] | None = None) -> xr.Dataset:
    """Run every pending cell of ``config`` into the store ``out`` (created, or resumed if it holds
    the same configuration) and return the store's contents.

    ``workers`` local processes (default: the CPU count, at most the number of stacks), or the
    dask.distributed cluster at ``scheduler``; ``stack`` members per stack (default: chosen by the
    plan). ``on_cell(index, cell)`` is called after each write.
    """
    if stack is not None and stack < 1:
        raise InputError(f"--stack must be positive, got {stack}")
    if workers is None and config.device != "cpu":
        workers = 1  # one process drives the GPU; the stacks give it the parallel work
    n_workers = workers or default_workers(len(config.rules) * len(config.floss) * len(config.gains) * len(config.seeds))
    return run_grid(out, template(config), CELL_DIMS,
                    partial(plan, config, stack=stack, workers=1 if scheduler else n_workers),
                    partial(run_stack, config), workers=workers, scheduler=scheduler, progress=progress,
                    desc="sweep", on_cell=on_cell)


def summary(ds: xr.Dataset) -> xr.Dataset:
    """Final accuracy and λ_max after training, mean and sd over seeds, per gain × rule × floss."""
    acc, lam = ds["final_accuracy"], ds["lambda_after"].sel(exponent=1)
    sd = (lambda v: v.std("seed", ddof=1)) if ds.sizes["seed"] > 1 else (lambda v: v.mean("seed") * np.nan)
    return xr.Dataset({"accuracy_mean": acc.mean("seed"), "accuracy_sd": sd(acc),
                       "lambda_after_mean": lam.mean("seed"),
                       "lambda_before_mean": ds["lambda_before"].sel(exponent=1).mean("seed"),
                       "finished": (ds["status"] != store.STATUS["pending"]).sum("seed")})
