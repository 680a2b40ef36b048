"""Truncated BPTT (docs/rules.md, property 5): K ≥ T is BPTT; K = 1 is α Σ_t (ψ_t ⊙ Vᵀe_t) h_{t−1}ᵀ."""

from __future__ import annotations

import pytest
import torch
from rules_helpers import model64, rel_err, task_and_batch

from biorules.errors import InputError
from biorules.rules import get_rule


@pytest.mark.parametrize("mode", ["chunk", "sliding"])
def test_window_at_least_t_equals_bptt(mode):
    model = model64()
    task, batch = task_and_batch()
    ref = get_rule("bptt").gradients(model, batch, task)
    for K in (task.n_steps, task.n_steps + 5):
        res = get_rule("tbptt", window=K, mode=mode).gradients(model, batch, task)
        for name in ("W", "U", "b", "V", "c"):
            assert rel_err(res.grads[name], ref.grads[name]) < 1e-9, (K, name)
        assert float(res.loss) == pytest.approx(float(ref.loss), rel=1e-12)


@pytest.mark.parametrize("mode", ["chunk", "sliding"])
def test_window_one_formula(mode):
    model = model64(alpha=0.3)
    task, batch = task_and_batch()
    res = get_rule("tbptt", window=1, mode=mode).gradients(model, batch, task)
    with torch.no_grad():
        y, _, a = model(torch.as_tensor(batch.x), record_states=True)
        h = model.nl.phi(a)
        h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
        _, e = task.output_error(y, batch)
        d = model.nl.dphi(a) * (e @ model.V)
        alpha = model.params.alpha
        expect = {"W": alpha * torch.einsum("tbi,tbj->ij", d, h_prev),
                  "U": alpha * torch.einsum("tbi,tbj->ij", d, torch.as_tensor(batch.x)),
                  "b": alpha * d.sum((0, 1))}
    for name, g in expect.items():
        assert rel_err(res.grads[name], g) < 1e-9, name


def test_chunk_and_sliding_differ_and_truncate():
    """For 1 < K < T both truncations differ from BPTT and from each other (no aliasing)."""
    model = model64()
    task, batch = task_and_batch()
    ref = get_rule("bptt").gradients(model, batch, task).grads["W"]
    chunk = get_rule("tbptt", window=4).gradients(model, batch, task).grads["W"]
    sliding = get_rule("tbptt", window=4, mode="sliding").gradients(model, batch, task).grads["W"]
    assert rel_err(chunk, ref) > 1e-3 and rel_err(sliding, ref) > 1e-3 and rel_err(chunk, sliding) > 1e-3


def test_bad_options():
    with pytest.raises(InputError):
        get_rule("tbptt", window=0)
    with pytest.raises(InputError):
        get_rule("tbptt", mode="diagonal")
