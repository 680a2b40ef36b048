"""Cells per minute of a GPU sweep on 1, 2, ... GPUs, one worker process per GPU, in one run.

Run by hand on a machine with GPUs: ``python benchmarks/sweep_gpus.py [--gpus 1 2] [--n 200]
[--updates 1000] [--seeds 5]``. The grid is the study design's (dms, 7 gains × bptt, eprop,
eprop-random, rflo × floss none, eprop × seeds). Each row runs the grid through the sweep's own
grid loop with ``devices = [0 .. k−1]`` (what ``biorules sweep --device cuda`` does when k GPUs
are visible), into its own store. The table gives wall seconds, cells per minute, the speed-up over
one GPU, the scaling efficiency, and checks that every row's store holds the same numbers as the
first (max |Δ| of the test loss).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()

    import numpy as np
    import torch

    from biorules.experiments import grid, sweep

    visible = torch.cuda.device_count()
    if max(args.gpus) > visible:
        raise SystemExit(f"asked for {max(args.gpus)} GPUs, {visible} visible")
    cfg = sweep.SweepConfig(gains=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), rules=("bptt", "eprop", "eprop-random", "rflo"),
                            floss=("none", "eprop"), seeds=tuple(range(args.seeds)), n=args.n, updates=args.updates,
                            device="cuda")
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.gpus:
            t0 = time.perf_counter()
            ds = grid.run_grid(Path(tmp) / f"g{k}.zarr", sweep.template(cfg), sweep.CELL_DIMS,
                               partial(sweep.plan, cfg, stack=None, workers=k), partial(sweep.run_stack, cfg),
                               workers=k, devices=list(range(k)), desc=f"{k} GPU")
            wall = time.perf_counter() - t0
            first = ds if first is None else first
            diff = float(np.nanmax(np.abs(ds.test_loss.values - first.test_loss.values)))
            rows.append((k, wall, cfg.cells / wall * 60, diff))
    base = rows[0][1] * rows[0][0]
    print("| GPUs | cells | wall [s] | cells/min | speed-up | efficiency | max abs diff test_loss |\n|---|---|---|---|---|---|---|")
    for k, wall, rate, diff in rows:
        print(f"| {k} | {cfg.cells} | {wall:.1f} | {rate:.1f} | {rows[0][1] / wall:.2f} | {base / (k * wall):.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
