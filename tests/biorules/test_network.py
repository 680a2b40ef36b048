"""Rate network (docs/model.md): initial connectivity statistics, seeds, the pure step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biorules.errors import InputError
from biorules.network import (
    INITS,
    NetworkParams,
    RateRNN,
    RateState,
    build_weights,
    rate_step,
    recurrent_weights,
    trajectory,
)


@pytest.mark.parametrize("init", INITS)
def test_bulk_spectral_radius_is_gain(init):
    g, n = 1.5, 400
    W, _ = recurrent_weights(NetworkParams(n=n, gain=g, init=init))
    rho = np.abs(np.linalg.eigvals(W)).max()
    assert abs(rho - g) < (1e-10 if init == "orthogonal" else 0.12)


def test_gaussian_entry_variance_and_gain_scaling_share_z():
    W1, _ = recurrent_weights(NetworkParams(n=300, gain=1.0, seed=4))
    W2, _ = recurrent_weights(NetworkParams(n=300, gain=2.0, seed=4))
    np.testing.assert_allclose(W2, 2.0 * W1)
    assert abs(W1.var() * 300 - 1.0) < 0.02


def test_dale_signs_and_balance():
    W, _ = recurrent_weights(NetworkParams(n=100, gain=1.0, init="dale"))
    n_e = 80
    assert (W[:, :n_e] >= 0).all() and (W[:, n_e:] <= 0).all()
    np.testing.assert_allclose(W.sum(axis=1), 0.0, atol=1e-12)


def test_sparse_mask_density_and_zeros():
    W, mask = recurrent_weights(NetworkParams(n=400, gain=1.0, init="sparse", sparsity=0.1))
    assert abs(mask.mean() - 0.1) < 0.01
    assert (W[mask == 0] == 0).all()


def test_seeds_reproduce_and_differ():
    a, b = build_weights(NetworkParams(seed=3)), build_weights(NetworkParams(seed=3))
    c = build_weights(NetworkParams(seed=4))
    for x, y in zip(a[:5], b[:5], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a.W, c.W)


def test_step_matches_equation_and_torch_module():
    p = NetworkParams(n=6, n_in=2, n_out=1, gain=1.2, alpha=0.3)
    w = build_weights(p)
    rng = np.random.default_rng(0)
    a, x = rng.standard_normal(6), rng.standard_normal(2)
    s = rate_step(RateState(a, np.tanh(a)), x, w.W, w.U, w.b, p.alpha, np.tanh)
    np.testing.assert_allclose(s.a, 0.7 * a + 0.3 * (w.W @ np.tanh(a) + w.U @ x))
    xs = rng.standard_normal((5, 1, 2))
    a_np = trajectory(w, p, inputs=xs)
    model = RateRNN(p, dtype=torch.float64)
    y, final, a_t = model(torch.as_tensor(xs), record_states=True)
    np.testing.assert_allclose(a_t.detach().numpy(), a_np, atol=1e-12)
    np.testing.assert_allclose(y.detach().numpy(), np.tanh(a_np) @ w.V.T, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs", [dict(n=0), dict(alpha=0.0), dict(alpha=1.5), dict(init="nope"), dict(nonlinearity="sigmoid")]
)
def test_bad_parameters(kwargs):
    with pytest.raises(InputError):
        NetworkParams(**kwargs)


def test_simulate_records_what_the_caller_reads_and_scalar_rounds_as_the_number():
    """``record`` keeps f(state) of every step (the same values as mapping f over the states);
    a cached 0-dim constant multiplies to the bit like the Python number, in both dtypes."""
    from biorules.network import scalar, simulate

    net = RateRNN(NetworkParams(n=12, n_in=2, n_out=3, gain=1.5, seed=1), dtype=torch.float64)
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((30, 5, 2)))
    with torch.no_grad():
        final, states = simulate(net.step, net.initial_state(5), x)
        final_r, ys = simulate(net.step, net.initial_state(5), x, record=lambda s: net.readout(s.h))
    assert len(ys) == 30 and ys[0].shape == (5, 3)
    assert torch.equal(torch.stack(ys), torch.stack([net.readout(s.h) for s in states]))
    assert torch.equal(final_r.a, final.a)
    for dtype in (torch.float32, torch.float64):
        v = torch.as_tensor(np.random.default_rng(1).standard_normal(1000), dtype=dtype)
        c = scalar(0.1234567, v)
        assert c.dtype == dtype and c.ndim == 0 and scalar(0.1234567, v) is c
        assert torch.equal(c * v, 0.1234567 * v)
