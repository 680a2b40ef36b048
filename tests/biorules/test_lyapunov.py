"""QR Lyapunov spectrum (docs/lyapunov.md): exact identities, mean field, kernel vs reference. float64."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from reference import mean_field_lambda_max, two_trajectory_lambda_max

from biorules.errors import InputError
from biorules.lyapunov import entropy_rate, initial_basis, kaplan_yorke, spectrum, spectrum_of
from biorules.network import NetworkParams, recurrent_weights

jit_heavy = pytest.mark.jit_heavy  # too slow to run with NUMBA_DISABLE_JIT=1


def _W(n, g, seed=0, init="gaussian"):
    return recurrent_weights(NetworkParams(n=n, gain=g, seed=seed, init=init))[0]


@jit_heavy
def test_zero_fixed_point_equals_eigenvalues():
    """g < 1, tanh, no input or bias: λ_i = sorted ln|1 − α + α μ_i| (finite N), error ≤ 1e-3."""
    alpha = 0.2
    W = _W(50, 0.8)
    lam = spectrum(W, alpha=alpha, steps=8000, ons_transient=500)
    expected = np.sort(np.log(np.abs(1 - alpha + alpha * np.linalg.eigvals(W))))[::-1]
    np.testing.assert_allclose(lam.values, expected, atol=1e-3, rtol=0)


def test_zero_fixed_point_orthogonal_small():
    """orthogonal W = gQ: every exponent is ln|1 − α + α g e^{iθ}| (N = 20, docs/lyapunov.md, check 1)."""
    alpha, g = 0.3, 0.7
    W = _W(20, g, init="orthogonal")
    lam = spectrum(W, alpha=alpha, steps=2000, ons_transient=500, transient=200)
    expected = np.sort(np.log(np.abs(1 - alpha + alpha * np.linalg.eigvals(W))))[::-1]
    np.testing.assert_allclose(lam.values, expected, atol=1e-3, rtol=0)


def test_sum_rule_equals_mean_log_det():
    """k = N: Σ λ_i = (1/T_acc) Σ_t ln|det D_t| along the same chaotic trajectory, to round-off."""
    n, alpha, n_tr, n_ons, n_acc = 40, 0.2, 0, 10, 150
    W = _W(n, 2.5)
    a0 = np.random.default_rng(1).standard_normal(n)
    lam = spectrum(W, alpha=alpha, steps=n_acc, transient=n_tr, ons_transient=n_ons, a0=a0, qr_interval=3)
    a, logdets = a0.copy(), []
    for t in range(n_ons + n_acc):
        D = (1 - alpha) * np.eye(n) + alpha * W * (1 - np.tanh(a) ** 2)[None, :]
        if t >= n_ons:
            logdets.append(np.linalg.slogdet(D)[1])
        a = (1 - alpha) * a + alpha * (W @ np.tanh(a))
    assert lam.attrs["status"] == "ok"
    assert abs(lam.values.sum() - np.mean(logdets)) < 1e-10


def test_lambda_max_matches_two_trajectories_at_g2():
    """k = 1 QR against Benettin's pair (ε = 1e-8) started along q_0, g = 2: to 1e-6 per step."""
    n, alpha, steps = 100, 0.2, 1000
    W = _W(n, 2.0)
    a0 = np.random.default_rng(3).standard_normal(n)
    lam = spectrum(W, alpha=alpha, n_exponents=1, steps=steps, transient=0, ons_transient=0, a0=a0, seed=5)
    q0 = initial_basis(n, 1, seed=5)[:, 0]
    ref = two_trajectory_lambda_max(W, alpha, a0, q0, steps)
    assert lam.values[0] > 0  # chaotic
    assert abs(lam.values[0] - ref) < 1e-6


@pytest.mark.parametrize("g", [1.5, 2.0, 3.0])
@jit_heavy
def test_mean_field_alpha1_n500(g):
    """N = 500, α = 1, tanh: λ_max within 0.02 of the mean-field value (2 seeds)."""
    vals = [spectrum_of(NetworkParams(n=500, gain=g, alpha=1.0, seed=s), n_exponents=1, steps=4000,
                        transient=300, ons_transient=50).values[0] for s in (0, 1)]
    assert abs(np.mean(vals) - mean_field_lambda_max(g)) < 0.02


