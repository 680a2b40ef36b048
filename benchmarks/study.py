"""Cells per minute of the gain study: stacked cells against one process per cell, in one run.

Run by hand: ``python benchmarks/study.py [--n 64 200] [--updates 1000] [--device cpu|cuda]``.

The grid is the dms study at a given N: gains × rules (default bptt, eprop, rflo) × floss (default
none, eprop) × seeds, ``--updates`` updates of batch 32, 5 exponents before and after. Both paths run
through :func:`biorules.experiments.sweep.run` with the same workers (default: the CPU count):

* ``per cell``: ``stack=1``, every cell trained alone in a worker process (one torch thread), the
  path the sweep took before stacks existed;
* ``stacked``: the default plan, cells of one (rule, floss) trained together in one tensor program.

The table gives wall seconds, cells per minute and the ratio to the per-cell path, and checks that
both stores hold the same numbers (max |Δ| of the final held-out loss).

``--baseline-rev REV`` also times the sweep of an older revision of this repository (checked out
with ``git archive`` into a temporary folder and run in a subprocess with that tree first on the
path, same grid, same workers), e.g. the last revision before networks were stacked; the table then
gives the stacked path's ratio to it too. That revision must still have ``biorules.sweep.run``.

``--baseline-seeds K`` runs the baselines (per cell, older revision) on the first K seeds only and
compares cells per minute. One process per cell costs the same per cell whatever the grid, while a
stack's cost per cell falls with its size, so the stacked path runs the whole grid (the spec's 7
gains × 5 seeds give stacks of 35 at N = 64) and the baselines a part of it that fits the time at
hand. The final-loss check then covers the cells both ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from _timing import old_tree, run_in_tree  # noqa: E402

# run in a subprocess with an old tree first on sys.path: the sweep as it was before stacks
_OLD_SWEEP = """
import json, sys, time
from biorules.sweep import SweepConfig, run
kw = json.loads(sys.argv[1])
workers = kw.pop("workers")
cfg = SweepConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
t0 = time.perf_counter()
ds = run(cfg, sys.argv[2], workers=workers)
print(json.dumps({"seconds": time.perf_counter() - t0, "final_loss": ds.final_loss.values.tolist()}))
"""


def timed_old(tree: Path, config, path: Path, workers: int | None) -> tuple[float, list]:
    """Wall seconds and final losses of ``config``'s grid run by the sweep in ``tree``."""
    kw = {"gains": config.gains, "rules": config.rules, "floss": config.floss, "seeds": config.seeds,
          "task": config.tasks[0], "n": config.n, "updates": config.updates, "batch": config.batch,
          "n_exponents": config.n_exponents, "eval_every": config.eval_every, "workers": workers}
    out = run_in_tree(tree, _OLD_SWEEP, json.dumps(kw), str(path)).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["seconds"], res["final_loss"]


