"""QR Lyapunov spectrum (spec §4): exact identities, mean field, kernel vs reference. float64."""

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
    W = _W(100, 0.8)
    lam = spectrum(W, alpha=alpha, steps=8000, ons_transient=500)
    expected = np.sort(np.log(np.abs(1 - alpha + alpha * np.linalg.eigvals(W))))[::-1]
    np.testing.assert_allclose(lam.values, expected, atol=1e-3, rtol=0)


def test_zero_fixed_point_orthogonal_small():
    """orthogonal W = gQ: every exponent is ln|1 − α + α g e^{iθ}| (N = 20, spec test 1)."""
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
