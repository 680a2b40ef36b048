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
            if not args.skip_baseline:
                t_cell, ds_cell = timed(cfg, Path(tmp) / f"cell{n}.zarr", workers=args.workers, stack=1,
                                        progress=args.progress)
                diff = float(abs(ds_stack.final_loss - ds_cell.final_loss).max())
                row.update(per_cell_s=t_cell, per_cell_cells_per_min=60 * cells / t_cell, ratio=t_cell / t_stack,
                           max_final_loss_diff=diff)
            if tree is not None:
                t_old, loss_old = timed_old(tree, cfg, Path(tmp) / f"old{n}.zarr", args.workers)
                row.update(old_rev=args.baseline_rev, old_s=t_old, old_cells_per_min=60 * cells / t_old,
                           ratio_old=t_old / t_stack,
                           max_final_loss_diff_old=float(np.nanmax(np.abs(np.asarray(loss_old, float)
                                                                          - ds_stack.final_loss.values))))
            rows.append(row)
            print(json.dumps(row), flush=True)

    print("\n| N | cells | updates | path | wall [s] | cells/min | ratio |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "old_s" in r:
            print(f"| {r['n']} | {r['cells']} | {r['updates']} | sweep of {r['old_rev']} | {r['old_s']:.1f} | "
                  f"{r['old_cells_per_min']:.1f} | {r['per_cell_s'] / r['old_s'] if 'per_cell_s' in r else float('nan'):.2f} |")
        if "per_cell_s" in r:
            print(f"| {r['n']} | {r['cells']} | {r['updates']} | per cell (stack=1) | {r['per_cell_s']:.1f} | "
                  f"{r['per_cell_cells_per_min']:.1f} | 1.00 |")
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "–"
        print(f"| {r['n']} | {r['cells']} | {r['updates']} | stacked ({r['device']}) | {r['stacked_s']:.1f} | "
              f"{r['stacked_cells_per_min']:.1f} | {ratio} |")
    for r in rows:
        if "ratio_old" in r:
            print(f"N = {r['n']}: stacked is {r['ratio_old']:.2f}x the sweep of {r['old_rev']}; "
                  f"max |final_loss difference| = {r['max_final_loss_diff_old']:.2e}")
        if "max_final_loss_diff" in r:
            print(f"N = {r['n']}: max |final_loss(stacked) - final_loss(per cell)| = {r['max_final_loss_diff']:.2e}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
