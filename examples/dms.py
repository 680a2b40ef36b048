"""Delayed match-to-sample (``dms``, docs/tasks.md) learned by BPTT and by e-prop, with ``biorules.train``.

At each initial gain the same network (same master seed, so the same W₀ and the same λ before
training) is trained by each rule; the script prints the held-out accuracy along training and a
summary table (final accuracy and loss on 512 held-out trials, λ_max per τ before and after,
‖ΔW‖/‖W₀‖, wall time). Chance is 0.5. The 500 ms delay (25 steps, 5 τ) has to be bridged by the
recurrent dynamics, whose dependence e-prop drops from its gradient: e-prop relies on what the
initial dynamics already retain, so its success depends on the initial gain g.

    python examples/dms.py                       # N = 128, g = 1 and 1.5, 1000 updates, seed 0
    python examples/dms.py --rules bptt eprop rflo --gains 1.5 --updates 2000
"""

from __future__ import annotations

import argparse

import torch

from biorules.network import NetworkParams
from biorules.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", nargs="+", default=["bptt", "eprop"])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--gains", type=float, nargs="+", default=[1.0, 1.5])
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=250, help="evaluation period [updates]")
    args = ap.parse_args()
    torch.set_num_threads(1)

    runs = {}
    for gain in args.gains:
        for rule in args.rules:
            ds = train("dms", rule, NetworkParams(n=args.n, gain=gain), updates=args.updates, lr=args.lr,
                       seed=args.seed, eval_every=args.every, n_exponents=5)
            runs[gain, rule] = ds
            curve = "  ".join(f"{int(u)}:{a:.2f}" for u, a in zip(ds.eval_update.values, ds.eval_accuracy.values, strict=True))
            print(f"g={gain:<4} {rule:>6} held-out accuracy by update  {curve}", flush=True)

    print(f"\ndms, N={args.n}, {args.updates} updates, Adam lr {args.lr}, batch 32, seed {args.seed}")
    print(f"{'g':>4} {'rule':>6} {'test acc':>9} {'loss':>7} {'λmax before':>12} {'λmax after':>11} "
          f"{'ΔW/W0':>7} {'cos(∇W,BPTT)':>13} {'time [s]':>9}")
    for (gain, rule), ds in runs.items():
        lam = {"condition": "task", "exponent": 1}  # conditional on the task's own trials
        print(f"{gain:4.2f} {rule:>6} {float(ds.test_accuracy):9.3f} {float(ds.test_loss):7.3f} "
              f"{float(ds.lambda_before.sel(lam)):+12.3f} {float(ds.lambda_after.sel(lam)):+11.3f} "
              f"{float(ds.weight_change):7.3f} {float(ds.grad_cosine.mean()):13.2f} {float(ds.wall_time):9.1f}")

if __name__ == "__main__":
    main()