@jit_heavy
def test_stable_alpha1_n500_is_log_spectral_radius():
    """g = 0.5, α = 1: λ_max = ln ρ(W) exactly; ρ(W) → g as N → ∞ (finite N: ρ slightly above g)."""
    lams, radii = [], []
    for s in range(4):
        p = NetworkParams(n=500, gain=0.5, alpha=1.0, seed=s)
        W = recurrent_weights(p)[0]
        lams.append(spectrum(W, alpha=1.0, n_exponents=1, steps=2000, transient=300, seed=s).values[0])
        radii.append(np.abs(np.linalg.eigvals(W)).max())
    np.testing.assert_allclose(lams, np.log(radii), atol=1e-3)
    # the circular-law edge at N = 500 sits ~2-4 % above g, so the mean lies within 0.03 of ln g
    assert abs(np.mean(lams) - np.log(0.5)) < 0.03


@pytest.mark.parametrize("nonlinearity", ["tanh", "retanh", "relu"])
def test_numba_equals_numpy_reference(nonlinearity):
    """The kernel and the explicit-D_t reference agree to 1e-10 (short window, chaotic net)."""
    W = _W(30, 2.0, seed=2)
    kw = dict(alpha=0.3, nonlinearity=nonlinearity, n_exponents=7, steps=200, transient=50,
              ons_transient=20, qr_interval=2, seed=4)
    fast = spectrum(W, backend="numba", **kw)
    ref = spectrum(W, backend="numpy", **kw)
    xr.testing.assert_allclose(fast, ref, atol=1e-10, rtol=0)


def test_driven_numba_equals_numpy_and_depends_on_input():
    n, n_in, T = 30, 2, 400
    rng = np.random.default_rng(0)
    W, U, b = _W(n, 1.5), rng.standard_normal((n, n_in)), 0.1 * rng.standard_normal(n)
    x = rng.standard_normal((T, n_in))
    kw = dict(alpha=0.2, n_exponents=3, steps=300, transient=50, ons_transient=50, inputs=x, U=U, b=b)
    fast, ref = spectrum(W, **kw), spectrum(W, backend="numpy", **kw)
    np.testing.assert_allclose(fast.values, ref.values, atol=1e-10)
    auto = spectrum(W, alpha=0.2, n_exponents=3, steps=300, transient=50, ons_transient=50)
    assert fast.attrs["driven"] == 1 and np.abs(fast.values - auto.values).max() > 1e-3


def test_same_seed_same_numbers_and_units():
    W = _W(50, 1.8)
    a = spectrum(W, alpha=0.2, n_exponents=4, steps=300, n_init=2, seed=7)
    b = spectrum(W, alpha=0.2, n_exponents=4, steps=300, n_init=2, seed=7)
    xr.testing.assert_identical(a, b)
    assert a.dims == ("exponent",) and list(a.exponent.values) == [1, 2, 3, 4]
    assert np.all(np.diff(a.values) <= 1e-12)  # sorted descending
    assert a.attrs["units"] == "1/step" and np.all(np.isfinite(a["sem"])) and np.all(np.isfinite(a["init_std"]))
    per_tau = spectrum(W, alpha=0.2, n_exponents=4, steps=300, n_init=2, seed=7, unit="tau")
    np.testing.assert_allclose(per_tau.values, a.values / 0.2)
    assert per_tau.attrs["units"] == "1/tau"


def test_divergence_gives_nan_not_an_exception():
    n = 10
    W = 50.0 * np.eye(n)
    lam = spectrum(W, alpha=1.0, nonlinearity="relu", b=np.ones(n), n_exponents=2, steps=100, transient=50)
    assert lam.attrs["status"] == "diverged" and np.isnan(lam.values).all()


