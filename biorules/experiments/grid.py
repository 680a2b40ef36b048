"""The one loop behind every grid of runs: plan → template → resume → executor → write.

A grid is a zarr store with one chunk-aligned region per cell (:mod:`biorules.store`). ``run_grid``
creates the store from its template (or resumes one made by the same configuration), asks the
grid to ``plan`` all its cells into jobs (a job is a stack of cells trained in one tensor program,
or a single cell), runs the jobs that still hold a pending cell in-process, in local worker
processes (one torch thread each) or on a dask.distributed cluster, and writes every pending cell
a job returns into its region, ``status`` last. Only the calling process writes, and it holds the
store's writer lock (:func:`biorules.store.writer_lock`), so no two writers touch a chunk; a cell
interrupted before its write stays pending and is redone by the next run. The plan depends on the
configuration only, never on what is pending, so a resumed run computes every cell in the same
stack, with the same floating-point operations, as an uninterrupted one.

Every grid store has a string variable ``message`` over the cell dims: the one-line reason of a
failed or diverged cell (empty for a done one). A job that raises marks its cells ``failed`` with
the reason; a rerun retries failed cells (diverged ones are results and are kept). Local workers
exit when the process that started them dies; on a dask cluster, a scheduler that cannot be
reached, is lost, or has had no worker for :data:`NO_WORKER_TIMEOUT_S` ends the run with one line
(:class:`~biorules.errors.RunError`) and keeps every finished cell.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError, RunError, one_line
from biorules.runtime import keep_freed_memory

Cell = tuple[int, ...]
"""A cell's index along the grid's cell dimensions."""

MAX_CELLS = 100_000
"""The most cells a grid may have; a larger one is refused before anything is planned."""

MESSAGE = "message"
"""The string variable holding each cell's one-line reason (failed or diverged; empty if done)."""

NO_WORKER_TIMEOUT_S = 120.0
"""A dask run ends (one line, finished cells kept) when the cluster has had no worker this long."""

CONNECT_TIMEOUT_S = 30.0
"""How long to wait for a dask scheduler to answer."""

PARENT_POLL_S = 0.5
"""How often a local worker checks that the process that started it is alive."""

RESUME_HINT = "finished cells are kept; rerun the same command to resume"


@dataclass(frozen=True)
class Job:
    """Cells run together (a stack, or one cell) and what the job function needs to know."""

    cells: tuple[Cell, ...]
    key: Any = None
    """Whatever the grid's plan groups by (e.g. rule and flossing mode); passed to the job function."""


def check_size(shape: Sequence[int], dims: Sequence[str] = ()) -> int:
    """The number of cells of a grid of ``shape``; InputError when it exceeds :data:`MAX_CELLS`."""
    n = math.prod(int(s) for s in shape)
    if n > MAX_CELLS:
        names = [*dims, *[""] * len(shape)][: len(shape)]
        sizes = " × ".join(f"{s} {d}".strip() for s, d in zip(shape, names, strict=True))
        raise InputError(f"the grid has {n:,} cells ({sizes}), more than the {MAX_CELLS:,} allowed; "
                         "use fewer gains, seeds, rules or flossing modes")
    return n


def with_message(template: xr.Dataset, cell_dims: tuple[str, ...]) -> xr.Dataset:
    """``template`` with an empty :data:`MESSAGE` string variable over the cell dims (if it has none)."""
    if MESSAGE in template:
        return template
    shape = tuple(template.sizes[d] for d in cell_dims)
    return template.assign({MESSAGE: (cell_dims, np.full(shape, "", dtype=object),
                                      {"long_name": "why the cell failed or diverged (empty when done)"})})


def _message(cell: xr.Dataset) -> xr.Dataset:
    """The cell with its :data:`MESSAGE` as a 0-d object string: the reason in its attrs
    (``message`` or ``status_message``) unless it is done."""
    status = int(cell["status"]) if "status" in cell else store.STATUS["pending"]
    if MESSAGE in cell.data_vars:
        text = str(cell[MESSAGE].values.item())
    elif status == store.STATUS["done"]:
        text = ""
    else:
        text = cell.attrs.get("message") or cell.attrs.get("status_message") or {
            store.STATUS["diverged"]: "diverged", store.STATUS["failed"]: "failed"}.get(status, "")
    return cell.assign({MESSAGE: ((), np.array(one_line(text) if text else "", dtype=object))})


def failed_cells(job: Job, error: BaseException | str) -> list[xr.Dataset]:
    """One ``failed`` cell per cell of ``job``, each with ``error`` as its one-line reason."""
    cell = xr.Dataset({"status": ((), np.int8(store.STATUS["failed"])),
                       MESSAGE: ((), np.array(one_line(error), dtype=object))})
    return [cell] * len(job.cells)


def _threads(n: int) -> None:
    """A worker process computes on its share of the cores: ``n`` threads for torch and numba's
    parallel kernels (1 for CPU workers, which already fill the cores; a GPU worker's spectra get
    the cores divided among the GPUs)."""
    import numba
    import torch

    # numba first: starting its OpenMP threading layer in a forked process resets OpenMP's thread
    # count, which torch reads; torch set after it keeps ``n`` (set before it, two workers on two
    # cores each ran torch on 2 spinning threads: 3-6x slower).
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)


