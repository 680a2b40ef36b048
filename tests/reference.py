"""Slow, obvious references that the fast kernels are checked against."""

from __future__ import annotations

import numpy as np


def two_trajectory_lambda_max(W, alpha, a_start, q0, steps, eps=1e-8):
    """Benettin's float64 pair: λ_max per step from a twin started at a + ε q0, renormalised each step.

    Uses the same state update as the numpy reference of ``biorules.lyapunov``.
    """
    a = a_start.copy()
    d = eps * q0 / np.linalg.norm(q0)
    total = 0.0
    for _ in range(steps):
        b = a + d
        a = (1 - alpha) * a + alpha * (W @ np.tanh(a))
        b = (1 - alpha) * b + alpha * (W @ np.tanh(b))
        d = b - a
        nrm = np.linalg.norm(d)
        total += np.log(nrm / eps)
        d *= eps / nrm
    return total / steps


def mean_field_lambda_max(g: float, n_quad: int = 201) -> float:
    """α = 1 tanh mean field (Molgedey et al. 1992): σ² = g²⟨φ(σz)²⟩, λ = ½ ln g²⟨φ'(σz)²⟩."""
    z, w = np.polynomial.hermite_e.hermegauss(n_quad)
    w = w / w.sum()
    var = 1.0
    for _ in range(2000):
        var = g**2 * np.sum(w * np.tanh(np.sqrt(var) * z) ** 2)
    if var < 1e-12:
        return float(np.log(g))
    return 0.5 * float(np.log(g**2 * np.sum(w * (1 - np.tanh(np.sqrt(var) * z) ** 2) ** 2)))
