"""Lyapunov spectrum of the a-form rate network by the QR (Benettin) method, docs/lyapunov.md.

The tangent map of a_{t+1} = (1−α)a_t + α(W φ(a_t) + U x_{t+1} + b) is

    D_t = ∂a_{t+1}/∂a_t = (1 − α) I + α W diag(ψ_t),    ψ_t = φ'(a_t).

After a transient of T_tr steps, an orthonormal basis Q_0 (N×k, from a seeded Gaussian) is carried
along, Q ← D_t Q, and re-orthonormalised every n_QR steps, Q R = qr(Q). After T_ons warm-up steps the
logs ln|R_ii| are summed over T_acc steps: λ_i = Σ ln|R_ii| / T_acc per step, λ_i/α per τ. Error bars
come from n_seg segment means (mean ± std/√n_seg); R initial states give a separate spread.

A stack of S independent networks (W of shape (S, N, N)) is measured in one call: every member
uses the same Q_0 and initial states as a single call with the same seed would, so member s of the
stack equals the spectrum of W[s] alone.

The hot loop is a numba kernel (float64, ``fastmath`` off: sums of logs must not be reassociated),
one call for the whole stack with the (member, initial state) trajectories spread over threads
(one BLAS thread each);
``backend="numpy"`` runs the obvious reference that forms D_t explicitly, for tests and benchmarks;
``backend="torch"`` runs the same steps on batched tensors (one batched QR per re-orthonormalisation),
so that a whole stack can run on a GPU.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from numba import njit, prange

from biorules import activations
from biorules.errors import InputError

if TYPE_CHECKING:
    import torch

_NJIT = dict(cache=True, fastmath=False)
_NJIT_PARALLEL = dict(_NJIT, parallel=True)
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


@njit(**_NJIT)
def _qr_pair(p, W, alpha, code, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm, sums, ok):
    """Trajectory p = s·R + r of the stack (member s, initial state r) into sums[s, r], ok[s, r]."""
    s = p // A0.shape[1]
    r = p - s * A0.shape[1]
    x = X[s] if X.shape[0] > 1 else X[0]  # inputs (S, T, n_in) or shared (1, T, n_in)
    out, fine = _qr_kernel(W[s], alpha, code, A0[s, r], U[s], B[s], x, Q0[s], n_transient, n_ons, n_acc,
                           n_qr, n_seg, renorm[s])
    sums[s, r] = out
    ok[s, r] = fine


@njit(**_NJIT)
def _qr_stack_kernel(W, alpha, code, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm,
                     sums, ok):
    """Every trajectory of the stack W (S, N, N) from A0 (S, R, N), one after another, into
    sums (S, R, n_seg, k) and ok (S, R). Single networks use this one: no thread pool is started."""
    for p in range(A0.shape[0] * A0.shape[1]):
        _qr_pair(p, W, alpha, code, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm,
                 sums, ok)


@njit(**_NJIT_PARALLEL)
def _qr_stack_parallel(W, alpha, code, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg,
                       renorm, sums, ok):
    """:func:`_qr_stack_kernel` with the trajectories spread over threads; each writes only its own
    sums[s, r], and the per-trajectory arithmetic is the serial kernel's, so results are bit-identical."""
    for p in prange(A0.shape[0] * A0.shape[1]):
        _qr_pair(p, W, alpha, code, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm,
                 sums, ok)


_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict[str, Any] = {"depth": 0, "saved": None, "fns": None, "looked": False}


