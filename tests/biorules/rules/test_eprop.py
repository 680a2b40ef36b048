"""e-prop (docs/rules.md, properties 2, 3 and 6), float64."""

from __future__ import annotations

import pytest
import torch
from rules_helpers import detached_autograd, model64, rel_err, task_and_batch

from biorules.rules import get_rule


@pytest.mark.parametrize("nonlinearity", ["tanh", "retanh", "relu"])
@pytest.mark.parametrize("alpha", [0.2, 0.7, 1.0])
def test_equals_autograd_with_detached_presynaptic_activity(nonlinearity, alpha):
    """Property 2: e-prop (B = Vᵀ) = autograd with W sg(h_{t−1}), for W, U, b (and V, c), any W."""
    model = model64(alpha=alpha, nonlinearity=nonlinearity)
    task, batch = task_and_batch()
    res = get_rule("eprop").gradients(model, batch, task)
    ref = detached_autograd(model, batch, task)
    for name in ("W", "U", "b", "V", "c"):
        assert rel_err(res.grads[name], ref[name]) < 1e-9, name


def test_equals_autograd_on_mse_task():
    model = model64(n_in=1, n_out=1)
    task, batch = task_and_batch("sine")
    res = get_rule("eprop").gradients(model, batch, task)
    ref = detached_autograd(model, batch, task)
    for name in ("W", "U", "b"):
        assert rel_err(res.grads[name], ref[name]) < 1e-9, name


@pytest.mark.parametrize("nonlinearity", ["tanh", "retanh"])
@pytest.mark.parametrize("alpha", [0.2, 0.6])
def test_equals_bptt_at_zero_w(nonlinearity, alpha):
    """Property 3: at W = 0, e-prop = BPTT for ∇W, ∇U, ∇b on the a-form, any α and φ."""
    model = model64(alpha=alpha, nonlinearity=nonlinearity, zero_w=True)
    task, batch = task_and_batch()
    res = get_rule("eprop").gradients(model, batch, task)
    ref = get_rule("bptt").gradients(model, batch, task)
    for name in ("W", "U", "b", "V", "c"):
        assert rel_err(res.grads[name], ref.grads[name]) < 1e-9, name


def test_differs_from_bptt_at_nonzero_w():
    model = model64(gain=1.5)
    task, batch = task_and_batch()
    res = get_rule("eprop").gradients(model, batch, task).grads["W"]
    ref = get_rule("bptt").gradients(model, batch, task).grads["W"]
    assert rel_err(res, ref) > 1e-3


def test_random_feedback_is_fixed_and_seeded():
    model = model64()
    task, batch = task_and_batch()
    sym = get_rule("eprop").gradients(model, batch, task).grads
    r0 = get_rule("eprop-random", feedback_seed=0).gradients(model, batch, task).grads
    r0b = get_rule("eprop-random", feedback_seed=0).gradients(model, batch, task).grads
    r1 = get_rule("eprop-random", feedback_seed=1).gradients(model, batch, task).grads
    torch.testing.assert_close(r0["W"], r0b["W"], rtol=0, atol=0)
    assert rel_err(r0["W"], sym["W"]) > 0.1 and rel_err(r0["W"], r1["W"]) > 0.1
    torch.testing.assert_close(r0["V"], sym["V"], rtol=1e-12, atol=1e-14)  # readout is exact under every rule


def test_trace_memory_independent_of_trial_length():
    """Property 6: the eligibility vectors are O(N + n_in) whatever T."""
    model = model64(n_in=1, n_out=1)
    rule = get_rule("eprop")
    sizes = []
    for duration in (400.0, 4000.0):
        task, batch = task_and_batch("sine", duration=duration)
        _, trace = rule.run(model, batch, task)
        sizes.append((tuple(trace.h.shape), tuple(trace.x.shape)))
    assert sizes[0] == sizes[1] == ((4, 12), (4, 1))