def _run_job(fn: Callable[[Job], list[xr.Dataset]], job: Job, threads: int | None) -> list[xr.Dataset]:
    if threads:
        _threads(threads)
    return fn(job)


def _in_process(fn, jobs: list[Job]) -> Iterator[tuple[Job, list[xr.Dataset]]]:
    for job in jobs:
        try:
            cells = fn(job)
        except Exception as e:  # one failed job must not end the grid: its cells are recorded as failed
            cells = failed_cells(job, e)
        yield job, cells


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # the process that started us is gone: nobody would read our results


def _worker_start(devices: Any = None) -> None:
    """Initializer of a local worker process: exit as soon as the process that started it dies
    (killed with SIGKILL too, which runs no cleanup in the parent), keep freed memory for the next
    update (:func:`biorules.runtime.keep_freed_memory`); with ``devices`` (a queue of GPU indices,
    one per worker), see only the GPU it takes, as ``cuda``."""
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    keep_freed_memory()
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())  # before this process touches CUDA


WORKERS_PER_GPU = 4
"""Worker processes a sweep on ``cuda`` starts per visible GPU by default (at most one per CPU core).
A stack of small networks leaves the GPU idle between its kernel launches and while its spectra run
on the CPU; several processes sharing one GPU fill those gaps (the spec grid on one H200: 338 s in
one process, 168 s with 4)."""


def gpu_indices(device: str, workers: int | None = None) -> list[int]:
    """The GPU each worker process of a sweep on ``device`` sees, one entry per worker.

    For ``cuda``: ``workers`` processes (default :data:`WORKERS_PER_GPU` per visible GPU, at most
    one per core) dealt round-robin over the visible GPUs, several sharing one; none for a single
    worker on a single GPU (it runs in this process). For ``cuda:N`` and the CPU: none (that
    device, in this process or in plain worker processes).
    """
    if device != "cuda":
        return []
    import torch

    n = torch.cuda.device_count()  # through NVML where it can: this process starts no CUDA context
    if n == 0:
        return []
    if workers is None:
        workers = max(n, min(WORKERS_PER_GPU * n, usable_cpus()))
    return [i % n for i in range(workers)] if workers > 1 or n > 1 else []


def _processes(fn, jobs: list[Job], workers: int, devices: Sequence[int] | None = None
               ) -> Iterator[tuple[Job, list[xr.Dataset]]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    queue = None
    if devices:
        ctx = multiprocessing.get_context("spawn")  # a forked CUDA runtime is unusable; spawn starts clean
        queue = ctx.Queue()
        for d in devices:
            queue.put(d)
        pool = ProcessPoolExecutor(max_workers=len(devices), mp_context=ctx, initializer=_worker_start,
                                   initargs=(queue,))
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_start)
    complete = False
    try:
        threads = max(1, usable_cpus() // len(devices)) if devices else 1
        futures = {pool.submit(_run_job, fn, job, threads): job for job in jobs}
        for fut in as_completed(futures):
            error = fut.exception()
            if isinstance(error, BrokenProcessPool):
                raise RunError(f"a worker process died (killed, or out of memory); {RESUME_HINT}")
            yield futures[fut], (fut.result() if error is None else failed_cells(futures[fut], error))
        complete = True
    finally:
        procs = [] if complete else list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:  # an interrupted or failed run stops its workers now, not after their jobs
            proc.terminate()


def check_scheduler(address: str) -> None:
    """InputError unless ``address`` is a dask scheduler address (``tcp://HOST:PORT``, ``HOST:PORT``,
    another comm scheme); nothing is contacted."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port

        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss", "ucx"):
            host, port = parse_host_port(location)
            if not host or port is None:
                raise ValueError
    except ImportError:
        raise InputError("--scheduler needs dask.distributed (pip install distributed)") from None
    except (ValueError, TypeError):
        raise InputError(f"--scheduler {address!r} is not a scheduler address; give tcp://HOST:PORT") from None


def connect(address: str, timeout: float | None = None):
    """A dask.distributed Client of the scheduler at ``address``; RunError (one line) if none answers."""
    check_scheduler(address)
    from distributed import Client

    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception:  # refused, unreachable, timed out: all the user can do is start it or drop it
        raise RunError(f"--scheduler {address}: no dask scheduler answered within {timeout:g} s; start one "
                       "(dask scheduler) or run without --scheduler") from None


def _dask(client, fn, jobs: list[Job], address: str, no_worker_timeout: float
          ) -> Iterator[tuple[Job, list[xr.Dataset]]]:
    futures = [client.submit(_run_job, fn, job, 1, pure=False) for job in jobs]
    job_of = {f.key: job for f, job in zip(futures, jobs, strict=True)}
    pending = list(futures)
    lost = f"lost the dask scheduler at {address}; {RESUME_HINT}"
    idle_since: float | None = None
    checked = time.monotonic()
    try:
        while pending:
            done = [f for f in pending if f.status != "pending"]  # the client's thread updates the status
            pending = [f for f in pending if f.status == "pending"]
            for fut in done:
                job = job_of[fut.key]
                if fut.status == "finished":
                    try:
                        cells = fut.result()
                    except Exception:
                        raise RunError(lost) from None
                    yield job, cells
                elif fut.status == "error":
                    yield job, failed_cells(job, fut.exception())
                else:  # cancelled or lost: the scheduler went away
                    raise RunError(lost)
            if done:
                idle_since = None
                continue
            time.sleep(0.05)
            if time.monotonic() - checked < 1.0:
                continue
            checked = time.monotonic()
            if client.status not in ("running", "connecting", "newly-created"):
                raise RunError(lost)
            try:
                workers = client.nthreads()
            except Exception:
                raise RunError(lost) from None
            if workers:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > no_worker_timeout:
                raise RunError(f"the dask cluster at {address} has had no worker for {no_worker_timeout:g} s; "
                               f"start workers (dask worker {address}); {RESUME_HINT}")
    finally:
        try:
            client.cancel(pending)
        except Exception:  # the scheduler may be gone already
            pass


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """dask.distributed's own log lines (reconnect attempts, closing comms) off while this grid uses
    the cluster: its failures end the run with one line of ours; levels are restored after."""
    with contextlib.suppress(ImportError):
        import distributed  # noqa: F401  (its import sets up the loggers it logs to)
    names = {n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in ("distributed", "tornado")}
    loggers = [logging.getLogger(n) for n in sorted(names | {"distributed", "tornado"})]
    saved = [(lg, lg.level, [(h, h.level) for h in lg.handlers]) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
        for h in lg.handlers:
            h.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level, handlers in saved:
            lg.setLevel(level)
            for h, h_level in handlers:
                h.setLevel(h_level)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset),
    not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(n_jobs: int) -> int:
    """One worker per usable CPU, at most one per job."""
    return max(1, min(usable_cpus(), n_jobs))


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
    retry_failed: bool = True,
    no_worker_timeout: float | None = None,
    connect_timeout: float | None = None,
    devices: Sequence[int] | None = None,
) -> xr.Dataset:
    """Run every pending cell of the grid into the store ``path`` and return the store's contents.

    ``plan(cells)`` groups all cells of the grid into jobs; ``fn(job)`` returns one Dataset per cell
    of the job (its variables without the cell dims; a reason for a failed or diverged cell in its
    ``message`` attr), in the job's order. ``workers`` local processes (default: one per CPU; 1
    runs in this process), or the dask.distributed cluster at ``scheduler`` (contacted before the
    store is created); with ``devices`` (GPU indices), one local process per GPU instead, each seeing