def _numba_blas_threads():
    """(get, set) of the thread count of the OpenBLAS behind numba's np.dot (scipy's), or None.

    numba calls BLAS through ``scipy.linalg.cython_blas``; its library is found through that
    module's own dependencies, so nothing else is searched. None for any other BLAS or platform.
    """
    import ctypes

    try:
        from scipy.linalg import cython_blas

        lib = ctypes.CDLL(cython_blas.__file__)
    except (ImportError, OSError):
        return None
    for prefix in ("scipy_openblas", "scipy_openblas64_", "openblas"):
        get, put = (getattr(lib, f"{prefix}_{verb}_num_threads", None) for verb in ("get", "set"))
        if get is not None and put is not None:
            get.restype, get.argtypes = ctypes.c_int, []
            put.restype, put.argtypes = None, [ctypes.c_int]
            return get, put
    return None


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run the BLAS products of the parallel kernel on one thread each, then restore the count.

    The kernel already spreads trajectories over every core; a threaded OpenBLAS called from
    numba's OpenMP threads would oversubscribe them and, with an OpenMP runtime loaded (torch
    brings one), print "Detect OpenMP Loop" for every product. Nested calls from several Python
    threads restore the count once, when the last one leaves. A no-op where the BLAS is unknown.
    """
    with _BLAS_LOCK:
        if not _BLAS_STATE["looked"]:
            _BLAS_STATE["fns"], _BLAS_STATE["looked"] = _numba_blas_threads(), True
        fns = _BLAS_STATE["fns"]
        if fns is not None:
            if _BLAS_STATE["depth"] == 0:
                _BLAS_STATE["saved"] = fns[0]()
                fns[1](1)
            _BLAS_STATE["depth"] += 1
    try:
        yield
    finally:
        if fns is not None:
            with _BLAS_LOCK:
                _BLAS_STATE["depth"] -= 1
                if _BLAS_STATE["depth"] == 0:
                    fns[1](_BLAS_STATE["saved"])


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


def _qr_numpy_stack(W, alpha, nl, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm):
    """The reference loop over every (member, initial state) of the stack, like the kernel's."""
    S, R = A0.shape[:2]
    sums = np.zeros((S, R, n_seg, Q0.shape[-1]))
    ok = np.zeros((S, R), dtype=bool)
    for s in range(S):
        for r in range(R):
            sums[s, r], ok[s, r] = _qr_numpy(W[s], alpha, nl, A0[s, r], U[s], B[s], X[s if len(X) > 1 else 0],
                                             Q0[s], n_transient, n_ons, n_acc, n_qr, n_seg, bool(renorm[s]))
    return sums, ok


# --------------------------------------------------------------------------------------------
# torch: the same steps on batched tensors (a stack on a GPU)
# --------------------------------------------------------------------------------------------


def _orthonormalise_torch(Q):
    """Batched (Q', ln|R_ii|) with Q = Q' R, for Q (B, N, k): the kernel's :func:`_orthonormalise`.

    R is LAPACK's Householder R (``geqrf``, batched on a GPU), and Q' = Q R⁻¹ by a triangular
    solve, twice: the second pass (R₂ = I + O(ε κ(Q))) restores orthogonality to round-off, as the
    Householder Q would, and ln|R_ii| = ln|R₁,ii| + ln|R₂,ii|. ``torch.linalg.qr`` gives the same
    numbers but forms each Q separately on a GPU (about 50 µs a matrix on an H200). An exactly zero
    R_ii (a column D_t has annihilated) logs −inf, as in the kernel, and is left unscaled.
    """
    import torch

    if Q.shape[-1] == 1:
        nrm = torch.sqrt(torch.sum(Q * Q, dim=1))
        return Q / nrm[:, None], torch.log(nrm)
    k = Q.shape[-1]
    logs = torch.zeros(Q.shape[0], k, dtype=Q.dtype, device=Q.device)
    for _ in range(2):
        R = torch.triu(torch.geqrf(Q)[0][:, :k, :])
        d = torch.diagonal(R, dim1=-2, dim2=-1)
        logs = logs + torch.log(torch.abs(d))
        R = R + torch.diag_embed((d == 0.0).to(R.dtype))
        Q = torch.linalg.solve_triangular(R, Q, upper=True, left=False)
    return Q, logs


