"""Analyse a gain-study store: the claims with their bootstrap CIs, then a look at the numbers by label.

    biorules sweep --out results/sweep.zarr          # or any sweep store
    python examples/sweep_analysis.py results/sweep.zarr

Without an argument it runs a small sweep first (dms, N = 32, three gains, bptt and e-prop with and
without e-prop flossing, three seeds, 100 updates; a few minutes on two cores). ``biorules report STORE`` draws the figures of the same claims.
"""

from __future__ import annotations

import sys
from pathlib import Path

from biorules import report
from biorules.store import open_store


def main(path: Path) -> None:
    if not path.exists():
        from biorules.experiments import sweep

        cfg = sweep.SweepConfig(gains=(0.5, 1.0, 2.0), rules=("bptt", "eprop"), floss=("none", "eprop"),
                                seeds=(0, 1, 2), n=32, updates=100, n_exponents=1)
        sweep.run(cfg, path, workers=1, progress=True)
    ds = open_store(path)

    found = report.claims(ds)
    print(report.summary(ds, found))

    table = report.claims_frame(found)
    print("\nthe claims as a table (one row each; verdict from the CI and the claimed sign):")
    print(table[["task", "id", "measure", "rule", "floss", "condition", "gains", "effect", "ci_low", "ci_high",
                 "n_pairs", "verdict"]].round(3).to_string(index=False))

    # the same numbers by label: accuracy per gain and rule, done cells only, no flossing
    data = report.prepare(ds)  # every cell not done is NaN; accuracy is `acc` (test, or final in older stores)
    base = "none" if "none" in data.floss.values else str(data.floss.values[0])
    print(f"\n{report.study_info(ds).metric}, mean over seeds (rows: gain, columns: rule), floss = {base}:")
    print(data.acc.sel(floss=base).mean("seed").to_pandas().round(3))
    if "lambda_before" in data:
        lam = data[["lambda_before", "lambda_after"]].sel(exponent=1, floss=base).mean(("seed", "rule"))
        print("\nλ_max before -> after training [1/τ], mean over seeds and rules:")
        print(lam.to_dataframe()[["lambda_before", "lambda_after"]].round(3))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/sweep-example.zarr"))