only its own GPU as ``cuda``. ``on_cell(cell, ds)`` is called after each write. ``retry_failed``: cells
    that failed in an earlier run are run again (diverged ones never are).
    """

    if workers is not None and workers < 1:
        raise InputError(f"workers must be positive, got {workers}")
    check_size([template.sizes[d] for d in cell_dims], cell_dims)
    template = with_message(template, cell_dims)
    with _quiet_dask() if scheduler else contextlib.nullcontext():
        return _run_grid(path, template, cell_dims, plan, fn, workers=workers, scheduler=scheduler, progress=progress,
                         desc=desc, on_cell=on_cell, retry_failed=retry_failed, no_worker_timeout=no_worker_timeout,
                         connect_timeout=connect_timeout, devices=devices)


def _run_grid(path, template, cell_dims, plan, fn, *, workers, scheduler, progress, desc, on_cell, retry_failed,
              no_worker_timeout, connect_timeout, devices=None) -> xr.Dataset:
    from tqdm.auto import tqdm

    client = connect(scheduler, connect_timeout) if scheduler else None
    try:
        with store.writer_lock(path):
            stored = store.open_or_create(path, template, cell_dims)
            keep = ["done", "diverged"] + ([] if retry_failed else ["failed"])
            status = stored["status"].values
            reasons = MESSAGE in stored.data_vars  # a store made from a template without it keeps none
            done = np.isin(status, [store.STATUS[s] for s in keep])
            jobs = [job for job in plan(list(_indices(done.shape))) if not all(done[c] for c in job.cells)]
            pending = sum(not done[c] for job in jobs for c in job.cells)
            if client is not None:
                timeout = NO_WORKER_TIMEOUT_S if no_worker_timeout is None else no_worker_timeout
                results = _dask(client, fn, jobs, scheduler, timeout)
            else:
                workers = workers or default_workers(len(jobs))
                results = (_in_process(fn, jobs) if workers == 1 and not devices
                           else _processes(fn, jobs, workers, devices))
            with tqdm(total=pending, disable=not progress, desc=desc, unit="cell") as bar:
                for job, cells in results:
                    todo = [(idx, _message(cell) if reasons else cell.drop_vars(MESSAGE, errors="ignore"))
                            for idx, cell in zip(job.cells, cells, strict=True) if not done[idx]]
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
            return store.open_store(path, verify=False).load()
    finally:
        if client is not None:
            client.close()


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