def _qr_torch(W, alpha, nl, A0, U, B, X, Q0, n_transient, n_ons, n_acc, n_qr, n_seg, renorm, device):
    """The kernel's algorithm for all S·R trajectories at once: states (S, R, N), bases
    (S, R, N, k), Q ← (1−α)Q + α W_s diag(ψ) Q as one batched product, one batched QR
    (:func:`_orthonormalise_torch`).

    Same Q_0, starts, segment bookkeeping, n_QR handling and divergence rule as the kernel. A
    diverged trajectory is frozen (a = 0, Q = Q_0 before each QR) so its NaNs never reach the QR;
    its sums are NaN at the end, as the kernel returns them.
    """
    import torch

    f64 = dict(dtype=torch.float64, device=torch.device(device))
    S, R, n = A0.shape
    k = Q0.shape[-1]
    Wt = torch.as_tensor(W, **f64)
    bt = torch.as_tensor(B, **f64)[:, None, :]
    driven = X.shape[1] > 0
    Ut, Xt = torch.as_tensor(U, **f64), torch.as_tensor(X, **f64)
    Q0t = torch.as_tensor(Q0, **f64)[:, None]  # (S, 1, N, k)
    a = torch.as_tensor(A0, **f64).clone()
    ok = torch.ones((S, R), dtype=torch.bool, device=Wt.device)
    rn = torch.as_tensor(np.asarray(renorm, dtype=bool), device=Wt.device)[:, None, None]
    any_rn = bool(np.any(renorm))

    def advance(a, t):
        drive = torch.matmul(Wt, nl.phi(a).transpose(1, 2)).transpose(1, 2) + bt
        if driven:  # U_s x_t: (S, N, n_in) @ (S or 1, n_in, 1) -> (S, 1, N)
            drive = drive + torch.matmul(Ut, Xt[:, t, :, None]).transpose(1, 2)
        a = (1.0 - alpha) * a + alpha * drive
        ok.logical_and_((a.abs() < DIVERGENCE_LIMIT).all(dim=-1))
        a = torch.where(ok[..., None], a, 0.0)
        if any_rn:
            nrm = torch.sqrt(torch.sum(a * a, dim=-1, keepdim=True))
            a = torch.where(rn & (nrm > 0.0), a / nrm, a)
        return a

    t = 0
    for _ in range(n_transient):
        a = advance(a, t)
        t += 1
    Q = Q0t.expand(S, R, n, k).clone()
    sums = torch.zeros((S, R, n_seg, k), **f64)
    seg_len = n_acc // n_seg
    since_qr = 0
    for s in range(n_ons + n_acc):
        # W_s (ψ ⊙ Q) for all r of member s at once: columns (r, j) side by side, (S, N, R·k)
        P = (nl.dphi(a)[..., None] * Q).permute(0, 2, 1, 3).reshape(S, n, R * k)
        Q = (1.0 - alpha) * Q + alpha * torch.matmul(Wt, P).reshape(S, n, R, k).permute(0, 2, 1, 3)
        a = advance(a, t)
        t += 1
        since_qr += 1
        acc = s - n_ons
        at_boundary = s == n_ons - 1 or (acc >= 0 and ((acc + 1) % seg_len == 0 or acc == n_acc - 1))
        if since_qr == n_qr or at_boundary:
            Q, logs = _orthonormalise_torch(torch.where(ok[..., None, None], Q, Q0t).reshape(S * R, n, k))
            Q = Q.reshape(S, R, n, k)
            since_qr = 0
            if acc >= 0:
                sums[:, :, min(acc // seg_len, n_seg - 1)] += logs.reshape(S, R, k)
    sums_np, ok_np = sums.cpu().numpy(), ok.cpu().numpy()
    sums_np[~ok_np] = np.nan
    return sums_np, ok_np


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def initial_basis(n: int, k: int, seed: int) -> np.ndarray:
    """Q_0: the orthonormal (N, k) basis from a seeded Gaussian (stream 0 of ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
    return np.ascontiguousarray(np.linalg.qr(rng.standard_normal((n, k)))[0])


def _steps_from_tau(value: int | None, tau: float, alpha: float) -> int:
    return int(round(tau / alpha)) if value is None else int(value)


def _per_member(x: Any, shape: tuple, S: int, stacked: bool, name: str) -> np.ndarray:
    """``x`` of ``shape`` (shared by every member) or, for a stack, (S, *shape): as (S, *shape)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape == shape:
        return np.ascontiguousarray(np.broadcast_to(x, (S, *shape)))
    if stacked and x.shape == (S, *shape):
        return np.ascontiguousarray(x)
    allowed = f"{shape} or {(S, *shape)}" if stacked else f"{shape}"
    raise InputError(f"{name} must have shape {allowed}, got {x.shape}")


def _member_summary(sums: np.ndarray, ok: np.ndarray, n_acc: int, seg_lens: np.ndarray, scale: float):
    """(λ, sem, init_std) of one member from its segment sums (R, n_seg, k), sorted by λ.

    λ_i = mean over starts of Σ ln|R_ii| / T_acc; sem from the R·n_seg segment means (sum / length);
    λ is NaN when any start diverged.
    """
    n_init, _, k = sums.shape
    lam_inits = np.array([s.sum(axis=0) / n_acc for s in sums])
    segs = np.concatenate([s / seg_lens[:, None] for s in sums])
    lam = lam_inits.mean(axis=0) * scale
    sem = segs.std(axis=0, ddof=1) / math.sqrt(len(segs)) * scale if len(segs) > 1 else np.full(k, np.nan)
    init_std = lam_inits.std(axis=0, ddof=1) * scale if n_init > 1 else np.full(k, np.nan)
    order = np.argsort(-np.nan_to_num(lam, nan=-np.inf), kind="stable")  # short runs can cross
    lam, sem, init_std = lam[order], sem[order], init_std[order]
    if not ok.all():
        lam[:] = np.nan
    return lam, sem, init_std


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
    seed: int | tuple[int, ...] = 0,
    unit: str = "step",
    backend: str = "numba",
    device: str = "cpu",
) -> xr.DataArray:
    """Lyapunov spectrum λ_1 ≥ … ≥ λ_k of the a-form map with recurrent weights ``W`` (docs/lyapunov.md).

    Parameters
    ----------
    W : (N, N) recurrent weights (row = postsynaptic), or a stack (S, N, N) of S independent
        networks, measured in one call.
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
        T ≥ transient + ons_transient + steps; needs ``U``. A stack also takes (S, T, n_in).
    U, b : input weights (N, n_in) and bias (N,); b defaults to 0. A stack also takes
        (S, N, n_in) and (S, N); the unstacked shapes are shared by every member.
    a0 : explicit initial state (N,), instead of random ones (then n_init must be 1); a stack also
        takes (S, N).
    seed : seeds Q_0 and the random initial states; a stack takes one seed for every member or
        a tuple of one seed per member (member s then equals the single call with seed[s]).
    unit : ``"step"`` (per step) or ``"tau"`` (per τ, i.e. divided by α).
    backend : ``"numba"`` (default), ``"numpy"`` (the reference loop) or ``"torch"`` (batched
        tensors in float64, on ``device``). The backends share Q_0, starts and bookkeeping but not
        the last bit of tanh and of the matrix products; a chaotic trajectory amplifies that
        round-off as e^{λ_1 t}, so they agree to ~1e-14 over windows short against 1/λ_1 and within
        the statistical error (``sem``) over long chaotic ones. With numba (and numpy), member s
        of a stack equals the single call on W[s] bit for bit.
    device : torch device for ``backend="torch"`` (default ``"cpu"``).

    Returns
    -------
    For (N, N) W: a DataArray along ``exponent`` (1 = largest), with coords ``sem`` (segment
    standard error) and ``init_std`` (spread over initial states), and attrs with units, settings,
    ``status`` (``ok`` or ``diverged``), ``kaplan_yorke_dimension`` and ``entropy_rate``.
    For a stack: dims (``member``, ``exponent``), ``sem`` and ``init_std`` over both, and
    ``status``, ``kaplan_yorke_dimension``, ``entropy_rate`` (and their lower-bound flags) as coords
    along ``member``; a diverged member is NaN, the others are unaffected.
    """
    W = np.ascontiguousarray(np.asarray(W, dtype=np.float64))
    if W.ndim not in (2, 3) or W.shape[-1] != W.shape[-2] or W.shape[0] == 0:
        raise InputError(f"W must be a square matrix (N, N) or a stack (S, N, N), got shape {W.shape}")
    stacked = W.ndim == 3
    Ws = W if stacked else W[None]
    S, n = Ws.shape[0], Ws.shape[1]
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
    if backend not in ("numba", "numpy", "torch"):
        raise InputError(f"unknown backend {backend!r}; choose numba, numpy or torch")
    if backend != "torch" and device != "cpu":
        raise InputError(f"device={device!r} needs backend='torch'")

    B = _per_member(np.zeros(n) if b is None else b, (n,), S, stacked, "b")
    if inputs is None:
        X = np.zeros((1, 0, 1))
        Us = np.zeros((S, n, 1))
    else:
        if U is None:
            raise InputError("a driven spectrum needs the input weights U")
        X = np.ascontiguousarray(np.asarray(inputs, dtype=np.float64))
        if not (X.ndim == 2 or (stacked and X.ndim == 3 and X.shape[0] == S)):
            raise InputError(f"inputs must be (T, n_in){' or (S, T, n_in)' if stacked else ''}, got {X.shape}")
        X = X if X.ndim == 3 else X[None]
        Us = _per_member(U, (n, X.shape[-1]), S, stacked, "U (matching the inputs' n_in)")
        if X.shape[1] < n_tr + n_ons + n_acc:
            raise InputError(
                f"inputs have {X.shape[1]} steps; transient + ons_transient + steps = {n_tr + n_ons + n_acc}"
            )
    # relu without drive or bias is homogeneous: the state is renormalised, per member
    renorm = np.array([nonlinearity == "relu" and inputs is None and not np.any(B[s]) for s in range(S)])

    seeds = tuple(int(v) for v in seed) if isinstance(seed, (tuple, list, np.ndarray)) else (int(seed),) * S
    if len(seeds) != S:
        raise InputError(f"a stack of {S} needs one seed or {S} seeds, got {len(seeds)}")
    Q0 = np.ascontiguousarray(np.stack([initial_basis(n, k, sd) for sd in seeds]))  # (S, N, k)
    if a0 is not None:
        if n_init != 1:
            raise InputError("an explicit a0 allows n_init=1 only")
        A0 = np.ascontiguousarray(_per_member(a0, (n,), S, stacked, "a0")[:, None, :])
    else:
        def starts(sd: int) -> np.ndarray:
            rng_a = np.random.default_rng(np.random.SeedSequence(sd).spawn(2)[1])
            return np.array([rng_a.standard_normal(n) for _ in range(n_init)])

        A0 = np.ascontiguousarray(np.stack([starts(sd) for sd in seeds]))

    args = (Ws, float(alpha))
    tail = (A0, Us, B, X, Q0, n_tr, n_ons, n_acc, int(qr_interval), n_seg, renorm)
    if backend == "numba":
        sums, ok = np.zeros((S, A0.shape[1], n_seg, k)), np.zeros((S, A0.shape[1]), dtype=np.bool_)
        if stacked and S * A0.shape[1] > 1:  # trajectories over threads, one BLAS thread each
            with _single_threaded_blas():
                _qr_stack_parallel(*args, activations.CODES[nonlinearity], *tail, sums, ok)
        else:  # one trajectory after another: no thread pool, BLAS threads as configured
            _qr_stack_kernel(*args, activations.CODES[nonlinearity], *tail, sums, ok)
    elif backend == "numpy":
        sums, ok = _qr_numpy_stack(*args, nl, *tail)
    else:
        sums, ok = _qr_torch(*args, nl, *tail, device)

    seg_lens = np.full(n_seg, n_acc // n_seg)
    seg_lens[-1] += n_acc - seg_lens.sum()
    scale = 1.0 if unit == "step" else 1.0 / alpha
    lam, sem, init_std = (np.array(v) for v in zip(
        *(_member_summary(sums[s], ok[s], n_acc, seg_lens, scale) for s in range(S)), strict=True))
    units = "1/step" if unit == "step" else "1/tau"
    attrs = {
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
        "n_init": A0.shape[1],
        "seed": seeds[0] if len(set(seeds)) == 1 else list(seeds),
        "driven": int(inputs is not None),
    }
    status = np.array(["ok" if ok[s].all() else "diverged" for s in range(S)], dtype="<U8")
    derived = [derived_quantities(lam[s], complete=(k == n)) for s in range(S)]
    exponent = ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"})
    sem_attrs = {"units": units, "long_name": "standard error from segment means"}
    std_attrs = {"units": units, "long_name": "std over initial states"}
    if not stacked:
        da = xr.DataArray(
            lam[0],
            dims=("exponent",),
            coords={"exponent": exponent, "sem": ("exponent", sem[0], sem_attrs),
                    "init_std": ("exponent", init_std[0], std_attrs)},
            name="lyapunov_exponent",
            attrs={**attrs, "status": str(status[0])},
        )
        da.attrs.update(derived[0])
        return da
    dims = ("member", "exponent")
    coords = {
        "member": ("member", np.arange(S), {"long_name": "network of the stack"}),
        "exponent": exponent,
        "sem": (dims, sem, sem_attrs),
        "init_std": (dims, init_std, std_attrs),
        "status": ("member", status, {"long_name": "ok or diverged"}),
    }
    for key in derived[0]:
        coords[key] = ("member", np.array([d[key] for d in derived]))
    return xr.DataArray(lam, dims=dims, coords=coords, name="lyapunov_exponent",
                        attrs={**attrs, "n_members": S})


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


# --------------------------------------------------------------------------------------------
# differentiable window estimate (gradient flossing, docs/flossing.md)
# --------------------------------------------------------------------------------------------


def tangent_map(W: torch.Tensor, alpha: float, psi: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """D_t Q_t = (1−α) Q_t + α W (ψ_t ⊙ Q_t) for a basis stored by rows, Q (..., B, k, N) (row i is
    q_i): (1−α) Q + α (ψ ⊙ Q) Wᵀ, one fused multiply-add of (B·k × N)(N × N) per member."""
    import torch

    *lead, B, k, N = Q.shape
    rows = Q.reshape(*lead, B * k, N)
    X = (psi.unsqueeze(-2) * Q).reshape(*lead, B * k, N)
    fma = torch.addmm if W.ndim == 2 else torch.baddbmm
    return fma(rows, X, W.mT, beta=1.0 - alpha, alpha=alpha).reshape(*lead, B, k, N)


def qr_step(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q_{t+1}, diag R_t of D_t Q_t = Q_{t+1} R_t for bases by rows, M (..., k, N) (Q_{t+1} by rows,
    diag R_t (..., k)); k = 1 is a normalisation."""
    import torch

    if M.shape[-2] == 1:
        r = torch.linalg.vector_norm(M, dim=-1, keepdim=True)  # (..., 1, 1)
        return M / r, r[..., 0]
    Q, R = torch.linalg.qr(M.mT)
    return Q.mT, torch.diagonal(R, dim1=-2, dim2=-1)


def lyapunov_window(model: Any, a0: torch.Tensor, q0: torch.Tensor, transient: int, window: int,
                    inputs: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable finite-window estimate λ̂ (k,) per step, (S, k) for a stack (docs/flossing.md):

        D_t Q_t = Q_{t+1} R_t,   λ̂_i = (1/(B T)) Σ_b Σ_{t ≥ T_tr} ln|R_{t,ii}|,

    with QR every step and the state advanced by the network's own step, so autograd reaches W,
    U and b through states, bases and transient alike (the ``exact`` flossing gradient).
    """
    import torch

    from biorules.network import RateState

    alpha, nl = model.alpha, model.nl
    state = RateState(a0, nl.phi(a0))
    Q = q0.mT.unsqueeze(-3).expand(*a0.shape[:-1], *q0.mT.shape[-2:])  # by rows, (..., B, k, N)
    total = torch.zeros(q0.shape[-1], dtype=a0.dtype, device=a0.device)
    for t in range(transient + window):
        Q, r = qr_step(tangent_map(model.W, alpha, nl.dphi(state.a), Q))
        if t >= transient:
            total = total + torch.log(torch.abs(r)).sum(-2)
        state = model.step(state, None if inputs is None else inputs[t])
    return total / (window * a0.shape[-2])
