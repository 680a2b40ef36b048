"""The one loop behind every grid of runs: plan → template → resume → executor → write.

A grid is a zarr store with one chunk-aligned region per cell (:mod:`biorules.store`). ``run_grid``
creates the store from its template (or resumes one made by the same configuration), asks the
grid to ``plan`` all its cells into jobs (a job is a stack of cells trained in one tensor program,
or a single cell), runs the jobs that still hold a pending cell in-process, in local worker
processes (one torch thread each) or on a dask.distributed cluster, and writes every pending cell
a job returns into its region, ``status`` last. Only the calling process writes, so no two writers
touch a chunk; a cell interrupted before its write stays pending and is redone by the next run.
The plan depends on the configuration only, never on what is pending, so a resumed run computes
every cell in the same stack, with the same floating-point operations, as an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError

Cell = tuple[int, ...]
"""A cell's index along the grid's cell dimensions."""


@dataclass(frozen=True)
class Job:
    """Cells run together (a stack, or one cell) and what the job function needs to know."""

    cells: tuple[Cell, ...]
    key: Any = None
    """Whatever the grid's plan groups by (e.g. rule and flossing mode); passed to the job function."""


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _run_job(fn: Callable[[Job], list[xr.Dataset]], job: Job, threads: int | None) -> list[xr.Dataset]:
    if threads == 1:
        _one_thread()
    return fn(job)


def _in_process(fn, jobs: list[Job]) -> Iterator[tuple[Job, list[xr.Dataset]]]:
    for job in jobs:
        yield job, fn(job)


def _processes(fn, jobs: list[Job], workers: int) -> Iterator[tuple[Job, list[xr.Dataset]]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(_run_job, fn, job, 1): job for job in jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _dask(fn, jobs: list[Job], scheduler: str) -> Iterator[tuple[Job, list[xr.Dataset]]]:
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        futures = [client.submit(_run_job, fn, job, 1, pure=False) for job in jobs]
        index = {f.key: job for f, job in zip(futures, jobs, strict=True)}
        try:
            for fut in as_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            client.cancel(futures)


def default_workers(n_jobs: int) -> int:
    """One worker per CPU, at most one per job."""
    return max(1, min(os.cpu_count() or 1, n_jobs))


def run_grid(
    path: str | os.PathLike,
    template: xr.Dataset,
    cell_dims: tuple[str, ...],
    plan: Callable[[list[Cell]], list[Job]],
    fn: Callable[[Job], list[xr.Dataset]],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
    desc: str = "cells",
    on_cell: Callable[[Cell, xr.Dataset], None] | None = None,
) -> xr.Dataset:
    """Run every pending cell of the grid into the store ``path`` and return the store's contents.

    ``plan(cells)`` groups all cells of the grid into jobs; ``fn(job)`` returns one Dataset per cell
    of the job (its variables without the cell dims), in the job's order. ``workers`` local
    processes (default: one per CPU; 1 runs in this process), or the dask.distributed cluster at
    ``scheduler``. ``on_cell(cell, ds)`` is called after each write.
    """
    from tqdm.auto import tqdm

    if workers is not None and workers < 1:
        raise InputError(f"workers must be positive, got {workers}")
    store.open_or_create(path, template, cell_dims)
    done = store.finished_cells(path)
    jobs = [job for job in plan(list(_indices(done.shape))) if not all(done[c] for c in job.cells)]
    pending = sum(not done[c] for job in jobs for c in job.cells)
    if scheduler:
        results = _dask(fn, jobs, scheduler)
    else:
        workers = workers or default_workers(len(jobs))
        results = _in_process(fn, jobs) if workers == 1 else _processes(fn, jobs, workers)
    with tqdm(total=pending, disable=not progress, desc=desc, unit="cell") as bar:
        for job, cells in results:
            todo = [(idx, cell) for idx, cell in zip(job.cells, cells, strict=True) if not done[idx]]
            block = _block(todo, cell_dims) if on_cell is None else None
            if block is not None:  # a whole stack in one region write (status last)
                store.write_region(path, *block)
                bar.update(len(todo))
                continue
            for idx, cell in todo:  # cells finished earlier are already in the store
                store.write_cell(path, cell, dict(zip(cell_dims, idx, strict=True)))
                if on_cell is not None:
                    on_cell(idx, cell)
                bar.update(1)
    return store.open_store(path).load()


def _block(cells: list[tuple[Cell, xr.Dataset]], cell_dims: tuple[str, ...]) -> tuple[xr.Dataset, dict] | None:
    """The cells as one Dataset and its region when they fill a box of contiguous indices, else None."""
    if len(cells) < 2 or any(set(c.data_vars) != set(cells[0][1].data_vars) for _, c in cells):
        return None
    axes = [sorted({idx[d] for idx, _ in cells}) for d in range(len(cell_dims))]
    if any(a[-1] - a[0] + 1 != len(a) for a in axes) or len(cells) != int(np.prod([len(a) for a in axes])):
        return None
    by_index = {idx: c.expand_dims(list(cell_dims)) for idx, c in cells}

    def nest(prefix: tuple[int, ...]) -> Any:
        d = len(prefix)
        if d == len(cell_dims):
            return by_index[prefix]
        return [nest((*prefix, i)) for i in axes[d]]

    block = xr.combine_nested(nest(()), concat_dim=list(cell_dims), combine_attrs="drop")
    return block, {d: slice(a[0], a[-1] + 1) for d, a in zip(cell_dims, axes, strict=True)}


def _indices(shape: Sequence[int]) -> Iterator[Cell]:
    import itertools

    return itertools.product(*(range(n) for n in shape))


def chunks(items: Sequence[Any], size: int) -> list[tuple[Any, ...]]:
    """``items`` in consecutive groups of at most ``size``."""
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def stack_size(group_sizes: Sequence[int], workers: int) -> int:
    """Members per stack: whole groups, split only as far as needed to give every worker work."""
    if not group_sizes:
        return 1
    split = max(1, -(-workers // len(group_sizes)))
    return max(1, -(-max(group_sizes) // split))
