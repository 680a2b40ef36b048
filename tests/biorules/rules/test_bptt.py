"""BPTT (docs/rules.md, property 1): the explicit δ recursion equals autograd, float64."""

from __future__ import annotations

import pytest
import torch
from rules_helpers import model64, rel_err, task_and_batch

from biorules.rules import get_rule
from biorules.rules.bptt import manual_gradients


@pytest.mark.parametrize("nonlinearity", ["tanh", "retanh", "relu"])
@pytest.mark.parametrize("alpha", [0.2, 1.0])
@pytest.mark.parametrize("task_name", ["2af", "sine"])
def test_manual_equals_autograd(nonlinearity, alpha, task_name):
    n_in = 3 if task_name == "2af" else 1
    n_out = 3 if task_name == "2af" else 1
    model = model64(alpha=alpha, nonlinearity=nonlinearity, n_in=n_in, n_out=n_out, gain=0.9)
    task, batch = task_and_batch(task_name)
    auto = get_rule("bptt").gradients(model, batch, task)
    manual = manual_gradients(model, batch, task)
    for name in ("W", "U", "b", "V", "c"):
        assert rel_err(manual.grads[name], auto.grads[name]) < 1e-9, name
    assert float(manual.loss) == pytest.approx(float(auto.loss), rel=1e-12)
    torch.testing.assert_close(manual.y, auto.y, rtol=1e-12, atol=1e-12)


def test_sparse_mask_applies_to_w_gradient():
    model = model64(init="sparse", n=20)
    task, batch = task_and_batch()
    g = get_rule("bptt").gradients(model, batch, task).grads["W"]
    assert (g[model.mask == 0] == 0).all() and (g[model.mask == 1] != 0).any()


def test_gradient_keys_and_detached_outputs():
    model = model64()
    task, batch = task_and_batch()
    res = get_rule("bptt").gradients(model, batch, task)
    assert set(res.grads) == {"W", "U", "b", "V", "c"}
    assert not res.y.requires_grad and not res.loss.requires_grad
    assert res.y.shape == (task.n_steps, 4, 3)
