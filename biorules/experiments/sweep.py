"""The gain study: a grid of training runs written cell by cell into one zarr store.

A cell is (task, gain, rule, floss, seed). The plan groups pending cells that can share a stack
(same task, rule and flossing mode; gains and seeds vary inside it) into stacks of at most ``stack`` members;
each stack builds W(g, seed) for every member (bit-identical to the network built alone), measures
the spectra before (autonomous, fixation and task-conditioned; :data:`biorules.train.CONDITIONS`), trains all members in one tensor program (:func:`biorules.train.train`, members
independent), measures after, tests on fresh trials, and hands back one Dataset per cell, which
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
from typing import Any

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.experiments.grid import (
    Cell,
    Job,
    chunks,
    default_workers,
    gpu_indices,
    run_grid,
    stack_size,
)
from biorules.flossing import MODES as FLOSS_MODES
from biorules.flossing import FlossSchedule
from biorules.network import NetworkParams
from biorules.provenance import provenance_attrs

CELL_DIMS = ("task", "gain", "rule", "floss", "seed")
CURVES = ("loss", "accuracy")
EVAL_CURVES = ("eval_loss", "eval_accuracy")
SPECTRA = ("lambda_before", "lambda_after", "lambda_before_sem", "lambda_after_sem")
SCALARS = ("test_accuracy", "test_loss", "eval_accuracy_best", "eval_accuracy_last", "updates_to_criterion",
           "final_loss", "final_accuracy", "weight_change", "input_weight_change", "wall_time")


@dataclass(frozen=True)
class SweepConfig:
    """A gain study: every option, with its default, serialised into the store's ``config`` attr.

    The defaults are the study ``biorules sweep`` runs with no options: dms (a memory task whose
    500 ms delay the initial dynamics must bridge; on 2af every cell reaches the ceiling), gains
    0.5, 1, 1.5, 2, bptt, e-prop and RFLO with and without one-sided e-prop flossing, 5 seeds, 300
    updates, N = 64: the largest size whose 120 cells fit about 10 minutes on 2 CPU cores (N = 128
    took more than twice as long). At N = 64, 9 of 20 untrained networks are chaotic at g = 2, 4 at
    g = 1.75 and none at g ≤ 1.5 (N = 128: 11, 6, 5). :data:`PRESETS` holds the others."""

    gains: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    rules: tuple[str, ...] = ("bptt", "eprop", "rflo")
    floss: tuple[str, ...] = ("none", "eprop")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tasks: tuple[str, ...] = ("dms",)
    n: int = 64
    alpha: float = 0.2
    nonlinearity: str = "tanh"
    init: str = "gaussian"
    updates: int = 300
    batch: int = 32
    lr: float = 1e-3
    n_exponents: int = 3
    eval_every: int = 50
    eval_batch: int = 512
    test_batch: int = 2048
    cosine_every: int = 100
    conditions: tuple[str, ...] = ("autonomous", "fixation", "task")
    schedule: FlossSchedule = field(default_factory=FlossSchedule)
    floss_options: dict = field(default_factory=lambda: {"side": "below"})
    """Extra :class:`biorules.flossing.FlossConfig` fields for every flossed cell (e.g. ``target``).

    By default flossing is one-sided (``side="below"``): it raises exponents below λ* = 0 and leaves
    chaotic ones alone. Measured on dms, e-prop, 5 seeds: at N = 128 / 300 updates two-sided
    flossing hurt one seed at g = 2 (0.97 → 0.59) while one-sided hurt none and gave the same
    rescue at g ≤ 1.5; at N = 64 / 400 updates one-sided was never worse on average (README)."""
    device: str = "cpu"
    """Torch device the stacks train on (``cpu``, ``cuda``)."""
    dtype: str = "float32"
    """Training precision (``float32`` or ``float64``)."""
    save_weights: bool = False
    """Keep every cell's initial and final W, U, b, V, c in the store's ``weights`` group
    (:mod:`biorules.weights`; :func:`weights_per_cell` bytes per cell, before compression)."""
    noise: float = 0.0
    """σ_rec of the activity noise of every network (:class:`biorules.network.NetworkParams`)."""
    learn_a0: bool = False
    """Every network learns its initial state a_0 (stored with the weights)."""
    online: bool = False
    """The forward-in-time rules (:data:`biorules.train.ONLINE_RULES`) apply their update at every
    loss step; the others (bptt, tbptt) still update once per batch."""

    def network(self, **extra: Any) -> NetworkParams:
        """The network record every cell starts from (gain and seed set per cell)."""
        return NetworkParams(n=self.n, alpha=self.alpha, nonlinearity=self.nonlinearity, init=self.init,
                             noise=self.noise, learn_a0=self.learn_a0, **extra)

    def __post_init__(self) -> None:
        from biorules.rules import RULE_NAMES
        from biorules.tasks import TASKS
        from biorules.train import CONDITIONS

        for name, values, allowed in (("rule", self.rules, RULE_NAMES), ("floss", self.floss, ("none", *FLOSS_MODES)),
                                      ("task", self.tasks, TASKS), ("condition", self.conditions, CONDITIONS)):
            if not values:
                raise InputError(f"at least one {name} is needed")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise InputError(f"unknown {name} {bad[0]!r}; choose from {', '.join(allowed)}")
            if len(set(values)) != len(values):
                raise InputError(f"each {name} may appear once, got {', '.join(values)}")
        if not self.gains or not self.seeds:
            raise InputError("the sweep needs at least one gain and one seed")
        if len(set(self.gains)) != len(self.gains) or len(set(self.seeds)) != len(self.seeds):
            raise InputError("each gain and each seed may appear once")
        if self.updates < 1 or self.batch < 1 or self.eval_every < 1 or self.eval_batch < 1 or self.test_batch < 1:
            raise InputError("updates, batch, eval_every, eval_batch and test_batch must be positive")
        if self.cosine_every < 0:
            raise InputError(f"cosine_every must be non-negative, got {self.cosine_every}")
        if not 1 <= self.n_exponents <= self.n:
            raise InputError(f"exponents must lie in 1..{self.n} (the number of units)")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        self.network()
        if self.floss_options:
            from biorules.flossing import FlossConfig

            try:
                FlossConfig(**self.floss_options)
            except TypeError as e:
                raise InputError(f"bad flossing option: {e}") from None

    @property
    def cells(self) -> int:
        """Number of cells of the grid."""
        return len(self.tasks) * len(self.gains) * len(self.rules) * len(self.floss) * len(self.seeds)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


PRESETS: dict[str, dict] = {
    "default": {},
    "paper": dict(tasks=("2af", "dms", "cxt"), gains=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
                  rules=("bptt", "eprop", "eprop-random", "rflo"), floss=("none", "exact", "local", "eprop"),
                  n=200, updates=2000, n_exponents=10, floss_options={}),
}
"""Named studies: ``default`` (the defaults above) and ``paper``, the full protocol (3 tasks × 7
gains × 4 rules × 4 flossing modes × 5 seeds = 1680 cells of N = 200, 2000 updates each; for
``--device cuda`` or a dask cluster)."""


def preset(name: str, **overrides) -> SweepConfig:
    """The preset ``name`` with ``overrides`` (fields of :class:`SweepConfig`) on top."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SweepConfig(**{**PRESETS[name], **overrides})


