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
    cfg = ds.attrs.get("config", "")
    ax.set_title(f"largest Lyapunov exponent, {ds.sizes['seed']} seeds", fontsize=10)
    fig.text(0.01, 0.01, cfg[:0], fontsize=6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