def grid(n: int, updates: int, gains: tuple[float, ...], seeds: int, device: str,
         rules: tuple[str, ...] = ("bptt", "eprop", "rflo"), floss: tuple[str, ...] = ("none", "eprop")):
    from biorules.experiments.sweep import SweepConfig

    return SweepConfig(gains=gains, rules=rules, floss=floss,
                       seeds=tuple(range(seeds)), tasks=("dms",), n=n, updates=updates, batch=32,
                       n_exponents=5, eval_every=max(1, updates // 10), device=device)


def timed(config, path: Path, **kw) -> tuple[float, object]:
    from biorules.experiments.sweep import run

    t0 = time.perf_counter()
    ds = run(config, path, **kw)
    return time.perf_counter() - t0, ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 200])
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--gains", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rules", default="bptt,eprop,rflo", help="comma list (docs/study.md has bptt,eprop,eprop-random,rflo)")
    ap.add_argument("--floss", default="none,eprop", help="comma list of flossing modes")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-baseline", action="store_true", help="time the stacked path only")
    ap.add_argument("--skip-per-cell", action="store_true", help="no stack=1 run (with --baseline-rev)")
    ap.add_argument("--baseline-seeds", type=int, default=None,
                    help="run the baselines on the first K seeds only; ratios are of cells per minute")
    ap.add_argument("--baseline-rev", default=None,
                    help="also time the sweep of this git revision (e.g. the last one before stacks)")
    ap.add_argument("--progress", action="store_true", help="progress bars on stderr")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = old_tree(args.baseline_rev, Path(tmp) / "old") if args.baseline_rev else None
        for n in args.n:
            cfg = grid(n, args.updates, tuple(args.gains), args.seeds, args.device, tuple(args.rules.split(",")),
                       tuple(args.floss.split(",")))
            cells = len(cfg.gains) * len(cfg.rules) * len(cfg.floss) * len(cfg.seeds)
            t_stack, ds_stack = timed(cfg, Path(tmp) / f"stack{n}.zarr", workers=args.workers, progress=args.progress)
            row = {"n": n, "cells": cells, "updates": args.updates, "device": args.device,
                   "stacked_s": t_stack, "stacked_cells_per_min": 60 * cells / t_stack}
            k = min(args.baseline_seeds or args.seeds, args.seeds)
            base = grid(n, args.updates, tuple(args.gains), k, args.device, cfg.rules, cfg.floss)
            base_cells = len(base.gains) * len(base.rules) * len(base.floss) * len(base.seeds)
            row["baseline_cells"] = base_cells
            common = ds_stack.final_loss.isel(seed=slice(0, k))
            if not (args.skip_baseline or args.skip_per_cell):
                t_cell, ds_cell = timed(base, Path(tmp) / f"cell{n}.zarr", workers=args.workers, stack=1,
                                        progress=args.progress)
                cpm = 60 * base_cells / t_cell
                row.update(per_cell_s=t_cell, per_cell_cells_per_min=cpm, ratio=row["stacked_cells_per_min"] / cpm,
                           max_final_loss_diff=float(abs(common - ds_cell.final_loss).max()))
            if tree is not None:
                t_old, loss_old = timed_old(tree, base, Path(tmp) / f"old{n}.zarr", args.workers)
                cpm = 60 * base_cells / t_old
                d = np.abs(np.asarray(loss_old, float) - common.values).ravel()
                row.update(old_rev=args.baseline_rev, old_s=t_old, old_cells_per_min=cpm,
                           ratio_old=row["stacked_cells_per_min"] / cpm, max_final_loss_diff_old=float(np.nanmax(d)),
                           median_final_loss_diff_old=float(np.nanmedian(d)),
                           cells_over_1e2_old=int((d > 1e-2).sum()),
                           final_loss_old=np.asarray(loss_old, float).tolist(), final_loss_stacked=common.values.tolist(),
                           final_loss_dims=list(common.dims))
            rows.append(row)
            print(json.dumps(row), flush=True)

    print("\n| N | path | cells | updates | wall [s] | cells/min | × baseline |\n|---|---|---|---|---|---|---|")
    for r in rows:
        first = r.get("old_cells_per_min", r.get("per_cell_cells_per_min"))

        def rel(cpm: float, first: float | None = first) -> str:
            return f"{cpm / first:.2f}" if first else "–"
        if "old_s" in r:
            print(f"| {r['n']} | sweep of {r['old_rev']} | {r['baseline_cells']} | {r['updates']} | {r['old_s']:.1f} | "
                  f"{r['old_cells_per_min']:.1f} | 1.00 |")
        if "per_cell_s" in r:
            print(f"| {r['n']} | per cell (stack=1) | {r['baseline_cells']} | {r['updates']} | {r['per_cell_s']:.1f} | "
                  f"{r['per_cell_cells_per_min']:.1f} | {rel(r['per_cell_cells_per_min'])} |")
        print(f"| {r['n']} | stacked ({r['device']}) | {r['cells']} | {r['updates']} | {r['stacked_s']:.1f} | "
              f"{r['stacked_cells_per_min']:.1f} | {rel(r['stacked_cells_per_min'])} |")
    for r in rows:
        if "ratio_old" in r:
            print(f"N = {r['n']}: stacked runs {r['ratio_old']:.2f}x the cells per minute of the sweep of {r['old_rev']}; "
                  f"|final_loss difference| over the {r['baseline_cells']} cells both ran: median "
                  f"{r['median_final_loss_diff_old']:.1e}, max {r['max_final_loss_diff_old']:.2e}, "
                  f"{r['cells_over_1e2_old']} cells above 1e-2")
        if "max_final_loss_diff" in r:
            print(f"N = {r['n']}: max |final_loss(stacked) - final_loss(per cell)| = {r['max_final_loss_diff']:.2e}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