def _sizes(config: SweepConfig) -> tuple[int, int]:
    """The largest n_in and n_out over the grid's tasks (weights of smaller tasks are NaN-padded)."""
    from biorules.tasks import make_task

    tasks = [make_task(t) for t in config.tasks]
    return max(t.n_in for t in tasks), max(t.n_out for t in tasks)


def weights_per_cell(config: SweepConfig) -> int:
    """Bytes of one cell's saved weights (both stages, uncompressed): 2 (N² + N n_in + N + n_out N + n_out)
    values of ``config.dtype`` (float32: 36 kB at N = 64 and 3 inputs/outputs, 134 kB at N = 128)."""
    from biorules.weights import weights_nbytes

    n_in, n_out = _sizes(config)
    return weights_nbytes(config.n, n_in, n_out, config.dtype)


def _eval_updates(config: SweepConfig) -> list[int]:
    return list(range(0, config.updates, config.eval_every)) + [config.updates]


def template(config: SweepConfig) -> xr.Dataset:
    """The empty sweep store: NaN curves and scalars, every cell pending."""
    from biorules.tasks import make_task
    from biorules.train import CONDITION_LONG_NAME, CRITERION, task_limits

    shape = (len(config.tasks), len(config.gains), len(config.rules), len(config.floss), len(config.seeds))
    k, C = config.n_exponents, len(config.conditions)
    n_eval = len(_eval_updates(config))
    cos_at = list(range(0, config.updates, config.cosine_every)) if config.cosine_every else []

    def nan(*extra: int) -> np.ndarray:
        return np.full(shape + extra, np.nan)

    per_tau = {"units": "1/tau"}
    metric = "R^2 for sine, fraction correct otherwise" if "sine" in config.tasks else "fraction correct"
    spectrum = CELL_DIMS + ("condition", "exponent")
    data = {
        "loss": (CELL_DIMS + ("update",), nan(config.updates), {"units": "1", "long_name": "task loss of the training batch"}),
        "accuracy": (CELL_DIMS + ("update",), nan(config.updates), {"units": "1", "long_name": f"task metric of the training batch ({metric})"}),
        "eval_loss": (CELL_DIMS + ("eval_update",), nan(n_eval), {"units": "1", "long_name": "task loss of the monitoring batch"}),
        "eval_accuracy": (CELL_DIMS + ("eval_update",), nan(n_eval), {"units": "1", "long_name": f"task metric of the monitoring batch ({metric})"}),
        "lambda_before": (spectrum, nan(C, k), {**per_tau, "long_name": "Lyapunov exponent before training"}),
        "lambda_after": (spectrum, nan(C, k), {**per_tau, "long_name": "Lyapunov exponent after training"}),
        "lambda_before_sem": (spectrum, nan(C, k), {**per_tau, "long_name": "standard error of lambda_before"}),
        "lambda_after_sem": (spectrum, nan(C, k), {**per_tau, "long_name": "standard error of lambda_after"}),
        "grad_cosine": (CELL_DIMS + ("cosine_update",), nan(len(cos_at)),
                        {"units": "1", "long_name": "cosine between the rule's and BPTT's recurrent-weight gradient on the same batch"}),
        "test_accuracy": (CELL_DIMS, nan(), {"units": "1", "long_name": f"task metric on {config.test_batch} fresh test trials ({metric})"}),
        "test_loss": (CELL_DIMS, nan(), {"units": "1", "long_name": f"task loss on {config.test_batch} fresh test trials"}),
        "eval_accuracy_best": (CELL_DIMS, nan(), {"units": "1", "long_name": "best task metric of the monitoring batch"}),
        "eval_accuracy_last": (CELL_DIMS, nan(), {"units": "1", "long_name": "task metric of the monitoring batch after training"}),
        "updates_to_criterion": (CELL_DIMS, nan(), {"units": "1", "long_name":
                                 f"updates before the monitoring metric first reached {CRITERION:g} x the ceiling (NaN: never)"}),
        "final_loss": (CELL_DIMS, nan(), {"units": "1", "long_name": "task loss of the monitoring batch after training"}),
        "final_accuracy": (CELL_DIMS, nan(), {"units": "1", "long_name": "task metric of the monitoring batch after training"}),
        "weight_change": (CELL_DIMS, nan(), {"units": "1", "long_name": "||W - W0||_F / ||W0||_F"}),
        "input_weight_change": (CELL_DIMS, nan(), {"units": "1", "long_name": "||U - U0||_F / ||U0||_F"}),
        "wall_time": (CELL_DIMS, nan(), {"units": "s", "long_name": "wall-clock time of the cell (its stack's time / members)"}),
        "status": store.status_variable(CELL_DIMS, shape),
    }
    limits = [task_limits(make_task(t)) for t in config.tasks]
    data["chance"] = ("task", np.array([c for c, _ in limits]), {"units": "1", "long_name": "chance level of the task metric"})
    data["ceiling"] = ("task", np.array([c for _, c in limits]), {"units": "1", "long_name": "ideal observer's task metric"})
    data["criterion"] = ("task", CRITERION * data["ceiling"][1], {"units": "1", "long_name": "metric counted as learned"})
    coords = {
        "task": ("task", np.array(config.tasks, dtype=object), {"long_name": "task"}),
        "gain": ("gain", np.asarray(config.gains, float), {"units": "1", "long_name": "initial gain g"}),
        "rule": ("rule", np.array(config.rules, dtype=object), {"long_name": "learning rule"}),
        "floss": ("floss", np.array(config.floss, dtype=object), {"long_name": "flossing mode"}),
        "seed": ("seed", np.asarray(config.seeds, int), {"long_name": "master seed"}),
        "update": ("update", np.arange(config.updates), {"long_name": "training update (0-based)"}),
        "eval_update": ("eval_update", np.array(_eval_updates(config)), {"long_name": "updates done before the evaluation"}),
        "cosine_update": ("cosine_update", np.array(cos_at, dtype=np.int64), {"long_name": "update at which the gradient cosine was taken"}),
        "condition": ("condition", np.array(config.conditions, dtype=object), {"long_name": CONDITION_LONG_NAME}),
        "exponent": ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"}),
    }
    if config.save_weights:
        from biorules.weights import weights_template

        n_in, n_out = _sizes(config)
        params = config.network(n_in=n_in, n_out=n_out)
        cells = {"task": list(config.tasks), "gain": list(config.gains), "rule": list(config.rules),
                 "floss": list(config.floss), "seed": list(config.seeds)}
        weights = weights_template(params, cells, dtype=config.dtype)
        data.update({k: weights[k].variable for k in weights.data_vars})
        coords["stage"] = weights.coords["stage"].variable
    attrs = {"title": f"gain study: {', '.join(config.tasks)}", "config": config.to_json()}
    if len(config.tasks) == 1:
        attrs.update(chance=limits[0][0], ceiling=limits[0][1], criterion=CRITERION * limits[0][1])
    return xr.Dataset(data, coords=coords, attrs={**attrs, **provenance_attrs()})


