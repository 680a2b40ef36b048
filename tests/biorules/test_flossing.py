"""Gradient flossing (docs/flossing.md): each mode's gradient against its autograd definition, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biorules.errors import InputError
from biorules.flossing import FlossConfig, Flosser, _window_start, floss_gradients
from biorules.lyapunov import lyapunov_window
from biorules.network import NetworkParams, RateRNN


def _model(n=8, g=1.5, alpha=0.3, n_in=2, seed=0, nonlinearity="tanh"):
    torch.manual_seed(seed)
    m = RateRNN(NetworkParams(n=n, gain=g, alpha=alpha, n_in=n_in, seed=seed, nonlinearity=nonlinearity),
                dtype=torch.float64)
    with torch.no_grad():
        m.b.copy_(0.1 * torch.randn(n, dtype=torch.float64))
    return m


def _frozen(model, cfg, a0, q0, inputs):
    """The undifferentiated trajectory: h_t and Q_t of the current weights, to be held constant."""
    alpha, nl = model.alpha, model.nl
    with torch.no_grad():
        a, Q = a0.clone(), q0.expand(a0.shape[0], *q0.shape).clone()
        hs, Qs, As = [], [], []
        for t in range(cfg.transient + cfg.window):
            As.append(a)
            Qs.append(Q)
            hs.append(nl.phi(a))
            psi = nl.dphi(a)
            Q = torch.linalg.qr((1 - alpha) * Q + alpha * (model.W @ (psi.unsqueeze(-1) * Q)))[0]
            x = 0.0 if inputs is None else inputs[t] @ model.U.T
            a = (1 - alpha) * a + alpha * (nl.phi(a) @ model.W.T + model.b + x)
    return hs, Qs, As


def _truncated_lambda(model, cfg, a0, q0, inputs, *, eprop, frozen=None):
    """λ̂ with a_t and Q_t detached (local) or with W sg(h_{t−1}) and sg(Q_t) (eprop), by autograd.

    ``frozen`` (from :func:`_frozen`) fixes the detached quantities, e.g. at unperturbed weights.
    """
    alpha, nl, W = model.alpha, model.nl, model.W
    hs, Qs, As = frozen if frozen is not None else _frozen(model, cfg, a0, q0, inputs)
    a_el = a0.clone()  # e-prop's a_t: leak kept, recurrent input through sg(h_{t−1})
    total = 0.0
    for t in range(cfg.transient + cfg.window):
        psi = nl.dphi(a_el if eprop else As[t])
        M = (1 - alpha) * Qs[t] + alpha * (W @ (psi.unsqueeze(-1) * Qs[t]))
        R = torch.linalg.qr(M)[1]
        if t >= cfg.transient:
            total = total + torch.log(torch.abs(torch.diagonal(R, dim1=-2, dim2=-1))).sum(0)
        x = 0.0 if inputs is None else inputs[t] @ model.U.T
        a_el = (1 - alpha) * a_el + alpha * (hs[t] @ W.T + model.b + x)
    return total / (cfg.window * a0.shape[0])


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("mode", ["local", "eprop"])
@pytest.mark.parametrize("driven", [False, True])
def test_forward_modes_equal_truncated_autograd(k, mode, driven):
    model = _model(n=7, alpha=0.3)
    cfg = FlossConfig(mode=mode, n_exponents=k, transient=5, window=40, batch=2, target=0.01, relax=10,
                      seed=3).resolved(7)
    inputs = torch.randn(45, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) if driven else None
    res = floss_gradients(model, cfg, step=2, inputs=inputs)
    a0, q0 = _window_start(model, cfg, 2)
    lam = _truncated_lambda(model, cfg, a0, q0, inputs, eprop=(mode == "eprop"))
    loss = ((lam - cfg.target) ** 2).mean()
    gW, gU, gb = torch.autograd.grad(loss, [model.W, model.U, model.b], allow_unused=True)
    torch.testing.assert_close(res.lam, lam.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.grads["W"], gW, rtol=1e-9, atol=1e-13)
    if mode == "local":
        assert gU is None and gb is None  # U and b reach D_t only through a_t, held constant
        assert torch.count_nonzero(res.grads["U"]) == 0 and torch.count_nonzero(res.grads["b"]) == 0
    else:
        torch.testing.assert_close(res.grads["b"], gb, rtol=1e-9, atol=1e-13)
        if driven:
            torch.testing.assert_close(res.grads["U"], gU, rtol=1e-9, atol=1e-13)


def test_eprop_matches_finite_differences_n7():
    """docs/flossing.md test 2: N = 7, α = 0.3, T = 40, e-prop flossing gradient vs central differences."""
    model = _model(n=7, alpha=0.3, g=1.2)
    cfg = FlossConfig(mode="eprop", n_exponents=1, transient=0, window=40, batch=1, relax=5).resolved(7)
    res = floss_gradients(model, cfg)
    a0, q0 = _window_start(model, cfg, 0)
    frozen = _frozen(model, cfg, a0, q0, None)
    eps, (i, j) = 1e-6, (2, 5)
    vals = []
    for s in (+1, -1):
        with torch.no_grad():
            model.W[i, j] += s * eps
            lam = _truncated_lambda(model, cfg, a0, q0, None, eprop=True, frozen=frozen)
            vals.append(float((lam**2).mean()))
            model.W[i, j] -= s * eps
    fd = (vals[0] - vals[1]) / (2 * eps)
    assert abs(float(res.grads["W"][i, j]) - fd) < 1e-9


def test_exact_matches_central_differences_n8():
    """docs/flossing.md test 3: the exact gradient of λ̂ equals central differences at N = 8, T = 30."""
    model = _model(n=8, alpha=0.3, g=1.5)
    cfg = FlossConfig(mode="exact", n_exponents=2, transient=4, window=30, batch=1, relax=5).resolved(8)
    res = floss_gradients(model, cfg)
    a0, q0 = _window_start(model, cfg, 0)
    eps = 1e-6
    for name, idx in (("W", (1, 6)), ("b", (3,))):
        p = getattr(model, name)
        vals = []
        for s in (+1, -1):
            with torch.no_grad():
                p[idx] += s * eps
                lam = lyapunov_window(model, a0, q0, cfg.transient, cfg.window)
                vals.append(float(((lam - cfg.target) ** 2).mean()))
                p[idx] -= s * eps
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert abs(float(res.grads[name][idx]) - fd) < 1e-7 * max(1.0, abs(fd))


def test_flossing_leaves_readout_unchanged():
    model = _model(n=10)
    V0, c0, W0 = model.V.detach().clone(), model.c.detach().clone(), model.W.detach().clone()
    for mode in ("exact", "local", "eprop"):
        Flosser(model, FlossConfig(mode=mode, n_exponents=2, transient=2, window=10, batch=1, relax=2)).run(3)
    torch.testing.assert_close(model.V, V0, rtol=0, atol=0)
    torch.testing.assert_close(model.c, c0, rtol=0, atol=0)
    assert not torch.equal(model.W, W0)


def test_same_seed_same_gradients():
    model = _model(n=9)
    cfg = FlossConfig(mode="local", n_exponents=2, window=20, transient=3, relax=3)
    a, b = floss_gradients(model, cfg, step=4), floss_gradients(model, cfg, step=4)
    torch.testing.assert_close(a.grads["W"], b.grads["W"], rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(mode="bogus"), "mode"), (dict(window=0), "window"), (dict(batch=-1), "batch"),
     (dict(transient=-2), "transient"), (dict(lr=0.0), "lr")],
)
def test_bad_config(kwargs, match):
    with pytest.raises(InputError, match=match):
        FlossConfig(**kwargs)


def test_more_exponents_than_neurons():
    with pytest.raises(InputError, match="exponents"):
        FlossConfig(n_exponents=11).resolved(10)


def test_exact_window_matches_numba_estimator_for_long_windows():
    """The differentiable λ̂ and the numba QR estimator measure the same quantity."""
    from biorules.lyapunov import spectrum

    model = _model(n=30, g=0.6, alpha=0.2)
    with torch.no_grad():
        model.b.zero_()
    a0 = torch.zeros(1, 30, dtype=torch.float64)
    q0 = torch.as_tensor(np.linalg.qr(np.random.default_rng(0).standard_normal((30, 2)))[0])
    with torch.no_grad():
        lam = lyapunov_window(model, a0, q0, transient=300, window=2000)
    ref = spectrum(model.W.detach().numpy(), alpha=0.2, n_exponents=2, steps=2000, transient=0,
                   ons_transient=300, a0=np.zeros(30))
    np.testing.assert_allclose(lam.detach().numpy(), ref.values, atol=2e-3)


def test_local_and_eprop_align_with_exact_at_g05_driven():
    """docs/flossing.md test 5: mean cosine with the exact gradient > 0.2 over 3 seeds at g = 0.5 (driven)."""
    from biorules.experiments.floss_study import gradient_alignment

    cos = gradient_alignment(0.5, seeds=(0, 1, 2))
    assert np.mean(cos["local"]) > 0.2 and np.mean(cos["eprop"]) > 0.2, cos


def test_schedule_matches_engelkens_short_example():
    from biorules.flossing import FlossSchedule

    s = FlossSchedule(pre=50, every=10, steps=50, times=2)
    runs = {u: s.steps_before(u) for u in range(40) if s.steps_before(u)}
    assert runs == {0: 50, 10: 50, 20: 50}
    with pytest.raises(InputError):
        FlossSchedule(pre=-1)


def test_hook_floses_around_training_and_spares_the_readout():
    from biorules.flossing import FlossHook, FlossSchedule
    from biorules.tasks import make_task

    task = make_task("2af")
    model = RateRNN(NetworkParams(n=12, n_in=task.n_in, n_out=task.n_out, gain=0.5), dtype=torch.float64)
    V0 = model.V.detach().clone()
    hook = FlossHook(FlossConfig(mode="local", window=10, transient=2, batch=2, relax=2),
                     FlossSchedule(pre=3, every=2, steps=1, times=2), task)
    for u in range(8):
        hook(u, model)
    assert [r[0] for r in hook.records] == [0, 0, 0, 2, 4]
    ds = hook.to_dataset(alpha=0.2)
    assert ds.sizes["floss_step"] == 5 and ds.attrs["floss_driven"] == 1
    torch.testing.assert_close(model.V, V0, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["exact", "local", "eprop"])
def test_one_sided_flossing_moves_only_exponents_on_its_side(mode):
    """side="below" weights ℒ_f's terms by 1[λ̂_i < λ*]: a target under every λ̂ gives zero loss and
    gradient, a target above every λ̂ gives exactly the two-sided numbers ("above" mirrors it)."""
    model = RateRNN(NetworkParams(n=10, gain=0.8, seed=3), dtype=torch.float64)
    base = dict(mode=mode, n_exponents=2, window=12, transient=4, batch=2, relax=3)
    both = floss_gradients(model, FlossConfig(**base, target=0.5))  # every λ̂ < 0.5
    below = floss_gradients(model, FlossConfig(**base, target=0.5, side="below"))
    above = floss_gradients(model, FlossConfig(**base, target=0.5, side="above"))
    assert (both.lam < 0.5).all()
    for p in ("W", "U", "b"):
        torch.testing.assert_close(below.grads[p], both.grads[p], rtol=0, atol=0)
        assert float(above.grads[p].abs().max()) == 0.0
    assert float(below.loss) == float(both.loss) > 0 and float(above.loss) == 0.0
    low = floss_gradients(model, FlossConfig(**base, target=-5.0, side="below"))  # every λ̂ > −5
    assert float(low.loss) == 0.0 and all(float(g.abs().max()) == 0.0 for g in low.grads.values())


def test_unknown_side_is_refused():
    with pytest.raises(InputError, match="side"):
        FlossConfig(side="sideways")
