"""Lyapunov spectra over a grid of initial gains and network seeds (docs/lyapunov.md, docs/study.md).

Each (gain, seed) cell builds W(g, seed) and measures its autonomous spectrum per τ; cells are
written into a zarr store one by one by :func:`biorules.experiments.grid.run_grid`, so an
interrupted scan resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.experiments.grid import Cell, Job, run_grid
from biorules.lyapunov import spectrum_of
from biorules.network import NetworkParams
from biorules.provenance import provenance_attrs

CELL_DIMS = ("gain", "seed")


@dataclass(frozen=True)
class LyapunovScanConfig:
    """A gain scan of Lyapunov spectra; serialised into the store's ``config`` attr."""

    gains: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    network: NetworkParams = NetworkParams()
    n_exponents: int = 10
    steps: int | None = None
    """T_acc in steps (default 400 τ)."""
    transient: int | None = None
    """T_tr in steps (default 100 τ)."""
    qr_interval: int = 1

    def __post_init__(self) -> None:
        if not self.gains:
            raise InputError("the gain grid is empty")
        if not self.seeds:
            raise InputError("at least one seed is needed")
        if not 1 <= self.n_exponents <= self.network.n:
            raise InputError(
                f"--exponents must lie in 1..{self.network.n} (the number of units), got {self.n_exponents}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def template(config: LyapunovScanConfig) -> xr.Dataset:
    """The empty result Dataset: NaN exponents, every cell pending."""
    gains, seeds = np.asarray(config.gains, float), np.asarray(config.seeds, int)
    k = config.n_exponents
    shape = (len(gains), len(seeds))
    nan = lambda *s: np.full(s, np.nan)  # noqa: E731
    per_tau = {"units": "1/tau"}
    ds = xr.Dataset(
        {
            "spectrum": (("gain", "seed", "exponent"), nan(*shape, k),
                         {**per_tau, "long_name": "Lyapunov exponent"}),
            "spectrum_sem": (("gain", "seed", "exponent"), nan(*shape, k),
                             {**per_tau, "long_name": "standard error of the exponent (segment means)"}),
            "lambda_max": (("gain", "seed"), nan(*shape), {**per_tau, "long_name": "largest Lyapunov exponent"}),
            "kaplan_yorke": (("gain", "seed"), nan(*shape),
                             {"units": "1", "long_name": "Kaplan-Yorke dimension (NaN: >= number of exponents)"}),
            "entropy_rate": (("gain", "seed"), nan(*shape),
                             {"units": "nats/tau", "long_name": "entropy rate (sum of positive exponents)"}),
            "wall_time": (("gain", "seed"), nan(*shape), {"units": "s", "long_name": "time to measure the cell"}),
            "status": store.status_variable(("gain", "seed"), shape),
        },
        coords={
            "gain": ("gain", gains, {"units": "1", "long_name": "initial gain g (std of W·sqrt(N))"}),
            "seed": ("seed", seeds, {"long_name": "master seed (W from its network stream, as in train and sweep)"}),
            "exponent": ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"}),
        },
        attrs={"title": "Lyapunov spectra over initial gain", "config": config.to_json(), **provenance_attrs()},
    )
    return ds


def measure_cell(config: LyapunovScanConfig, gain: float, seed: int) -> xr.Dataset:
    """Spectrum of one network W(gain, seed), as the cell's variables (no gain/seed dims)."""
    from biorules.train import seeds

    t0 = time.perf_counter()
    streams = seeds(int(seed))  # the master seed means the same W here as in train and sweep
    params = replace(config.network, gain=float(gain), seed=streams["network"])
    lam = spectrum_of(params, n_exponents=config.n_exponents, steps=config.steps, seed=streams["lyapunov"],
                      transient=config.transient, qr_interval=config.qr_interval, unit="tau")
    ok = lam.attrs["status"] == "ok"
    return xr.Dataset(
        {
            "spectrum": ("exponent", lam.values),
            "spectrum_sem": ("exponent", lam["sem"].values),
            "lambda_max": ((), lam.values[0]),
            "kaplan_yorke": ((), lam.attrs["kaplan_yorke_dimension"]),
            "entropy_rate": ((), lam.attrs["entropy_rate"]),
            "wall_time": ((), time.perf_counter() - t0),
            "status": ((), np.int8(store.STATUS["done" if ok else "diverged"])),
        }
    )


def _measure_job(config: LyapunovScanConfig, job: Job) -> list[xr.Dataset]:
    return [measure_cell(config, config.gains[i], config.seeds[j]) for i, j in job.cells]


def _plan(pending: list[Cell]) -> list[Job]:
    return [Job((idx,)) for idx in pending]


def run(config: LyapunovScanConfig, out: str | Path, progress: bool = False) -> xr.Dataset:
    """Measure every pending cell of ``config`` into the store ``out`` (created or resumed)."""
    return run_grid(out, template(config), CELL_DIMS, _plan, partial(_measure_job, config), workers=1,
                    progress=progress, desc="spectra")


def summary(ds: xr.Dataset) -> xr.Dataset:
    """λ_max mean and sd over seeds, per gain (finished cells only)."""
    lam = ds["lambda_max"]
    return xr.Dataset({"mean": lam.mean("seed"), "sd": lam.std("seed", ddof=1) if ds.sizes["seed"] > 1
                       else xr.full_like(lam.mean("seed"), np.nan)})


def parse_gains(values: Sequence[float]) -> tuple[float, ...]:
    """Gains as a tuple of floats, rounded to 10 digits so grids compare exactly."""
    return tuple(round(float(v), 10) for v in values)
