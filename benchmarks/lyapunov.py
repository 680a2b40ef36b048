"""Lyapunov spectrum speed: this project's numba kernel vs its numpy reference vs ``lyapynov``.

Run by hand: ``python benchmarks/lyapunov.py [--quick]``. Prints a table of wall times and ratios
against baselines measured in the same run, and the accuracy of each estimate against lyapynov's.

* Full spectrum, N = 256, α = 0.2, g = 2, 2000 accumulated steps after a 500-step transient.
* Top-10 exponents at N = 1000.
* The floor: the same count of BLAS products (W @ (N×k)) and LAPACK QR calls, timed alone.
* ``--stack``: a stack of S networks (g = 2, seeds 0 … S−1) at the default settings: one stacked
  call (numba, torch on the CPU and, if there is one, on the GPU) against a loop of single calls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from biorules.lyapunov import spectrum
from biorules.network import NetworkParams, recurrent_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from _timing import best_time  # noqa: E402


def lyapynov_spectrum(W, alpha, a0, k, transient, steps):
    """The same a-form map through lyapynov's DiscreteDS and LCE (QR every step)."""
    import lyapynov

    n = W.shape[0]
    eye = np.eye(n)

    def f(a, t):
        return (1 - alpha) * a + alpha * (W @ np.tanh(a))

    def jac(a, t):
        return (1 - alpha) * eye + alpha * W * (1 - np.tanh(a) ** 2)[None, :]

    system = lyapynov.DiscreteDS(a0.copy(), 0, f, jac)
    return np.sort(lyapynov.LCE(system, k, transient, steps, False))[::-1]


def floor(W, k, steps, n_qr, transient):
    """Only the BLAS products and LAPACK QR calls the QR method needs, in a bare loop."""
    n = W.shape[0]
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((n, k)))[0]
    h = np.random.default_rng(1).standard_normal(n)
    for _ in range(transient):
        h = W @ h
        h /= np.linalg.norm(h)
    for s in range(steps):
        Q = W @ Q
        h = W @ h
        if (s + 1) % n_qr == 0:
            Q, _ = np.linalg.qr(Q)
    return Q


def case(label, n, k, transient, steps, qr_intervals, repeat):
    alpha = 0.2
    W = recurrent_weights(NetworkParams(n=n, gain=2.0, seed=0))[0]
    a0 = np.random.default_rng(0).standard_normal(n)
    kw = dict(alpha=alpha, n_exponents=k, steps=steps, transient=transient, ons_transient=0, a0=a0)
    spectrum(W, **{**kw, "steps": 5, "transient": 1})  # compile / warm the numba cache
    rows = []
    t_lp, lam_lp = best_time(lambda: lyapynov_spectrum(W, alpha, a0, k, transient, steps))
    rows.append(("lyapynov (QR every step)", t_lp, lam_lp))
    t_np, lam_np = best_time(lambda: spectrum(W, backend="numpy", **kw).values)
    rows.append(("numpy reference (QR every step)", t_np, lam_np))
    floors = {}
    for q in qr_intervals:
        t, lam = best_time(lambda q=q: spectrum(W, qr_interval=q, **kw).values, repeat)
        rows.append((f"biorules numba, QR every {q}", t, lam))
        floors[q] = best_time(lambda q=q: floor(W, k, steps, q, transient), repeat)[0]
    print(f"\n{label}: N={n}, k={k}, α={alpha}, g=2, transient {transient}, {steps} steps")
    print(f"{'method':34s} {'time s':>8s} {'vs lyapynov':>12s} {'vs floor':>9s} {'Δλ_max':>9s} {'Δsum %':>8s}")
    for name, t, lam in rows:
        q = int(name.rsplit(" ", 1)[1]) if name.startswith("biorules") else None
        vs_floor = f"{t / floors[q]:9.2f}" if q else f"{'':9s}"
        dmax = lam[0] - lam_lp[0]
        dsum = 100 * (lam.sum() - lam_lp.sum()) / abs(lam_lp.sum())
        print(f"{name:34s} {t:8.3f} {t_lp / t:11.2f}x {vs_floor} {dmax:+9.5f} {dsum:+8.3f}")
    for q, t in floors.items():
        print(f"{'floor (BLAS+QR alone), QR every ' + str(q):34s} {t:8.3f} {t_lp / t:11.2f}x")


def stack_case(S, n, k, repeat):
    """Stacked spectrum of S networks vs a Python loop of S single numba calls, default settings."""
    import torch

    alpha = 0.2
    W = np.stack([recurrent_weights(NetworkParams(n=n, gain=2.0, seed=s))[0] for s in range(S)])
    kw = dict(alpha=alpha, n_exponents=k)
    spectrum(W[:2], **{**kw, "steps": 5, "transient": 1})  # compile / warm both numba kernels
    spectrum(W[0], **{**kw, "steps": 5, "transient": 1})
    t_loop, ref = best_time(lambda: np.stack([spectrum(w, **kw).values for w in W]), repeat)
    rows = [("numba, loop of single calls", t_loop, ref)]
    rows.append(("numba, one stacked call", *best_time(lambda: spectrum(W, **kw).values, repeat)))
    rows.append(("torch cpu, one stacked call", *best_time(lambda: spectrum(W, backend="torch", **kw).values)))
    if torch.cuda.is_available():
        spectrum(W, backend="torch", device="cuda", **{**kw, "steps": 5, "transient": 1})
        rows.append(("torch cuda, one stacked call",
                     *best_time(lambda: spectrum(W, backend="torch", device="cuda", **kw).values, repeat)))
    print(f"\nstack: S={S}, N={n}, k={k}, α={alpha}, g=2, default settings (transient 100 τ, "
          f"warm-up 20 τ, 400 τ accumulated)")
    print(f"{'method':34s} {'time s':>8s} {'vs loop':>8s} {'max |Δλ| vs loop':>17s}")
    for name, t, lam in rows:
        print(f"{name:34s} {t:8.3f} {t_loop / t:7.2f}x {np.abs(lam - ref).max():17.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--stack", action="store_true", help="only the stacked-networks case")
    args = parser.parse_args()
    if args.stack:
        stack_case(8, 64, 5, 3)
        if not args.quick:
            stack_case(64, 256, 10, 1)
        return
    if args.quick:
        case("full spectrum", 64, 64, 100, 400, (1, 10), 1)
        case("top-10", 200, 10, 100, 400, (1, 10), 1)
        return
    case("full spectrum", 256, 256, 500, 2000, (1, 5, 10), 1)
    case("top-10", 1000, 10, 500, 2000, (1, 10), 1)


if __name__ == "__main__":
    main()