def run_stack(config: SweepConfig, job: Job) -> list[xr.Dataset]:
    """Train the cells of ``job`` (one task, rule and flossing mode; ``job.key``) as one stack and
    return their variables (no cell dims), in the job's order; a failure becomes ``status=failed``."""
    from biorules import train as training
    from biorules.flossing import FlossConfig

    task, rule, floss = job.key
    gains = tuple(float(config.gains[c[1]]) for c in job.cells)
    seeds = tuple(int(config.seeds[c[4]]) for c in job.cells)
    t0 = time.perf_counter()
    network = config.network()
    common = dict(task=task, rule=rule, network=network, batch=config.batch, updates=config.updates,
                  online=config.online and rule in training.ONLINE_RULES,
                  lr=config.lr, n_exponents=config.n_exponents, eval_every=config.eval_every,
                  eval_batch=config.eval_batch, test_batch=config.test_batch, cosine_every=config.cosine_every,
                  conditions=config.conditions, device=config.device, dtype=config.dtype)
    try:
        flossing = {} if floss == "none" else {"floss": FlossConfig(mode=floss, seed=seeds[0], **config.floss_options),
                                               "floss_schedule": config.schedule}
        if len(job.cells) == 1:  # a stack of one runs as the single network it is
            one = training.TrainConfig(seed=seeds[0], **{**common, "network": replace(network, gain=gains[0])},
                                       **flossing)
            members = [training.train(one)]
        else:
            ds = training.train(training.TrainConfig(gains=gains, seeds=seeds, **common, **flossing))
            members = [ds.isel(member=m).drop_vars(["gain", "seed"]) for m in range(len(gains))]
            for m, text in zip(members, ds.attrs["status_messages"], strict=True):
                m.attrs = {**m.attrs, "status_message": text}  # each cell keeps its own member's reason
    except Exception as e:  # one failed stack must not end the sweep: its cells are recorded as failed
        wall = (time.perf_counter() - t0) / len(job.cells)
        cell = xr.Dataset({"status": ((), np.int8(store.STATUS["failed"])), "wall_time": ((), wall)})
        cell.attrs["message"] = str(e) or f"unexpected {type(e).__name__} while training the stack"
        return [cell] * len(job.cells)
    wall = (time.perf_counter() - t0) / len(job.cells)
    keep = [*CURVES, *EVAL_CURVES, *SPECTRA, "grad_cosine", *SCALARS, "status"]
    if config.save_weights:
        from biorules.weights import DIMS

        keep += list(DIMS) + (["a0"] if config.learn_a0 else [])
        n_in, n_out = _sizes(config)
        pad = {"input": n_in, "output": n_out}
    cells = []
    for ds in members:
        cell = ds[keep].drop_vars(list(ds[keep].coords))
        if config.save_weights:  # tasks with fewer inputs/outputs than the grid's widest are NaN-padded
            cell = xr.Dataset({k: cell[k].pad({d: (0, pad[d] - cell.sizes[d]) for d in cell[k].dims if d in pad},
                                              constant_values=np.nan) if k in DIMS else cell[k]
                               for k in cell.data_vars})
        cell["status"] = ((), np.int8(int(ds.status)))
        cell["wall_time"] = ((), wall)
        cells.append(cell)
    return cells


