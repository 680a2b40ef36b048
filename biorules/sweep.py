"""The gain study (spec §6): a grid of training runs written cell by cell into one zarr store.

A cell is (gain, rule, floss, seed): ``network`` builds W(g, seed), ``lyapunov`` measures the
spectrum before, ``train`` runs the rule on the task (with flossing if asked), ``lyapunov``
measures after, and ``store.write_cell`` writes the cell's region, ``status`` last. Cells run in
local worker processes (one torch thread each) or on a dask.distributed cluster; results are
written by the calling process only, so no two writers ever touch a chunk. A rerun skips finished
cells, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError
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
        NetworkParams(n=self.n, alpha=self.alpha, nonlinearity=self.nonlinearity, init=self.init)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def cells(self) -> Iterator[tuple[int, int, int, int]]:
        """Indices (gain, rule, floss, seed) of every cell, seeds innermost."""
        for i, _ in enumerate(self.gains):
            for j, _ in enumerate(self.rules):
                for k, _ in enumerate(self.floss):
                    for s, _ in enumerate(self.seeds):
                        yield i, j, k, s


def template(config: SweepConfig) -> xr.Dataset:
    """The empty sweep store: NaN curves and scalars, every cell pending (DESIGN.md's schema)."""
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


def run_cell(config: SweepConfig, gain: float, rule: str, floss: str, seed: int) -> xr.Dataset:
    """Train one cell and return its variables (no cell dims); a failure becomes ``status=failed``."""
    import torch

    from biorules.flossing import FlossConfig
    from biorules.network import NetworkParams
    from biorules.train import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        ds = train(config.task, rule, NetworkParams(n=config.n, gain=float(gain), alpha=config.alpha,
                                                    nonlinearity=config.nonlinearity, init=config.init),
                   batch=config.batch, updates=config.updates, lr=config.lr, seed=int(seed),
                   n_exponents=config.n_exponents, eval_every=config.eval_every, eval_batch=config.eval_batch,
                   cosine_every=0, floss=None if floss == "none" else FlossConfig(mode=floss, seed=int(seed)),
                   floss_schedule=config.schedule)
    except Exception as e:  # one failed cell must not end the sweep: it is recorded and reported
        cell = xr.Dataset({"status": ((), np.int8(store.STATUS["failed"])),
                           "wall_time": ((), time.perf_counter() - t0)})
        cell.attrs["message"] = f"{type(e).__name__}: {e}"
        return cell
    keep = [*CURVES, "eval_accuracy", "lambda_before", "lambda_after", *SCALARS, "status"]
    cell = ds[keep].drop_vars(list(ds[keep].coords))
    cell["status"] = ((), np.int8(int(ds.status)))
    return cell


def _local_map(config: SweepConfig, todo: list, workers: int) -> Iterator[tuple[tuple, xr.Dataset]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if workers == 1:
        for idx, args in todo:
            yield idx, run_cell(config, *args)
        return
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(run_cell, config, *args): idx for idx, args in todo}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _dask_map(config: SweepConfig, todo: list, scheduler: str) -> Iterator[tuple[tuple, xr.Dataset]]:
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        futures = [client.submit(run_cell, config, *args, pure=False) for _, args in todo]
        index = {f.key: idx for f, (idx, _) in zip(futures, todo, strict=True)}
        try:
            for fut in as_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            client.cancel(futures)


def run(config: SweepConfig, out: str | Path, *, workers: int | None = None, scheduler: str | None = None,
        progress: bool = False, on_cell: Callable[[tuple, xr.Dataset], None] | None = None) -> xr.Dataset:
    """Run every pending cell of ``config`` into the store ``out`` (created, or resumed if it holds
    the same configuration) and return the store's contents.

    ``workers`` local processes (default: the CPU count, at most the number of cells), or the
    dask.distributed cluster at ``scheduler``. ``on_cell(index, cell)`` is called after each write.
    """
    from tqdm.auto import tqdm

    store.open_or_create(out, template(config), CELL_DIMS)
    done = store.finished_cells(out)
    todo = [(idx, (config.gains[idx[0]], config.rules[idx[1]], config.floss[idx[2]], config.seeds[idx[3]]))
            for idx in config.cells() if not done[idx]]
    if workers is not None and workers < 1:
        raise InputError(f"workers must be positive, got {workers}")
    workers = workers or max(1, min(os.cpu_count() or 1, len(todo)))
    results = _dask_map(config, todo, scheduler) if scheduler else _local_map(config, todo, workers)
    with tqdm(total=len(todo), disable=not progress, desc="sweep", unit="cell") as bar:
        for idx, cell in results:
            store.write_cell(out, cell, dict(zip(CELL_DIMS, idx, strict=True)))
            if on_cell is not None:
                on_cell(idx, cell)
            bar.update(1)
    return store.open_store(out).load()


def summary(ds: xr.Dataset) -> xr.Dataset:
    """Final accuracy and λ_max after training, mean and sd over seeds, per gain × rule × floss."""
    acc, lam = ds["final_accuracy"], ds["lambda_after"].sel(exponent=1)
    sd = (lambda v: v.std("seed", ddof=1)) if ds.sizes["seed"] > 1 else (lambda v: v.mean("seed") * np.nan)
    return xr.Dataset({"accuracy_mean": acc.mean("seed"), "accuracy_sd": sd(acc),
                       "lambda_after_mean": lam.mean("seed"),
                       "lambda_before_mean": ds["lambda_before"].sel(exponent=1).mean("seed"),
                       "finished": (ds["status"] != store.STATUS["pending"]).sum("seed")})
