"""Cost of one flossing update per mode, and how well the plausible gradients align with exact.

Run by hand: ``python benchmarks/flossing.py``. One torch thread. For N = 64 and 256 it times one
flossing step (gradient + Adam step) of each mode at the same window (16 + 39 steps, batch 1, and
16 + 150 steps, batch 4) and k = 1, and prints the ratio to ``exact`` measured in the same run.
It also times each mode at its own defaults. Then it prints the cosine between the local/eprop gradients and the exact one over gains (N = 32,
batch 8, 2af-driven windows of 16 + 55 steps, 3 seeds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from biorules.experiments.floss_study import gradient_alignment
from biorules.flossing import FlossConfig, Flosser
from biorules.network import NetworkParams, RateRNN

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from _timing import best_time  # noqa: E402


def time_step(n: int, mode: str, window: int | None, batch: int | None, repeat: int = 5,
              k: int | None = 1) -> float:
    """Best time of one flossing step; None settings take the mode's defaults."""
    model = RateRNN(NetworkParams(n=n, gain=1.5), dtype=torch.float64)
    transient = None if window is None else 16
    flosser = Flosser(model, FlossConfig(mode=mode, n_exponents=k, transient=transient, window=window, batch=batch))
    return best_time(flosser.step, repeat, warmup=True)[0]


def defaults_table() -> None:
    print("\none flossing update with each mode's defaults (exact: k = min(75, N), 16 + 39 steps, batch 1;"
          " local/eprop: k = 1, 50 + 150 steps, batch 4)")
    print(f"{'N':>5} {'exact ms':>9} {'local ms':>9} {'eprop ms':>9} {'exact/local':>12} {'exact/eprop':>12}")
    for n in (64, 256):
        t = {m: time_step(n, m, None, None, repeat=3, k=None) for m in ("exact", "local", "eprop")}
        print(f"{n:5d} {1e3 * t['exact']:9.1f} {1e3 * t['local']:9.1f} {1e3 * t['eprop']:9.1f} "
              f"{t['exact'] / t['local']:11.2f}x {t['exact'] / t['eprop']:11.2f}x")


def timing_table() -> None:
    print("one flossing update (gradient + Adam step), k = 1, best of 5, 1 thread")
    print(f"{'N':>5} {'window':>7} {'batch':>6} {'exact ms':>9} {'local ms':>9} {'eprop ms':>9} "
          f"{'exact/local':>12} {'exact/eprop':>12}")
    for n in (64, 256):
        for window, batch in ((39, 1), (150, 4)):
            t = {m: time_step(n, m, window, batch) for m in ("exact", "local", "eprop")}
            print(f"{n:5d} {window:7d} {batch:6d} {1e3 * t['exact']:9.1f} {1e3 * t['local']:9.1f} "
                  f"{1e3 * t['eprop']:9.1f} {t['exact'] / t['local']:11.2f}x {t['exact'] / t['eprop']:11.2f}x")


def alignment_table() -> None:
    print("\ncosine with the exact gradient (W), N = 32, batch 8, 2af-driven window 16 + 55, seeds 0-2")
    print(f"{'gain':>5} {'local mean':>11} {'eprop mean':>11}   per seed (local | eprop)")
    for g in (0.5, 1.0, 1.5, 2.0):
        cos = gradient_alignment(g, seeds=(0, 1, 2))
        print(f"{g:5.2f} {np.mean(cos['local']):11.3f} {np.mean(cos['eprop']):11.3f}   "
              f"{np.round(cos['local'], 2).tolist()} | {np.round(cos['eprop'], 2).tolist()}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    timing_table()
    defaults_table()
    alignment_table()
