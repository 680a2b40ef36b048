"""RFLO (docs/rules.md, property 4 and 6), float64."""

from __future__ import annotations

import pytest
import torch
from rules_helpers import detached_autograd, model64, rel_err, task_and_batch

from biorules.rules import get_rule


@pytest.mark.parametrize("nonlinearity", ["tanh", "retanh"])
@pytest.mark.parametrize("alpha", [0.2, 0.6])
def test_rform_equals_detached_autograd_at_any_w(nonlinearity, alpha):
    model = model64(alpha=alpha, nonlinearity=nonlinearity)
    task, batch = task_and_batch()
    res = get_rule("rflo", form="r", feedback="symmetric").gradients(model, batch, task)
    ref = detached_autograd(model, batch, task, form="r")
    for name in ("W", "U", "b", "V", "c"):
        assert rel_err(res.grads[name], ref[name]) < 1e-9, name


@pytest.mark.parametrize("alpha", [0.2, 0.6])
def test_rform_equals_rform_bptt_at_zero_w(alpha):
    model = model64(alpha=alpha, zero_w=True)
    task, batch = task_and_batch()
    res = get_rule("rflo", form="r", feedback="symmetric").gradients(model, batch, task)
    ref = get_rule("bptt", form="r").gradients(model, batch, task)
    for name in ("W", "U", "b", "V", "c"):
        assert rel_err(res.grads[name], ref.grads[name]) < 1e-9, name


def test_aform_differs_from_bptt_at_zero_w():
    """a-form, α < 1, tanh: ψ enters the trace at the wrong time, so RFLO ≠ BPTT even at W = 0."""
    model = model64(alpha=0.2, zero_w=True)
    task, batch = task_and_batch(dt=100.0, timing={"stimulus": 1000.0})  # T = 12
    assert task.n_steps == 12
    res = get_rule("rflo", feedback="symmetric").gradients(model, batch, task)
    ref = get_rule("bptt").gradients(model, batch, task)
    eprop = get_rule("eprop").gradients(model, batch, task)
    gap = rel_err(res.grads["W"], ref.grads["W"])
    assert 1e-2 < gap < 1.0, gap
    assert rel_err(res.grads["W"], eprop.grads["W"]) > 1e-2  # not aliased to e-prop
    assert rel_err(eprop.grads["W"], ref.grads["W"]) < 1e-9  # whereas e-prop is exact here


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_aform_alpha_one_equals_eprop(nonlinearity):
    model = model64(alpha=1.0, nonlinearity=nonlinearity)
    task, batch = task_and_batch()
    res = get_rule("rflo", feedback="symmetric").gradients(model, batch, task)
    ref = get_rule("eprop").gradients(model, batch, task)
    for name in ("W", "U", "b", "V", "c"):
        assert rel_err(res.grads[name], ref.grads[name]) < 1e-9, name


def test_default_random_feedback_and_outputs():
    model = model64()
    task, batch = task_and_batch()
    rflo = get_rule("rflo")
    assert (rflo.form, rflo.feedback) == ("a", "random")
    res = rflo.gradients(model, batch, task)
    sym = get_rule("rflo", feedback="symmetric").gradients(model, batch, task)
    assert rel_err(res.grads["W"], sym.grads["W"]) > 0.1
    y, _ = model(torch.as_tensor(batch.x))
    torch.testing.assert_close(res.y, y.detach(), rtol=1e-12, atol=1e-12)


def test_trace_memory_independent_of_trial_length():
    """Property 6: P, P^x, p^b are O(N² + N n_in) per trial whatever T."""
    model = model64(n_in=1, n_out=1)
    sizes = []
    for duration in (400.0, 4000.0):
        task, batch = task_and_batch("sine", duration=duration)
        _, trace = get_rule("rflo").run(model, batch, task)
        sizes.append(tuple(tuple(t.shape) for t in trace))
    assert sizes[0] == sizes[1] == ((4, 12, 12), (4, 12, 1), (4, 12))


@pytest.mark.parametrize("form", ["a", "r"])
def test_factorised_sum_equals_the_forward_traces(form):
    """gradients() swaps the sums of the trace form: the same numbers, stacked and with a learned
    a_0 and noise, to rounding."""
    import numpy as np

    from biorules.network import NetworkParams, RateRNN
    from biorules.tasks import stack_batches

    members = tuple(NetworkParams(n=9, gain=g, seed=s, n_in=3, n_out=3, learn_a0=True, noise=0.2)
                    for g, s in ((0.5, 0), (1.5, 1), (2.0, 2)))
    model = RateRNN(members, dtype=torch.float64)
    with torch.no_grad():
        model.a0.copy_(0.5 * torch.randn(model.a0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    task, _ = task_and_batch()
    batches = [task.batch(4, s) for s in range(3)]
    rng = np.random.default_rng(0)
    batch = stack_batches([b._replace(noise=rng.standard_normal((b.x.shape[0], 4, 9))) for b in batches])
    rule = get_rule("rflo", form=form, feedback_seed=(3, 4, 5))
    traced, summed = rule.run(model, batch, task)[0], rule.gradients(model, batch, task)
    for name in ("W", "U", "b", "V", "c", "a0"):
        assert rel_err(summed.grads[name], traced.grads[name]) < 1e-12, name
    torch.testing.assert_close(summed.loss, traced.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(summed.y, traced.y, rtol=1e-12, atol=1e-15)  # y ~ 1
