"""Figures and summary tables drawn from result stores (selection by label, never by position)."""

from __future__ import annotations

from pathlib import Path

import xarray as xr


def plot_lambda_max(ds: xr.Dataset, path: str | Path) -> Path:
    """λ_max (mean ± sd over seeds) against the initial gain g, saved to ``path`` (PNG, PDF, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = ds["lambda_max"]
    mean, sd = lam.mean("seed"), lam.std("seed")
    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.errorbar(ds["gain"], mean, yerr=sd, marker="o", capsize=3)
    ax.set_xlabel("initial gain g")
    ax.set_ylabel(f"λ_max [{lam.attrs.get('units', '')}]")
    ax.set_title(f"largest Lyapunov exponent, {ds.sizes['seed']} seeds", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(ds: xr.Dataset, path: str | Path) -> Path:
    """Held-out accuracy and λ_max after training against g, one line per rule × floss (± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_lam) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    for rule in ds["rule"].values:
        for floss in ds["floss"].values:
            cell = ds.sel(rule=rule, floss=floss)
            label = rule if floss == "none" else f"{rule} + {floss} flossing"
            acc = cell["final_accuracy"]
            ax_acc.errorbar(ds["gain"], acc.mean("seed"), yerr=acc.std("seed"), marker="o", capsize=3, label=label)
            lam = cell["lambda_after"].sel(exponent=1)
            ax_lam.errorbar(ds["gain"], lam.mean("seed"), yerr=lam.std("seed"), marker="o", capsize=3, label=label)
    ax_lam.plot(ds["gain"], ds["lambda_before"].sel(exponent=1).isel(rule=0, floss=0).mean("seed"), "k--",
                label="before training")
    ax_acc.set(xlabel="initial gain g", ylabel="held-out accuracy")
    ax_lam.set(xlabel="initial gain g", ylabel="λ_max after training [1/τ]")
    ax_lam.axhline(0, color="0.7", lw=0.8)
    ax_acc.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
