"""LIF network (docs/model.md, spiking variant) and its rules (docs/rules.md, spiking e-prop), float64.

Hand-computed traces use binary-exact numbers and are compared at 1e-15 absolute; gradient
identities are compared at 1e-9 relative (docs/rules.md, "Exactness properties").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biorules.errors import InputError
from biorules.network import _drive, simulate
from biorules.rules import KIND_RULES, get_rule
from biorules.rules.base import GradResult
from biorules.rules.common import feedback_matrix
from biorules.spiking import (
    LIFNetwork,
    LIFParams,
    build_lif_weights,
    initial_state,
    lif_step,
    pseudo_derivative,
    spike,
)
from biorules.tasks import make_task

LIF_RULES = KIND_RULES["lif"]


def LIFEprop(**options):
    return get_rule("eprop", kind="lif", **options)


def LIFBPTT():
    return get_rule("bptt", kind="lif")


def LIFEpropRandom(**options):
    return get_rule("eprop-random", kind="lif", **options)

RTOL = 1e-9
PARAM_NAMES = ("W", "U", "b", "V", "c")


def _t(a) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64)


def _run(params: LIFParams, W, U, b, x) -> list:
    state = initial_state((x.shape[1],), params, like=_t(0.0))
    _, states = simulate(lambda s, xt: lif_step(s, xt, _t(W), _t(U), _t(b), params), state, _t(x))
    return states


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_lif_step_box_matches_hand_trace():
    # α_m = 0.5, κ = 0.5, v_th = 1; neuron 1 receives neuron 0's spikes with weight 1.
    p = LIFParams(n=2, n_in=1, n_out=1, dt=1.0, tau_mem=2.0, tau_out=2.0)
    states = _run(p, W=[[0.0, 0.0], [1.0, 0.0]], U=[[2.0], [1.0]], b=[0.0, 0.0], x=np.ones((4, 1, 1)))
    v_pre = [[1.0, 0.5], [1.5, 0.75], [1.25, 1.375], [1.125, 1.1875]]
    z = [[0, 0], [1, 0], [1, 1], [1, 1]]
    v = [[1.0, 0.5], [0.5, 0.75], [0.25, 0.375], [0.125, 0.1875]]
    r = [[0.0, 0.0], [0.5, 0.0], [0.75, 0.5], [0.875, 0.75]]
    for name, want in (("v_pre", v_pre), ("z", z), ("v", v), ("r", r)):
        got = torch.stack([getattr(s, name)[0] for s in states])
        torch.testing.assert_close(got, _t(want), rtol=0, atol=1e-15, msg=name)
    assert all(s.i is None for s in states)


def test_lif_step_current_matches_hand_trace():
    # α_m = α_s = 0.5: the membrane sees the previous step's current i_{t−1} (docs/model.md).
    p = LIFParams(n=1, n_in=1, n_out=1, dt=1.0, tau_mem=2.0, tau_syn=2.0, cell="current")
    states = _run(p, W=[[0.0]], U=[[2.0]], b=[0.0], x=np.ones((4, 1, 1)))
    want = {"i": [2.0, 3.0, 3.5, 3.75], "v_pre": [0.0, 1.0, 2.0, 2.25], "z": [0, 0, 1, 1], "v": [0.0, 1.0, 1.0, 1.25]}
    for name, values in want.items():
        got = torch.stack([getattr(s, name)[0, 0] for s in states])
        torch.testing.assert_close(got, _t(values), rtol=0, atol=1e-15, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("surrogate", ["triangle", "superspike"])
def test_lif_step_is_norses_box_step_to_the_bit(dtype, surrogate):
    """The box step equals norse's li_box_feed_forward_step, threshold and reset_subtract (on sg(z))
    bit for bit, forward and backward, recorded or not (a random network near threshold)."""
    from norse.torch.functional.leaky_integrator_box import LIBoxState, li_box_feed_forward_step
    from norse.torch.functional.reset import reset_subtract
    from norse.torch.functional.threshold import threshold

    p = LIFParams(n=16, n_in=3, n_out=2, dt=2.0, tau_mem=20.0, v_th=1.3, surrogate=surrogate, seed=3)
    w = build_lif_weights(p)
    W, U, b = (torch.as_tensor(a, dtype=dtype).requires_grad_() for a in (w.W, w.U, 0.1 * np.ones(16)))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((60, 8, 3), generator=gen, dtype=dtype)

    def norse_step(s, xt):
        drive = _drive(s.z, xt, W, U, b)  # the rate step's W z + U x + b, shared by both
        v_pre, _ = li_box_feed_forward_step(drive, LIBoxState(s.v), p.norse_params(), p.dt)
        if surrogate == "triangle":
            z = threshold((v_pre - p.v_th) / p.v_th, "triangle", p.gamma)
        else:
            z = spike(v_pre, p)  # H forward, 1/(β|x| + 1)² backward (norse's drops β, module doc)
        v = reset_subtract(z.detach(), v_pre, 0.0, p.v_th)
        r = p.kappa * s.r + (1.0 - p.kappa) * z
        return type(s)(z, v, None, r, v_pre)

    for record in (False, True):
        with torch.set_grad_enabled(record):
            runs = []
            for step in (lambda s, xt: lif_step(s, xt, W, U, b, p), norse_step):
                _, states = simulate(step, initial_state((8,), p, like=W), x)
                runs.append([torch.stack([getattr(st, f) for st in states]) for f in ("z", "v", "r", "v_pre")])
        for ours, theirs in zip(*runs, strict=True):
            assert torch.equal(ours, theirs)
        assert 0.05 < float(runs[0][0].mean()) < 0.6  # spikes happen, so the reset and the filter are exercised
        if record:
            grads = [torch.autograd.grad(run[2].square().sum(), (W, U, b)) for run in runs]
            for ours, theirs in zip(*grads, strict=True):
                assert torch.equal(ours, theirs)


@pytest.mark.parametrize("surrogate", ["triangle", "superspike"])
def test_surrogate_gradient_is_the_pseudo_derivative(surrogate):
    p = LIFParams(v_th=1.5, surrogate=surrogate, gamma=0.3, beta=4.0)
    v = torch.linspace(-1.0, 4.0, 101, dtype=torch.float64, requires_grad=True)
    z = spike(v, p)
    (grad,) = torch.autograd.grad(z.sum(), v)
    torch.testing.assert_close(z, (v > 1.5).double().detach(), rtol=0, atol=0)
    x = v.detach() - 1.5
    want = 0.3 / 1.5 * torch.relu(1 - x.abs() / 1.5) if surrogate == "triangle" else 1 / (4 * x.abs() + 1) ** 2
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(pseudo_derivative(v.detach(), p), want, rtol=1e-12, atol=1e-15)


def _task_and_batch(task_name: str, n_batch: int = 5):
    if task_name == "xor":
        task = make_task("xor", n_steps=40, delay=5)
    else:
        task = make_task("2af", dt=10.0)
    return task, task.batch(n_batch, seed=11)


def _model(task, **kw) -> LIFNetwork:
    options = dict(n=16, n_in=task.n_in, n_out=task.n_out, dt=1.0, gain=1.5, seed=2) | kw
    return LIFNetwork(LIFParams(**options), dtype=torch.float64)


def _truncated_autograd(model: LIFNetwork, batch, task) -> dict[str, torch.Tensor]:
    """Autograd of ℒ with W sg(z_{t−1}), the reset detached, the same ψ, the leak kept (docs/rules.md)."""
    p = model.step_params
    x = _t(batch.x)

    def step(s, xt):
        return lif_step(s._replace(z=s.z.detach()), xt, model.W, model.U, model.b, p)

    _, states = simulate(step, model.initial_state(x.shape[1]), x)
    y = model.readout(torch.stack([s.r for s in states]))
    names, params = zip(*model.named_parameters(), strict=True)
    return dict(zip(names, torch.autograd.grad(task.loss(y, batch), params), strict=True))


@pytest.mark.parametrize("cell", ["box", "current"])
@pytest.mark.parametrize("surrogate", ["triangle", "superspike"])
@pytest.mark.parametrize("task_name", ["2af", "xor"])
def test_eprop_equals_truncated_autograd(cell, surrogate, task_name):
    task, batch = _task_and_batch(task_name)
    model = _model(task, cell=cell, surrogate=surrogate, beta=3.0)
    res = LIFEprop().gradients(model, batch, task)
    ref = _truncated_autograd(model, batch, task)
    _, _, states = model(_t(batch.x), record_states=True)
    assert 0.01 < float(states.z.detach().mean()) < 0.99, "the test network must spike, and not always"
    for name in PARAM_NAMES:
        assert ref[name].norm() > 0
        assert _rel(res.grads[name], ref[name]) <= RTOL, name


@pytest.mark.parametrize("cell", ["box", "current"])
@pytest.mark.parametrize("task_name", ["2af", "xor"])
def test_eprop_equals_bptt_at_zero_recurrent_weights(cell, task_name):
    # docs/rules.md, property 3: at W = 0 LIF e-prop equals BPTT with the reset detached, same surrogate.
    task, batch = _task_and_batch(task_name)
    model = _model(task, cell=cell, gain=0.0)
    eprop = LIFEprop().gradients(model, batch, task)
    bptt = LIFBPTT().gradients(model, batch, task)
    for name in PARAM_NAMES:
        assert _rel(eprop.grads[name], bptt.grads[name]) <= RTOL, name
    torch.testing.assert_close(eprop.loss, bptt.loss, rtol=1e-12, atol=0)


def test_eprop_differs_from_bptt_at_nonzero_recurrent_weights():
    task, batch = _task_and_batch("xor")
    model = _model(task, gain=1.5)
    eprop = LIFEprop().gradients(model, batch, task)
    bptt = LIFBPTT().gradients(model, batch, task)
    assert _rel(eprop.grads["W"], bptt.grads["W"]) > 1e-3
    torch.testing.assert_close(eprop.grads["V"], bptt.grads["V"], rtol=1e-9, atol=1e-12)


def test_random_feedback_is_seeded_and_keeps_the_exact_readout():
    task, batch = _task_and_batch("2af")
    model = _model(task)
    sym = LIFEprop().gradients(model, batch, task)
    rnd = LIFEpropRandom(feedback_seed=5).gradients(model, batch, task)
    B = LIFEpropRandom(feedback_seed=5).feedback_matrix(model)
    torch.testing.assert_close(B, _t(feedback_matrix(16, 3, 5)), rtol=0, atol=0)
    assert not torch.allclose(B, model.V.detach().T)
    assert _rel(rnd.grads["W"], sym.grads["W"]) > 1e-3
    for name in ("V", "c"):
        torch.testing.assert_close(rnd.grads[name], sym.grads[name], rtol=1e-12, atol=1e-15)
    again = LIFEpropRandom(feedback_seed=5).gradients(model, batch, task)
    torch.testing.assert_close(again.grads["W"], rnd.grads["W"], rtol=0, atol=0)


@pytest.mark.parametrize("rule", sorted(LIF_RULES))
@pytest.mark.parametrize("cell", ["box", "current"])
def test_rules_return_batch_shapes(rule, cell):
    task = make_task("2af", dt=20.0)
    batch = task.batch(7, seed=0)
    model = LIFNetwork(LIFParams(n=9, n_in=3, n_out=3, cell=cell))
    res = get_rule(rule, kind="lif").gradients(model, batch, task)
    assert isinstance(res, GradResult)
    assert res.y.shape == (task.n_steps, 7, 3) and not res.y.requires_grad
    assert res.loss.shape == () and not res.loss.requires_grad
    assert set(res.grads) == set(PARAM_NAMES)
    for name, param in model.named_parameters():
        assert res.grads[name].shape == param.shape and res.grads[name].dtype == torch.float32
        assert torch.isfinite(res.grads[name]).all()
    assert get_rule(rule, kind="lif").name == rule and "lif" in get_rule(rule, kind="lif").kinds


def test_forward_shapes_and_state_passing():
    model = LIFNetwork(LIFParams(n=6, n_in=2, n_out=4, cell="current"), dtype=torch.float64)
    x = torch.rand(10, 3, 2, dtype=torch.float64)
    y, final, states = model(x, record_states=True)
    assert y.shape == (10, 3, 4)
    for field in ("z", "v", "i", "r", "v_pre"):
        assert getattr(states, field).shape == (10, 3, 6)
        torch.testing.assert_close(getattr(final, field), getattr(states, field)[-1], rtol=0, atol=0)
    # Two halves with the state passed on give the same outputs as the whole trial.
    y1, s1 = model(x[:4])
    y2, _ = model(x[4:], state=s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=0, atol=0)


def test_weights_are_seeded_with_independent_streams_and_gain_scaling():
    p = LIFParams(n=50, n_in=3, n_out=2, gain=1.0, seed=4, dt=1.0, tau_mem=20.0, v_th=2.0)
    w1, w2 = build_lif_weights(p), build_lif_weights(p)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    other = build_lif_weights(LIFParams(n=50, n_in=3, n_out=2, seed=5))
    assert not np.allclose(w1.W, other.W)
    g2 = build_lif_weights(LIFParams(n=50, n_in=3, n_out=2, gain=2.0, seed=4, v_th=2.0))
    np.testing.assert_allclose(g2.W, 2.0 * w1.W, rtol=1e-15)
    np.testing.assert_array_equal(g2.U, w1.U)
    np.testing.assert_array_equal(g2.V, w1.V)
    # One spike moves the membrane by α_m W_ij = g v_th Z_ij/√N: its std is g v_th/√N.
    assert abs(np.std(p.alpha_m * w1.W) * np.sqrt(50) / 2.0 - 1.0) < 0.05
    assert abs(np.std(p.alpha_m * w1.U) * np.sqrt(3) / 2.0 - 1.0) < 0.3
    assert not w1.b.any() and not w1.c.any()
    torch.testing.assert_close(LIFNetwork(p, dtype=torch.float64).W, _t(w1.W), rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad", [dict(n=0), dict(surrogate="sigmoid"), dict(cell="adex"), dict(dt=0.0), dict(gain=-1.0), dict(dt=30.0)]
)
def test_bad_parameters_raise_input_error(bad):
    with pytest.raises(InputError):
        LIFParams(**bad)


def test_rules_reject_bad_options_and_models():
    with pytest.raises(InputError):
        LIFEprop(feedback="transpose")  # feedback is fixed by the rule's name
    with pytest.raises(InputError, match="not defined for model 'lif'"):
        get_rule("rflo", kind="lif")
    with pytest.raises(InputError, match="no option"):
        get_rule("bptt", kind="lif", form="r")
    task, batch = _task_and_batch("xor")
    with pytest.raises(InputError):
        LIFEprop().gradients(torch.nn.Linear(1, 1), batch, task)


def _example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "spiking_2af.py"
    spec = importlib.util.spec_from_file_location("spiking_2af", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_spiking_eprop_learns_2af():
    # ~1.5 min on one CPU thread: N = 64, dt = 2 ms (450 steps), Adam 1e-2, batch 32, 300 updates.
    torch.set_num_threads(1)
    out = _example().train("2af", "eprop", n=64, dt=2.0, lr=1e-2, updates=300, eval_every=100, seed=0, verbose=False)
    acc = out["curve"]["accuracy"]
    assert acc[0] < 0.65 and acc[-1] >= 0.7, acc


@pytest.mark.parametrize("cell", ["box", "current"])
def test_summed_batch_gradient_equals_the_forward_traces(cell):
    """gradients() swaps spiking e-prop's sums over t and s (no N × P trace per trial): the same
    numbers as the forward traces of run(), for a stack with its own feedback matrices."""
    from biorules.tasks import stack_batches

    task, _ = _task_and_batch("2af")
    members = tuple(LIFParams(n=16, n_in=task.n_in, n_out=task.n_out, dt=1.0, gain=g, seed=s, cell=cell)
                    for g, s in ((0.5, 0), (1.5, 1), (2.0, 2)))
    model = LIFNetwork(members, dtype=torch.float64)
    batch = stack_batches([task.batch(4, seed=s) for s in range(3)])
    rule = LIFEpropRandom(feedback_seed=(3, 4, 5))
    traced, summed = rule.run(model, batch, task)[0], rule.gradients(model, batch, task)
    for name in PARAM_NAMES:
        assert traced.grads[name].norm() > 0
        assert _rel(summed.grads[name], traced.grads[name]) < 1e-12, name
    torch.testing.assert_close(summed.loss, traced.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(summed.y, traced.y, rtol=1e-12, atol=0)
