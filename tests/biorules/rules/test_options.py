"""The rate network's options under every rule: activity noise, a learned a_0, online updates
(docs/model.md, docs/rules.md), float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rules_helpers import detached_autograd, rel_err, task_and_batch

from biorules.network import NetworkParams, RateRNN, RateState, rate_step, rate_step_r
from biorules.rules import get_rule
from biorules.rules.bptt import manual_gradients

NAMES = ("W", "U", "b", "V", "c", "a0")


def options_model(n: int = 10, alpha: float = 0.2, gain: float = 1.5, zero_w: bool = False, seed: int = 0,
                  noise: float = 0.0) -> torch.nn.Module:
    """A float64 network with a learned a_0 set away from 0 (so φ'(a_0) ≠ 1 matters), b and c ≠ 0."""
    m = RateRNN(NetworkParams(n=n, alpha=alpha, gain=gain, n_in=3, n_out=3, seed=seed, learn_a0=True, noise=noise),
                dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        m.b.copy_(0.3 * torch.randn(n, generator=g, dtype=torch.float64))
        m.c.copy_(0.1 * torch.randn(3, generator=g, dtype=torch.float64))
        m.a0.copy_(0.8 * torch.randn(n, generator=g, dtype=torch.float64))
        if zero_w:
            m.W.zero_()
    return m


def noisy(batch, n: int, sigma: float = 0.3, alpha: float = 0.2, seed: int = 3):
    """The batch with activity noise η = σ √(2/α) ξ, ξ ~ N(0, I), (T, B, N)."""
    xi = np.random.default_rng(seed).standard_normal((batch.x.shape[0], batch.x.shape[1], n))
    return batch._replace(noise=sigma * math.sqrt(2.0 / alpha) * xi)


@pytest.mark.parametrize("step", [rate_step, rate_step_r])
def test_noise_adds_sigma_sqrt_2alpha_xi_to_a(step):
    """η_t = σ√(2/α)ξ_t in the drive: the a-form's a_t gains exactly σ√(2α)ξ_t; the r-form's u_t gains η_t."""
    rng = np.random.default_rng(0)
    n, alpha, sigma = 6, 0.2, 0.5
    W, U, b = rng.standard_normal((n, n)), rng.standard_normal((n, 2)), rng.standard_normal(n)
    a = rng.standard_normal((4, n))
    state, x, xi = RateState(a, np.tanh(a)), rng.standard_normal((4, 2)), rng.standard_normal((4, n))
    quiet = step(state, x, W, U, b, alpha, np.tanh)
    loud = step(state, x, W, U, b, alpha, np.tanh, sigma * math.sqrt(2 / alpha) * xi)
    gained = sigma * math.sqrt(2 * alpha) * xi if step is rate_step else sigma * math.sqrt(2 / alpha) * xi
    np.testing.assert_allclose(loud.a - quiet.a, gained, rtol=0, atol=1e-14)


def test_bptt_autograd_equals_the_delta_recursion_with_noise_and_a0():
    """∇a_0 = D_0ᵀδ_1 of the explicit recursion equals autograd, with noise in every step."""
    model = options_model()
    task, batch = task_and_batch()
    batch = noisy(batch, model.n)
    auto = get_rule("bptt").gradients(model, batch, task).grads
    manual = manual_gradients(model, batch, task).grads
    for name in NAMES:
        assert rel_err(manual[name], auto[name]) < 1e-10, name
    assert float(auto["a0"].norm()) > 1e-3
    T = batch.x.shape[0]
    assert rel_err(get_rule("tbptt", window=T, mode="sliding").gradients(model, batch, task).grads["a0"], auto["a0"]) < 1e-10


def test_noise_changes_the_gradient():
    model = options_model()
    task, batch = task_and_batch()
    quiet = get_rule("bptt").gradients(model, batch, task).grads["W"]
    loud = get_rule("bptt").gradients(model, noisy(batch, model.n), task).grads["W"]
    assert rel_err(loud, quiet) > 1e-2


def test_eprop_equals_detached_autograd_with_noise_and_a0():
    """e-prop's ∇a_0 = Σ_t (1−α)^t ψ_t ⊙ L_t is autograd with W sg(h_{t−1}), the leak kept."""
    model = options_model()
    task, batch = task_and_batch()
    batch = noisy(batch, model.n)
    res = get_rule("eprop").gradients(model, batch, task).grads
    ref = detached_autograd(model, batch, task)
    for name in NAMES:
        assert rel_err(res[name], ref[name]) < 1e-9, name


def test_eprop_a0_equals_bptt_at_zero_w():
    model = options_model(zero_w=True)
    task, batch = task_and_batch()
    res = get_rule("eprop").gradients(model, batch, task).grads["a0"]
    assert rel_err(res, get_rule("bptt").gradients(model, batch, task).grads["a0"]) < 1e-10


def test_rflo_r_form_equals_detached_r_form_autograd_with_noise_and_a0():
    """r-form RFLO, B = Vᵀ: ∇a_0 = φ'(a_0) ⊙ Σ_t (1−α)^t L_t is r-form autograd with W sg(h_{t−1})."""
    model = options_model()
    task, batch = task_and_batch()
    batch = noisy(batch, model.n)
    res = get_rule("rflo", form="r", feedback="symmetric").gradients(model, batch, task).grads
    ref = detached_autograd(model, batch, task, form="r")
    for name in NAMES:
        assert rel_err(res[name], ref[name]) < 1e-9, name


def eprop_online_numpy(model, batch, task, lr: float) -> dict[str, np.ndarray]:
    """Online e-prop (B = the current Vᵀ) with plain SGD, written out in numpy: every loss step
    updates W, U, b, V, c and a_0 before the next step runs."""
    p = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    alpha = model.alpha
    x = batch.x
    a = np.broadcast_to(p["a0"], (x.shape[1], model.n)).copy()
    h = np.tanh(a)
    eh, ex, e1 = np.zeros_like(h), np.zeros_like(x[0]), 0.0
    for t in range(x.shape[0]):
        h_prev = h
        a = (1 - alpha) * a + alpha * (h_prev @ p["W"].T + x[t] @ p["U"].T + p["b"] + batch.noise[t])
        h = np.tanh(a)
        eh, ex, e1 = (1 - alpha) * eh + alpha * h_prev, (1 - alpha) * ex + alpha * x[t], (1 - alpha) * e1 + alpha
        y = h @ p["V"].T + p["c"]
        if not batch.mask[t].any():
            continue
        _, e = task.output_error(torch.as_tensor(y)[None], batch, slice(t, t + 1))
        e = e[0].numpy()
        g = (1 - h**2) * (e @ p["V"])
        step = {"W": g.T @ eh, "U": g.T @ ex, "b": g.sum(0) * e1, "V": e.T @ h, "c": e.sum(0),
                "a0": (1 - alpha) ** (t + 1) * g.sum(0)}
        for k, v in step.items():
            p[k] = p[k] - lr * v
    return p


def test_online_eprop_equals_numpy_sgd_reference():
    """``apply`` takes one SGD step per loss step; the weights then drive the rest of the trial."""
    model = options_model(noise=0.3)
    task, batch = task_and_batch()
    batch = noisy(batch, model.n)
    lr = 0.05
    ref = eprop_online_numpy(model, batch, task, lr)
    calls = []

    def sgd(grads):
        calls.append(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p -= lr * grads[name]

    get_rule("eprop").gradients(model, batch, task, apply=sgd)
    assert len(calls) == int(batch.mask.any(axis=1).sum()) > 1
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), ref[name], rtol=1e-10, atol=1e-12, err_msg=name)
    offline = options_model(noise=0.3)
    before = offline.W.detach().clone()
    with torch.no_grad():
        offline.W -= lr * get_rule("eprop").gradients(offline, batch, task).grads["W"]
    assert rel_err(model.W.detach() - before, offline.W.detach() - before) > 1e-3  # online is not offline


def test_online_gradient_sum_equals_offline_without_a_step():
    """With an ``apply`` that changes nothing, the online pass returns the offline gradients."""
    for rule in ("eprop", "rflo"):
        model = options_model()
        task, batch = task_and_batch()
        offline = get_rule(rule).gradients(model, batch, task).grads
        online = get_rule(rule).gradients(model, batch, task, apply=lambda g: None).grads
        for name in NAMES:
            assert rel_err(online[name], offline[name]) < 1e-12, (rule, name)
