"""Flossing rescues plausible learning at a sub-optimal initial gain (issue 4, docs/flossing.md, docs/study.md).

Delayed match-to-sample (``dms``) at g = 0.5 and g = 2.0, rules bptt, eprop and rflo, each without
flossing and with e-prop flossing (``--floss eprop``: the plausible variant, λ* = 0, the default
schedule E_p = 50, E_f = 10, E_i = 50, N_i = 2), over several seeds. Prints final held-out accuracy
(mean ± sd over seeds) and λ_max before and after training (autonomous, 1/τ).

    python examples/flossing.py [--seeds 3] [--n 64] [--updates 1000] [--workers 4]
"""

from __future__ import annotations

import argparse
import itertools
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def run(job: tuple[float, str, str, int, int, int]) -> tuple[float, str, str, int, float, float, float]:
    gain, rule, floss, seed, n, updates = job
    import torch

    torch.set_num_threads(1)
    from biorules.flossing import FlossConfig
    from biorules.network import NetworkParams
    from biorules.train import train

    ds = train("dms", rule, NetworkParams(n=n, gain=gain), updates=updates, seed=seed, n_exponents=1,
               cosine_every=0, floss=None if floss == "none" else FlossConfig(mode=floss, seed=seed))
    lam = {"condition": "task", "exponent": 1}  # conditional on the task's own trials
    return (gain, rule, floss, seed, float(ds.test_accuracy), float(ds.lambda_before.sel(lam)),
            float(ds.lambda_after.sel(lam)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--gains", type=float, nargs="+", default=[0.5, 2.0])
    parser.add_argument("--rules", nargs="+", default=["bptt", "eprop", "rflo"])
    parser.add_argument("--floss", default="eprop", choices=["exact", "local", "eprop"])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    jobs = [(g, r, f, s, args.n, args.updates) for g, r, f, s in
            itertools.product(args.gains, args.rules, ("none", args.floss), range(args.seeds))]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(run, jobs))

    print(f"dms, N = {args.n}, {args.updates} updates, {args.seeds} seeds; flossing = {args.floss} "
          f"(E_p 50, E_f 10, E_i 50, N_i 2, λ* = 0)")
    print(f"{'gain':>5} {'rule':>6} {'floss':>6} {'accuracy':>15} {'λ_max before':>13} {'λ_max after':>12}")
    for g, r, f in itertools.product(args.gains, args.rules, ("none", args.floss)):
        rows = [x for x in results if x[:3] == (g, r, f)]
        acc = np.array([x[4] for x in rows])
        before, after = np.mean([x[5] for x in rows]), np.mean([x[6] for x in rows])
        print(f"{g:5.2f} {r:>6} {f:>6} {acc.mean():8.3f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.3f} "
              f"{before:+13.3f} {after:+12.3f}")


if __name__ == "__main__":
    main()
