"""Task generators (docs/tasks.md): shapes, masks, seeds, oracles and the loss/metric definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biorules.errors import InputError
from biorules.tasks import TASKS, make_task

SHAPES = {  # name: (T, n_in, n_out) at the defaults (dt = 20 ms)
    "2af": (45, 3, 3),
    "dms": (45, 3, 3),
    "cxt": (45, 7, 3),
    "xor": (300, 1, 1),
    "sine": (100, 1, 1),
}


@pytest.mark.parametrize("name", TASKS)
def test_shapes_and_dtypes(name):
    task = make_task(name)
    T, n_in, n_out = SHAPES[name]
    assert (task.n_steps, task.n_in, task.n_out) == (T, n_in, n_out)
    assert task.dt == 20.0 and task.tau == 100.0 and task.alpha == pytest.approx(0.2)
    b = task.batch(8, seed=1)
    assert b.x.shape == (T, 8, n_in) and b.x.dtype == np.float64
    assert b.mask.shape == (T, 8) and b.decision.shape == (T, 8)
    if name in ("2af", "dms", "cxt"):
        assert b.target.shape == (T, 8) and b.target.dtype == np.int64
    else:
        assert b.target.shape == (T, 8, n_out)


@pytest.mark.parametrize("name", TASKS)
def test_seeds_reproducible(name):
    task = make_task(name)
    a, b = task.batch(16, seed=3), task.batch(16, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.target, b.target)
    np.testing.assert_array_equal(a.mask, b.mask)
    if name != "sine":  # sine is deterministic by definition
        assert not np.array_equal(a.x, task.batch(16, seed=4).x)


@pytest.mark.parametrize("name", TASKS)
def test_oracle_scores_one(name):
    task = make_task(name)
    b = task.batch(256, seed=0)
    y = task.oracle(b)
    assert task.accuracy(y, b) == 1.0
    assert task.accuracy(torch.as_tensor(y), b) == 1.0
    loss = task.loss(torch.as_tensor(y), b)
    assert loss.ndim == 0 and float(loss) < 1e-3


def test_classification_masks_labels_and_fixation():
    task = make_task("dms")
    b = task.batch(4, seed=0)
    dec = np.zeros(45, dtype=bool)
    dec[40:] = True  # decision = last 100 ms = 5 steps
    np.testing.assert_array_equal(b.decision, np.repeat(dec[:, None], 4, axis=1))
    np.testing.assert_array_equal(b.mask, b.decision.astype(float))
    np.testing.assert_array_equal(b.x[:, :, 0], (~b.decision).astype(float))  # fixation channel
    assert (b.target[~dec] == 0).all()
    np.testing.assert_array_equal(b.target[dec], np.repeat(b.trials["choice"][None], 5, axis=0))
    everything = make_task("dms", loss_periods="all").batch(4, seed=0)
    assert everything.mask.sum() == 45 * 4


def test_2af_stimulus_statistics():
    task = make_task("2af")
    b = task.batch(4000, seed=0)
    s = task.period("stimulus")
    assert (s.start, s.stop) == (5, 40)
    quiet = np.ones(45, dtype=bool)
    quiet[s] = False
    assert (b.x[quiet][:, :, 1:] == 0).all()  # noise only in stimulus periods
    diff = b.x[s, :, 1].mean(0) - b.x[s, :, 2].mean(0)
    sign = np.where(b.trials["choice"] == 1, 1.0, -1.0)
    coh = b.trials["coherence"]
    assert set(np.unique(coh)) == {0.0, 6.4, 12.8, 25.6, 51.2}
    resid = diff - sign * coh / 100.0
    sigma_s = 1.0 / np.sqrt(20.0)
    assert resid.mean() == pytest.approx(0.0, abs=0.01)
    assert resid.std() == pytest.approx(sigma_s * np.sqrt(2.0 / 35.0), rel=0.05)


def test_cxt_context_and_label():
    task = make_task("cxt")
    b = task.batch(200, seed=2)
    ctx = b.trials["context"]
    np.testing.assert_array_equal(b.x[:, :, 5], np.repeat((ctx == 1)[None].astype(float), 45, 0))
    expect = np.where(ctx == 1, b.trials["choice_1"], b.trials["choice_2"])
    np.testing.assert_array_equal(b.trials["choice"], expect)


def test_xor_definition():
    task = make_task("xor", delay=3, n_steps=20)
    b = task.batch(5, seed=0)
    s = b.x[..., 0].astype(int)
    for t in range(6, 20):
        np.testing.assert_array_equal(b.target[t, :, 0], s[t - 3] ^ s[t - 6])
    assert (b.mask[:6] == 0).all() and (b.mask[6:] == 1).all()


def test_sine_definition_and_r2():
    task = make_task("sine")
    b = task.batch(2, seed=0)
    assert (b.x[:5] == 1).all() and (b.x[5:] == 0).all()
    assert b.target[25, 0, 0] == pytest.approx(np.sin(2 * np.pi * 0.5))
    assert task.accuracy(np.zeros_like(b.target), b) == pytest.approx(1 - (b.target[5:] ** 2).sum() / ((b.target[5:] - b.target[5:].mean()) ** 2).sum())


def test_loss_normalisation():
    """ℒ = (1/(n_b n_m)) Σ m CE: uniform logits give ln 3 on any mask."""
    for name in ("2af", "dms", "cxt"):
        task = make_task(name, loss_periods="all")
        b = task.batch(3, seed=0)
        assert float(task.loss(torch.zeros(45, 3, 3, dtype=torch.float64), b)) == pytest.approx(np.log(3))
    xor = make_task("xor")
    b = xor.batch(3, seed=0)
    assert float(xor.loss(torch.zeros(300, 3, 1), b)) == pytest.approx(np.log(2), rel=1e-6)


def test_dt_rounding_and_timing_override():
    task = make_task("2af", dt=100.0, timing={"fixation": 0})
    assert [p for p, _ in task.period_steps] == ["stimulus", "decision"] and task.n_steps == 8


@pytest.mark.parametrize(
    "kwargs",
    [dict(name="nope"), dict(name="2af", loss_periods="some"), dict(name="2af", timing={"foo": 1}),
     dict(name="xor", delay=200), dict(name="2af", bogus=1), dict(name="2af", dt=0)],
)
def test_bad_options(kwargs):
    with pytest.raises(InputError):
        make_task(**kwargs)
    with pytest.raises(InputError):
        make_task("2af").batch(0, seed=0)


@pytest.mark.parametrize("name", TASKS)
def test_output_error_is_the_loss_gradient(name):
    """e_t = ∂ℒ/∂y_t in closed form equals autograd (float64, 1e-12), step by step too."""
    task = make_task(name)
    b = task.batch(6, seed=0)
    y = torch.randn(task.n_steps, 6, task.n_out, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y.requires_grad_(True)
    loss = task.loss(y, b)
    (g,) = torch.autograd.grad(loss, y)
    part, e = task.output_error(y.detach(), b)
    torch.testing.assert_close(e, g, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(part, loss.detach(), rtol=1e-12, atol=0)
    parts = [task.output_error(y.detach()[t:t + 1], b, slice(t, t + 1))[0] for t in range(task.n_steps)]
    chunks = [task.partial_loss(y[t:t + 7], b, slice(t, t + 7)) for t in range(0, task.n_steps, 7)]
    assert float(sum(parts)) == pytest.approx(loss.item(), rel=1e-12)
    assert float(sum(chunks).detach()) == pytest.approx(float(loss.detach()), rel=1e-12)


@pytest.mark.parametrize("name", ["2af", "dms", "cxt"])
def test_accuracy_over_decision_steps_equals_the_whole_trial_average(name):
    """The choice is read from the decision steps only: the same numbers as averaging the masked
    outputs over the whole trial (the other steps add exact zeros), on noisy outputs."""
    from biorules import tasks

    task = make_task(name)
    batch = task.batch(300, 1)
    y = task.ideal(batch) + np.random.default_rng(2).normal(0.0, 40.0, (*batch.x.shape[:2], task.n_out))
    dec = batch.decision.astype(np.float64)
    mean = (y * dec[..., None]).sum(axis=0) / dec.sum(axis=0)[:, None]
    want = float(np.mean(1 + np.argmax(mean[:, 1:3], axis=1) == batch.trials["choice"]))
    assert task.accuracy(y, batch) == want and 0.3 < want < 0.95
    first = task.ceiling(2048, 5)
    assert tasks._CEILINGS[(task, 2048, 5)] == first == task.ceiling(2048, 5)
    assert first == float(task.accuracy(task.ideal(task.batch(2048, 5)), task.batch(2048, 5)))


@pytest.mark.parametrize("name", ["2af", "dms", "cxt", "xor", "sine"])
def test_stacked_metric_and_errors_are_each_members_own(name):
    """A stack's accuracy (one vectorised call for the classification tasks) and its per-step
    errors (``step_errors``, the batch converted once) equal each member's alone, to the bit."""
    from biorules.tasks import stack_batches

    task = make_task(name)
    batches = [task.batch(40, s) for s in range(3)]
    batch = stack_batches(batches)
    y = np.random.default_rng(3).normal(0.0, 3.0, (*batch.x.shape[:3], task.n_out))
    want = [task.accuracy(y[:, s], batches[s]) for s in range(3)]
    np.testing.assert_array_equal(task.accuracy(y, batch), want)
    y = torch.as_tensor(y)
    errors = task.step_errors(batch, y)
    for t in (0, task.n_steps // 2, task.n_steps - 1):
        part, e = errors(y[t], t)
        ref_part, ref_e = task.output_error(y[t:t + 1], batch, slice(t, t + 1))
        assert torch.equal(part, ref_part) and torch.equal(e, ref_e)
        for s in range(3):
            alone = task.output_error(y[t:t + 1, s], batches[s], slice(t, t + 1))
            assert torch.equal(e[:, s], alone[1]) and part[s] == alone[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_entropy_over_the_outer_axis_is_the_last_axis_formula_to_the_bit(dtype):
    task = make_task("dms")
    y = torch.as_tensor(np.random.default_rng(4).normal(0.0, 5.0, (7, 3, 16, 3)), dtype=dtype)
    k = torch.as_tensor(np.random.default_rng(5).integers(0, 3, (7, 3, 16)))
    logp = torch.log_softmax(y, dim=-1)
    elem, grad = task._terms(y, k)
    assert torch.equal(elem, -logp.gather(-1, k[..., None])[..., 0])
    assert torch.equal(grad, logp.exp() - torch.nn.functional.one_hot(k, 3).to(dtype))