def test_relu_without_input_is_renormalised_and_finite():
    lam = spectrum(_W(50, 3.0), alpha=1.0, nonlinearity="relu", n_exponents=2, steps=300, transient=100)
    assert lam.attrs["status"] == "ok" and np.isfinite(lam.values).all()


def test_kaplan_yorke_and_entropy():
    lam = np.array([0.3, 0.1, -0.2, -0.5])
    # cumulative sums 0.3, 0.4, 0.2, -0.3 -> j = 3, D = 3 + 0.2/0.5
    assert kaplan_yorke(lam) == pytest.approx(3.4)
    assert entropy_rate(lam) == pytest.approx(0.4)
    assert kaplan_yorke(np.array([-0.1, -0.2])) == 0.0
    assert np.isnan(kaplan_yorke(np.array([0.2, 0.1])))  # partial spectrum: only a lower bound


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_exponents=0), "exponents"),
        (dict(n_exponents=11), "exponents"),
        (dict(alpha=0.0), "alpha"),
        (dict(nonlinearity="sigmoid"), "nonlinearity"),
        (dict(qr_interval=0), "qr_interval"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, match):
    args = dict(alpha=0.2, steps=10)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        spectrum(np.eye(10), **args)


# --------------------------------------------------------------------------------------------
# stacks: W (S, N, N), one call; member s equals the single call on W[s] with the same seed
# --------------------------------------------------------------------------------------------

STACK_BACKENDS = ["numba", "numpy", "torch"]


def _stack(n, gains, init="gaussian"):
    """S = len(gains) networks, member s with gain gains[s] and network seed s."""
    return np.stack([_W(n, g, seed=s, init=init) for s, g in enumerate(gains)])


def _assert_member_equals(stacked, s, single, atol):
    np.testing.assert_allclose(stacked.values[s], single.values, atol=atol, rtol=0)
    for name in ("sem", "init_std"):
        np.testing.assert_allclose(stacked[name].values[s], single[name].values, atol=atol, rtol=0)
    assert stacked["status"].values[s] == single.attrs["status"]
    for name in ("kaplan_yorke_dimension", "entropy_rate"):
        np.testing.assert_allclose(stacked[name].values[s], single.attrs[name], atol=atol, rtol=0)


@pytest.mark.parametrize("backend", STACK_BACKENDS)
def test_stack_equals_per_member_spectra(backend):
    """4 members (gains 0.8 … 3, network seeds 0 … 3), 2 starts each: member s = spectrum(W[s]) to
    1e-10, bit-identical for numba and numpy (each member runs the single call's arithmetic)."""
    W = _stack(16, (0.8, 1.5, 2.0, 3.0))
    kw = dict(alpha=0.3, n_exponents=4, steps=200, transient=50, ons_transient=20, qr_interval=3,
              n_segments=5, n_init=2, seed=3)
    st = spectrum(W, backend=backend, **kw)
    assert st.dims == ("member", "exponent") and st.shape == (4, 4)
    assert st["sem"].dims == st["init_std"].dims == ("member", "exponent")
    assert st["status"].dims == st["kaplan_yorke_dimension"].dims == st["entropy_rate"].dims == ("member",)
    assert list(st["status"].values) == ["ok"] * 4 and st.attrs["n_members"] == 4
    for s in range(4):
        single = spectrum(W[s], **kw)
        _assert_member_equals(st, s, single, atol=1e-10)
        if backend in ("numba", "numpy"):  # and bit for bit against the same backend's single call
            same = single if backend == "numba" else spectrum(W[s], backend=backend, **kw)
            np.testing.assert_array_equal(st.values[s], same.values)


