"""Lyapunov spectrum of the a-form rate network by the QR (Benettin) method, spec §4.

The tangent map of a_{t+1} = (1−α)a_t + α(W φ(a_t) + U x_{t+1} + b) is

    D_t = ∂a_{t+1}/∂a_t = (1 − α) I + α W diag(ψ_t),    ψ_t = φ'(a_t).

After a transient of T_tr steps, an orthonormal basis Q_0 (N×k, from a seeded Gaussian) is carried
along, Q ← D_t Q, and re-orthonormalised every n_QR steps, Q R = qr(Q). After T_ons warm-up steps the
logs ln|R_ii| are summed over T_acc steps: λ_i = Σ ln|R_ii| / T_acc per step, λ_i/α per τ. Error bars
come from n_seg segment means (mean ± std/√n_seg); R initial states give a separate spread.

The hot loop is a numba kernel (float64, ``fastmath`` off: sums of logs must not be reassociated);
``backend="numpy"`` runs the obvious reference that forms D_t explicitly, for tests and benchmarks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr
from numba import njit

from biorules import activations
from biorules.errors import InputError

_NJIT = dict(cache=True, fastmath=False)
DIVERGENCE_LIMIT = 1e100
"""|a| above this (or NaN/inf) marks the trajectory as diverged: the spectrum is then NaN."""

DEFAULT_TRANSIENT_TAU = 100.0
DEFAULT_ONS_TAU = 20.0
DEFAULT_STEPS_TAU = 400.0


# --------------------------------------------------------------------------------------------
# numba kernel
# --------------------------------------------------------------------------------------------


@njit(**_NJIT)
def _rates(a, code):
    """(h, ψ) = (φ(a), φ'(a)) for the nonlinearity ``code`` (0 tanh, 1 retanh, 2 relu)."""
    if code == 2:
        psi = (a > 0.0).astype(np.float64)
        return a * psi, psi
    th = np.tanh(a)
    psi = 1.0 - th * th
    if code == 1:
        on = (a > 0.0).astype(np.float64)
        return th * on, psi * on
    return th, psi


@njit(**_NJIT)
def _advance(a, h, W, U, b, X, t, alpha, renorm):
    """a ← (1−α)a + α(W h + U x_t + b) in place; False once the state leaves the finite range."""
    drive = np.dot(W, h) + b
    if X.shape[0] > 0:
        drive += np.dot(U, X[t])
    a[:] = (1.0 - alpha) * a + alpha * drive
    if not np.all(np.abs(a) < DIVERGENCE_LIMIT):
        return False
    if renorm:
        nrm = np.sqrt(np.sum(a * a))
        if nrm > 0.0:
            a /= nrm
    return True


@njit(**_NJIT)
def _orthonormalise(Q, logs):
    """Return qr(Q).Q and set logs ← ln|R_ii| (k = 1: a plain normalisation)."""
    if Q.shape[1] == 1:
        nrm = np.sqrt(np.sum(Q * Q))
        logs[0] = np.log(nrm)
        return Q / nrm
    q, r = np.linalg.qr(Q)
    for i in range(Q.shape[1]):
        logs[i] = np.log(np.abs(r[i, i]))
    return np.ascontiguousarray(q)


@njit(**_NJIT)
def _qr_kernel(W, alpha, code, a0, U, b, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm):
    """Segment sums of ln|R_ii|, shape (n_seg, k), and a finite-trajectory flag."""
    k = Q0.shape[1]
    a = a0.copy()
    sums = np.zeros((n_seg, k))
    logs = np.zeros(k)
    t = 0
    for _ in range(n_transient):
        h, psi = _rates(a, code)
        if not _advance(a, h, W, U, b, X, t, alpha, renorm):
            return sums * np.nan, False
        t += 1
    Q = Q0.copy()
    seg_len = n_acc // n_seg
    since_qr = 0
    for s in range(n_ons + n_acc):
        h, psi = _rates(a, code)
        # Q ← D_t Q = (1−α) Q + α W diag(ψ_t) Q
        Q = (1.0 - alpha) * Q + alpha * np.dot(W, psi.reshape(-1, 1) * Q)
        if not _advance(a, h, W, U, b, X, t, alpha, renorm):
            return sums * np.nan, False
        t += 1
        since_qr += 1
        acc = s - n_ons  # index of this step in the accumulation window (< 0 while warming up)
        at_boundary = s == n_ons - 1 or (acc >= 0 and ((acc + 1) % seg_len == 0 or acc == n_acc - 1))
        if since_qr == n_qr or at_boundary:
            Q = _orthonormalise(Q, logs)
            since_qr = 0
            if acc >= 0:
                sums[min(acc // seg_len, n_seg - 1)] += logs
    return sums, True


# --------------------------------------------------------------------------------------------
# numpy reference: D_t formed explicitly, one obvious loop
# --------------------------------------------------------------------------------------------


def _qr_numpy(W, alpha, nl, a0, U, b, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm):
    n, k = Q0.shape
    a = a0.copy()
    eye = np.eye(n)

    def advance(a, t):
        drive = W @ nl.phi(a) + b
        if X.shape[0] > 0:
            drive = drive + U @ X[t]
        a = (1.0 - alpha) * a + alpha * drive
        if renorm and np.linalg.norm(a) > 0:
            a = a / np.linalg.norm(a)
        return a

    for t in range(n_transient):
        a = advance(a, t)
        if not np.all(np.abs(a) < DIVERGENCE_LIMIT):
            return np.full((n_seg, k), np.nan), False
    Q = Q0.copy()
    sums = np.zeros((n_seg, k))
    seg_len = n_acc // n_seg
    since_qr = 0
    for s in range(n_ons + n_acc):
        D = (1.0 - alpha) * eye + alpha * W * nl.dphi(a)[None, :]
        Q = D @ Q
        a = advance(a, n_transient + s)
        if not np.all(np.abs(a) < DIVERGENCE_LIMIT):
            return np.full((n_seg, k), np.nan), False
        since_qr += 1
        acc = s - n_ons
        at_boundary = s == n_ons - 1 or (acc >= 0 and ((acc + 1) % seg_len == 0 or acc == n_acc - 1))
        if since_qr == n_qr or at_boundary:
            Q, R = np.linalg.qr(Q)
            since_qr = 0
            if acc >= 0:
                sums[min(acc // seg_len, n_seg - 1)] += np.log(np.abs(np.diag(R)))
    return sums, True


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def initial_basis(n: int, k: int, seed: int) -> np.ndarray:
    """Q_0: the orthonormal (N, k) basis from a seeded Gaussian (stream 0 of ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    return np.ascontiguousarray(np.linalg.qr(rng.standard_normal((n, k)))[0])


def _steps_from_tau(value: int | None, tau: float, alpha: float) -> int:
    return int(round(tau / alpha)) if value is None else int(value)


def spectrum(
    W: Any,
    *,
    alpha: float,
    nonlinearity: str = "tanh",
    n_exponents: int | None = None,
    steps: int | None = None,
    transient: int | None = None,
    ons_transient: int | None = None,
    qr_interval: int = 1,
    n_segments: int = 10,
    n_init: int = 1,
    inputs: Any = None,
    U: Any = None,
    b: Any = None,
    a0: Any = None,
    seed: int = 0,
    unit: str = "step",
    backend: str = "numba",
) -> xr.DataArray:
    """Lyapunov spectrum λ_1 ≥ … ≥ λ_k of the a-form map with recurrent weights ``W`` (spec §4).

    Parameters
    ----------
    W : (N, N) recurrent weights (row = postsynaptic).
    alpha : α = dt/τ.
    nonlinearity : ``tanh``, ``retanh`` or ``relu``.
    n_exponents : k ≤ N exponents (default: all N).
    steps : T_acc accumulated steps (default 400 τ = round(400/α)).
    transient : T_tr steps of the state alone before Q_0 is set (default 100 τ).
    ons_transient : T_ons steps of Q warm-up before accumulating (default 20 τ).
    qr_interval : n_QR, steps between re-orthonormalisations.
    n_segments : n_seg segment means for the standard error.
    n_init : R initial states a ~ N(0, I); their exponents are averaged, their std reported.
    inputs : optional (T, n_in) input sequence (driven spectrum) with
        T ≥ transient + ons_transient + steps; needs ``U``.
    U, b : input weights (N, n_in) and bias (N,); b defaults to 0.
    a0 : explicit initial state (N,), instead of random ones (then n_init must be 1).
    seed : seeds Q_0 and the random initial states.
    unit : ``"step"`` (per step) or ``"tau"`` (per τ, i.e. divided by α).
    backend : ``"numba"`` (default) or ``"numpy"`` (the reference loop).

    Returns
    -------
    DataArray along ``exponent`` (1 = largest), with coords ``sem`` (segment standard error) and
    ``init_std`` (spread over initial states), and attrs with units, settings, ``status`` (``ok`` or
    ``diverged``), ``kaplan_yorke_dimension`` and ``entropy_rate``.
    """
    W = np.ascontiguousarray(np.asarray(W, dtype=np.float64))
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise InputError(f"W must be a square matrix, got shape {W.shape}")
    n = W.shape[0]
    if not 0.0 < alpha <= 1.0:
        raise InputError(f"alpha must lie in (0, 1], got {alpha}")
    nl = activations.get(nonlinearity)
    k = n if n_exponents is None else int(n_exponents)
    if not 1 <= k <= n:
        raise InputError(f"number of exponents must lie in 1..{n} (the number of units), got {k}")
    n_acc = _steps_from_tau(steps, DEFAULT_STEPS_TAU, alpha)
    n_tr = _steps_from_tau(transient, DEFAULT_TRANSIENT_TAU, alpha)
    n_ons = _steps_from_tau(ons_transient, DEFAULT_ONS_TAU, alpha)
    if n_acc < 1 or n_tr < 0 or n_ons < 0:
        raise InputError("steps must be positive, transients non-negative")
    if qr_interval < 1:
        raise InputError(f"qr_interval must be at least 1, got {qr_interval}")
    n_seg = max(1, min(int(n_segments), n_acc))
    if n_init < 1:
        raise InputError(f"n_init must be at least 1, got {n_init}")
    if unit not in ("step", "tau"):
        raise InputError(f"unit must be 'step' or 'tau', got {unit!r}")

    bias = np.zeros(n) if b is None else np.ascontiguousarray(np.asarray(b, dtype=np.float64))
    if inputs is None:
        X = np.zeros((0, 1))
        Um = np.zeros((n, 1))
    else:
        if U is None:
            raise InputError("a driven spectrum needs the input weights U")
        X = np.ascontiguousarray(np.asarray(inputs, dtype=np.float64))
        Um = np.ascontiguousarray(np.asarray(U, dtype=np.float64))
        if X.ndim != 2 or Um.shape != (n, X.shape[1]):
            raise InputError(f"inputs must be (T, n_in) matching U {Um.shape}, got {X.shape}")
        if X.shape[0] < n_tr + n_ons + n_acc:
            raise InputError(
                f"inputs have {X.shape[0]} steps; transient + ons_transient + steps = {n_tr + n_ons + n_acc}"
            )
    renorm = nonlinearity == "relu" and inputs is None and not np.any(bias)

    Q0 = initial_basis(n, k, seed)
    if a0 is not None:
        if n_init != 1:
            raise InputError("an explicit a0 allows n_init=1 only")
        starts = [np.ascontiguousarray(np.asarray(a0, dtype=np.float64))]
    else:
        rng_a = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[1])
        starts = [rng_a.standard_normal(n) for _ in range(n_init)]

    seg_lens = np.full(n_seg, n_acc // n_seg)
    seg_lens[-1] += n_acc - seg_lens.sum()
    per_init, seg_means, ok_all = [], [], True
    for start in starts:
        if backend == "numba":
            sums, ok = _qr_kernel(W, float(alpha), activations.CODES[nonlinearity], start, Um, bias, X,
                                  Q0, n_tr, n_ons, n_acc, int(qr_interval), n_seg, renorm)
        elif backend == "numpy":
            sums, ok = _qr_numpy(W, float(alpha), nl, start, Um, bias, X, Q0, n_tr, n_ons, n_acc,
                                 int(qr_interval), n_seg, renorm)
        else:
            raise InputError(f"unknown backend {backend!r}; choose numba or numpy")
        ok_all &= bool(ok)
        per_init.append(sums.sum(axis=0) / n_acc)
        seg_means.append(sums / seg_lens[:, None])
    lam_inits = np.array(per_init)
    segs = np.concatenate(seg_means)
    scale = 1.0 if unit == "step" else 1.0 / alpha
    lam = lam_inits.mean(axis=0) * scale
    sem = segs.std(axis=0, ddof=1) / math.sqrt(len(segs)) * scale if len(segs) > 1 else np.full(k, np.nan)
    init_std = lam_inits.std(axis=0, ddof=1) * scale if n_init > 1 else np.full(k, np.nan)
    order = np.argsort(-np.nan_to_num(lam, nan=-np.inf), kind="stable")  # short runs can cross
    lam, sem, init_std = lam[order], sem[order], init_std[order]
    units = "1/step" if unit == "step" else "1/tau"
    da = xr.DataArray(
        lam,
        dims=("exponent",),
        coords={
            "exponent": ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"}),
            "sem": ("exponent", sem, {"units": units, "long_name": "standard error from segment means"}),
            "init_std": ("exponent", init_std, {"units": units, "long_name": "std over initial states"}),
        },
        name="lyapunov_exponent",
        attrs={
            "units": units,
            "long_name": "Lyapunov exponent",
            "alpha": float(alpha),
            "nonlinearity": nonlinearity,
            "n_units": n,
            "steps": n_acc,
            "transient": n_tr,
            "ons_transient": n_ons,
            "qr_interval": int(qr_interval),
            "n_segments": n_seg,
            "n_init": len(starts),
            "seed": int(seed),
            "driven": int(inputs is not None),
            "status": "ok" if ok_all else "diverged",
        },
    )
    if not ok_all:
        da[:] = np.nan
    da.attrs.update(derived_quantities(da.values, complete=(k == n)))
    return da


def spectrum_of(params: Any, **kwargs: Any) -> xr.DataArray:
    """Autonomous spectrum of the network described by ``NetworkParams`` (W built from its seed).

    Keyword arguments go to :func:`spectrum`; the network parameters land in the attrs.
    """
    from biorules.network import recurrent_weights

    W, _ = recurrent_weights(params)
    kwargs.setdefault("seed", params.seed)
    da = spectrum(W, alpha=params.alpha, nonlinearity=params.nonlinearity, **kwargs)
    da.attrs.update({"gain": params.gain, "init": params.init, "network_seed": params.seed})
    return da


def kaplan_yorke(lam: Any) -> float:
    """D_KY = j + Σ_{i≤j} λ_i / |λ_{j+1}|, j = max{n : Σ_{i≤n} λ_i ≥ 0}; 0 if λ_1 < 0.

    NaN when the given exponents do not reach a negative cumulative sum (only a lower bound ≥ k).
    """
    lam = np.sort(np.asarray(lam, dtype=np.float64))[::-1]
    if lam.size == 0 or np.isnan(lam).any():
        return float("nan")
    if lam[0] < 0:
        return 0.0
    csum = np.cumsum(lam)
    j = int(np.max(np.nonzero(csum >= 0)[0])) + 1
    if j >= lam.size:
        return float("nan")
    return j + csum[j - 1] / abs(lam[j])


def entropy_rate(lam: Any) -> float:
    """Kolmogorov–Sinai entropy rate bound H = Σ_{λ_i > 0} λ_i (in the units of ``lam``, nats)."""
    lam = np.asarray(lam, dtype=np.float64)
    return float(np.sum(lam[lam > 0])) if not np.isnan(lam).any() else float("nan")


def derived_quantities(lam: np.ndarray, complete: bool) -> dict[str, Any]:
    """D_KY, H and their flags for a (possibly partial, k < N) spectrum, as attrs."""
    d_ky = kaplan_yorke(lam)
    h = entropy_rate(lam)
    return {
        "kaplan_yorke_dimension": d_ky,
        "kaplan_yorke_lower_bound": int(not complete and np.isnan(d_ky) and not np.isnan(lam).any()),
        "entropy_rate": h,
        "entropy_rate_lower_bound": int(not complete and lam.size > 0 and bool(lam[-1] > 0)),
    }