def plan(config: SweepConfig, cells: list[Cell], stack: int | None = None, workers: int = 1) -> list[Job]:
    """Group the grid's cells by (task, rule, floss) into stacks of at most ``stack`` members (default:
    whole groups, split only as far as needed to keep ``workers`` busy, and on the CPU at most
    :func:`cpu_stack_cap` members), the costliest first (:data:`RULE_COST`, flossed before not), so
    that workers taking them in turn finish close together."""
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for idx in cells:
        groups.setdefault((config.tasks[idx[0]], config.rules[idx[2]], config.floss[idx[3]]), []).append(idx)
    size = stack or min(stack_size([len(g) for g in groups.values()], workers), cpu_stack_cap(config))
    jobs = [Job(part, key) for key, cells in groups.items() for part in chunks(cells, size)]
    return sorted(jobs, key=lambda j: (len(j.cells) * RULE_COST.get(j.key[1], 1.0), j.key[2] != "none"), reverse=True)


RULE_COST = {"rflo": 2.4, "bptt": 1.9, "tbptt": 1.9, "eprop": 1.0, "eprop-random": 1.0}
"""Relative cost of one update per member, for the order of the plan only (a stack of 35 at N = 64,
dms, batch 32, one core: RFLO 60 ms, BPTT 47 ms, e-prop 25 ms an update)."""