@pytest.mark.parametrize("backend", STACK_BACKENDS)
def test_driven_stack_takes_per_member_or_shared_arguments(backend):
    """U (S, N, n_in), b (S, N) with shared inputs (T, n_in); and per-member inputs (S, T, n_in)
    with shared U, b and per-member a0 (S, N): each member as its single call."""
    n, n_in, T, S = 12, 2, 300, 3
    rng = np.random.default_rng(0)
    W = _stack(n, (1.2, 1.8, 2.5))
    U, b = rng.standard_normal((S, n, n_in)), 0.1 * rng.standard_normal((S, n))
    x, xs, a0 = rng.standard_normal((T, n_in)), rng.standard_normal((S, T, n_in)), rng.standard_normal((S, n))
    kw = dict(alpha=0.2, n_exponents=3, steps=200, transient=50, ons_transient=20, seed=1)
    shared = spectrum(W, inputs=x, U=U, b=b, backend=backend, **kw)
    own = spectrum(W, inputs=xs, U=U[0], b=b[0], a0=a0, backend=backend, **kw)
    assert shared.attrs["driven"] == 1
    for s in range(S):
        _assert_member_equals(shared, s, spectrum(W[s], inputs=x, U=U[s], b=b[s], **kw), atol=1e-10)
        _assert_member_equals(own, s, spectrum(W[s], inputs=xs[s], U=U[0], b=b[0], a0=a0[s], **kw), atol=1e-10)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_stack_zero_fixed_point_equals_eigenvalues(backend):
    """Orthogonal members W_s = g_s Q_s, g_s < 1: member s gives the sorted ln|1 − α + α μ_i(W_s)|."""
    alpha = 0.3
    W = _stack(20, (0.5, 0.7, 0.9), init="orthogonal")
    lam = spectrum(W, alpha=alpha, steps=2000, ons_transient=500, transient=200, backend=backend)
    for s in range(len(W)):
        expected = np.sort(np.log(np.abs(1 - alpha + alpha * np.linalg.eigvals(W[s]))))[::-1]
        np.testing.assert_allclose(lam.values[s], expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_stack_sum_rule_equals_mean_log_det(backend):
    """k = N: Σ_i λ_i of member s = mean ln|det D_t| along its own chaotic trajectory, to 1e-10."""
    n, alpha, n_ons, n_acc = 30, 0.2, 10, 150
    W = _stack(n, (2.5, 3.0))
    a0 = np.random.default_rng(1).standard_normal((2, n))
    lam = spectrum(W, alpha=alpha, steps=n_acc, transient=0, ons_transient=n_ons, a0=a0, qr_interval=3,
                   backend=backend)
    for s in range(2):
        a, logdets = a0[s].copy(), []
        for t in range(n_ons + n_acc):
            D = (1 - alpha) * np.eye(n) + alpha * W[s] * (1 - np.tanh(a) ** 2)[None, :]
            if t >= n_ons:
                logdets.append(np.linalg.slogdet(D)[1])
            a = (1 - alpha) * a + alpha * (W[s] @ np.tanh(a))
        assert abs(lam.values[s].sum() - np.mean(logdets)) < 1e-10


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_stack_lambda_max_matches_two_trajectories(backend):
    """k = 1 through the stacked path: each member's λ_max = Benettin's pair along q_0, to 1e-6."""
    n, alpha, steps = 80, 0.2, 600
    W = _stack(n, (2.0, 2.5))
    a0 = np.random.default_rng(3).standard_normal((2, n))
    lam = spectrum(W, alpha=alpha, n_exponents=1, steps=steps, transient=0, ons_transient=0, a0=a0, seed=5,
                   backend=backend)
    q0 = initial_basis(n, 1, seed=5)[:, 0]
    for s in range(2):
        ref = two_trajectory_lambda_max(W[s], alpha, a0[s], q0, steps)
        assert lam.values[s, 0] > 0 and abs(lam.values[s, 0] - ref) < 1e-6


@pytest.mark.parametrize("backend", STACK_BACKENDS)
def test_one_diverged_member_is_nan_the_others_unchanged(backend):
    """Member 1 runs away (relu, W = 50 I, b = 1), member 2 has a NaN weight: both NaN and
    ``diverged``; members 0 and 3 equal their single calls."""
    n = 10
    W = _stack(n, (1.5, 1.0, 2.0, 2.5))
    W[1] = 50.0 * np.eye(n)
    W[2, 3, 4] = np.nan
    b = np.zeros((4, n))
    b[1] = 1.0
    kw = dict(alpha=1.0, nonlinearity="relu", n_exponents=2, steps=100, transient=50, n_init=2)
    lam = spectrum(W, b=b, backend=backend, **kw)
    assert list(lam["status"].values) == ["ok", "diverged", "diverged", "ok"]
    assert np.isnan(lam.values[1:3]).all() and np.isnan(lam["kaplan_yorke_dimension"].values[1:3]).all()
    for s in (0, 3):
        _assert_member_equals(lam, s, spectrum(W[s], b=b[s], **kw), atol=1e-10)


def test_stack_of_one_and_units():
    """S = 1 keeps the member dim; unit="tau" divides by α as for one network."""
    W = _W(20, 1.8)
    kw = dict(alpha=0.2, n_exponents=3, steps=200, transient=50, ons_transient=20)
    one = spectrum(W[None], unit="tau", **kw)
    assert one.dims == ("member", "exponent") and one.attrs["units"] == "1/tau"
    np.testing.assert_array_equal(one.values[0], spectrum(W, unit="tau", **kw).values)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(b=np.zeros((2, 10))), "b must have shape"),
        (dict(a0=np.zeros((4, 10))), "a0 must have shape"),
        (dict(inputs=np.zeros((2, 20, 1)), U=np.zeros((10, 1))), "inputs must be"),
        (dict(inputs=np.zeros((20, 1)), U=np.zeros((2, 10, 1))), "U .* must have shape"),
        (dict(backend="jax"), "backend"),
        (dict(device="cuda"), "device"),
    ],
)
def test_bad_stack_arguments_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        spectrum(np.stack([np.eye(10)] * 3), alpha=0.2, steps=10, transient=0, ons_transient=0, **kwargs)


