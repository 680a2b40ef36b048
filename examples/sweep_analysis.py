"""Analyse a gain-study store with xarray: accuracy, λ_max and its change, by label.

    biorules sweep --out results/sweep.zarr          # or any sweep store
    python examples/sweep_analysis.py results/sweep.zarr

Without an argument it runs a small sweep first (2af, three gains, two rules, two seeds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import xarray as xr


def main(path: Path) -> None:
    if not path.exists():
        from biorules.experiments import sweep

        cfg = sweep.SweepConfig(gains=(0.5, 1.0, 2.0), rules=("bptt", "eprop"), seeds=(0, 1), n=32, updates=200)
        sweep.run(cfg, path, progress=True)
    ds = xr.open_zarr(path)
    done = ds.status == 1
    acc = ds.final_accuracy.where(done)
    lam_before = ds.lambda_before.sel(exponent=1, drop=True).where(done)
    lam_after = ds.lambda_after.sel(exponent=1, drop=True).where(done)

    print(f"store {path}: {int(done.sum())} of {done.size} cells done; task {ds.attrs['title']}")
    print("\nheld-out accuracy, mean over seeds (rows: gain, columns: rule), no flossing:")
    print(acc.sel(floss="none").mean("seed").to_pandas().round(3))
    print("\nλ_max before -> after training [1/τ], mean over seeds and rules:")
    table = xr.Dataset({"before": lam_before.mean(("seed", "rule", "floss")),
                        "after": lam_after.mean(("seed", "rule", "floss"))})
    print(table.to_dataframe().round(3))
    print("\n|Δλ_max| by gain (the 'demand on training'), mean over seeds:")
    print(abs(lam_after - lam_before).mean("seed").sel(floss="none").to_pandas().round(3))
    best = acc.mean("seed").sel(floss="none")
    for rule in best.rule.values:
        row = best.sel(rule=rule)
        print(f"best gain for {rule}: g = {float(row.idxmax('gain')):.2f} (accuracy {float(row.max()):.3f})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/sweep-example.zarr"))