CPU_STACK_WORK = 320_000
"""On the CPU a stack holds at most this many recurrent weights (members × N²) by default (8
members at N = 200, whole groups at N = 64). Per member, a stack saves the interpreter's
per-operation cost: one core, 100 updates at N = 200, dms, per member against one network alone:
e-prop 2.96 s (stacks of 8 and 14) against 4.14 s, BPTT with flossing 9.8 s (8) against 25.2 s;
past about 8 members the saving stops growing while the memory a stack holds does."""


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
    devices = [] if scheduler else gpu_indices(config.device, workers)
    if devices:
        workers = len(devices)  # one process per entry, each seeing only its own GPU as cuda
    elif workers is None and config.device != "cpu":
        workers = 1  # one process drives the GPU; the stacks give it the parallel work
    n_workers = workers or default_workers(config.cells)
    return run_grid(out, template(config), CELL_DIMS,
                    partial(plan, config, stack=stack, workers=1 if scheduler else n_workers),
                    partial(run_stack, config), workers=workers, scheduler=scheduler, progress=progress,
                    desc="sweep", on_cell=on_cell, devices=devices or None)


def summary(ds: xr.Dataset) -> xr.Dataset:
    """Test accuracy and λ_max before/after training (task-conditioned where measured), mean and sd
    over seeds, per task × gain × rule × floss."""
    acc = ds["test_accuracy"] if "test_accuracy" in ds else ds["final_accuracy"]
    pick = {"exponent": 1}
    if "condition" in ds.dims:
        pick["condition"] = "task" if "task" in ds.condition.values else ds.condition.values[0]
    lam_before, lam_after = ds["lambda_before"].sel(pick), ds["lambda_after"].sel(pick)
    sd = (lambda v: v.std("seed", ddof=1)) if ds.sizes["seed"] > 1 else (lambda v: v.mean("seed") * np.nan)
    return xr.Dataset({"accuracy_mean": acc.mean("seed"), "accuracy_sd": sd(acc),
                       "lambda_after_mean": lam_after.mean("seed"), "lambda_before_mean": lam_before.mean("seed"),
                       "finished": (ds["status"] != store.STATUS["pending"]).sum("seed")},
                      attrs={"condition": pick.get("condition", "autonomous")})