def test_parallel_kernel_runs_blas_single_threaded_and_quietly(capfd):
    """N = 256, k = 10 (OpenBLAS would thread W Q): with an OpenMP runtime loaded (torch), no
    "Detect OpenMP Loop" warning on stderr (~100 of them otherwise), and the BLAS thread count is
    restored afterwards."""
    import torch  # noqa: F401  (loads an OpenMP runtime, as in training code)

    from biorules.lyapunov import _numba_blas_threads

    fns = _numba_blas_threads()
    before = fns[0]() if fns else None
    W = _stack(256, (1.5, 2.0))
    lam = spectrum(W, alpha=0.2, n_exponents=10, steps=50, transient=10, ons_transient=5)
    assert np.isfinite(lam.values).all()
    assert "OpenBLAS Warning" not in capfd.readouterr().err
    if fns:
        assert fns[0]() == before


def test_torch_orthonormalisation_matches_householder_qr():
    """Householder R then Q R⁻¹ twice: ln|R_ii| and Q as LAPACK's QR, orthonormal to round-off even
    for κ(Q) = 1e7 (one pass would leave an ε κ error)."""
    import torch

    from biorules.lyapunov import _orthonormalise_torch

    A = np.random.default_rng(0).standard_normal((3, 30, 6)) @ np.diag([1, 1e-2, 1e-4, 1e-6, 1, 1e-7])
    Q, logs = (x.numpy() for x in _orthonormalise_torch(torch.tensor(A)))
    for i in range(3):
        q, r = np.linalg.qr(A[i])
        np.testing.assert_allclose(logs[i], np.log(np.abs(np.diag(r))), atol=1e-9, rtol=0)
        np.testing.assert_allclose(Q[i], q, atol=1e-12, rtol=0)
        np.testing.assert_allclose(Q[i].T @ Q[i], np.eye(6), atol=1e-14, rtol=0)


@pytest.mark.gpu
def test_torch_stack_on_cuda_equals_numba():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    W = _stack(32, (0.8, 1.5, 2.0, 3.0))
    kw = dict(alpha=0.3, n_exponents=5, steps=200, transient=50, ons_transient=20, qr_interval=2, n_init=2)
    gpu = spectrum(W, backend="torch", device="cuda", **kw)
    for s in range(len(W)):
        _assert_member_equals(gpu, s, spectrum(W[s], **kw), atol=1e-10)
