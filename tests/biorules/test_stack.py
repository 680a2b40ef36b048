"""A stack of S networks equals S single networks, for every rule and both kinds (float64)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from biorules import store
from biorules.network import NetworkParams, RateRNN
from biorules.rules import KIND_RULES, get_rule
from biorules.spiking import LIFNetwork, LIFParams
from biorules.tasks import make_task, stack_batches
from biorules.train import TrainConfig, train

GAINS = (0.5, 1.0, 1.5, 2.0, 1.25)
SEEDS = (0, 3, 1, 7, 2)
CASES = [(kind, rule) for kind in ("rate", "lif") for rule in KIND_RULES[kind]]
TOL = 1e-10


def _nets(kind: str):
    if kind == "rate":
        members = tuple(NetworkParams(n=10, n_in=3, n_out=3, gain=g, seed=s) for g, s in zip(GAINS, SEEDS, strict=True))
        return members, RateRNN(members, dtype=torch.float64), [RateRNN(m, dtype=torch.float64) for m in members]
    members = tuple(LIFParams(n=10, n_in=3, n_out=3, gain=g, seed=s, dt=20.0, tau_mem=40.0, tau_out=40.0)
                    for g, s in zip(GAINS, SEEDS, strict=True))
    return members, LIFNetwork(members, dtype=torch.float64), [LIFNetwork(m, dtype=torch.float64) for m in members]


def test_members_are_built_bit_for_bit():
    for kind in ("rate", "lif"):
        _, stack, singles = _nets(kind)
        for s, single in enumerate(singles):
            for name, p in single.named_parameters():
                assert torch.equal(getattr(stack, name)[s], p), (kind, name)


@pytest.mark.parametrize(("kind", "rule"), CASES)
def test_stacked_gradients_equal_single_gradients(kind, rule):
    _, stack, singles = _nets(kind)
    task = make_task("2af", dt=50.0, loss_periods="all")
    batches = [task.batch(4, seed=10 + s) for s in range(len(singles))]
    opts = {"feedback_seed": tuple(range(20, 25))} if rule in ("eprop-random", "rflo") else {}
    res = get_rule(rule, kind=kind, **opts).gradients(stack, stack_batches(batches), task)
    assert res.loss.shape == (5,) and res.y.shape == (task.n_steps, 5, 4, 3)
    for s, (net, batch) in enumerate(zip(singles, batches, strict=True)):
        single_opts = {"feedback_seed": 20 + s} if opts else {}
        one = get_rule(rule, kind=kind, **single_opts).gradients(net, batch, task)
        torch.testing.assert_close(res.loss[s], one.loss, rtol=TOL, atol=TOL)
        torch.testing.assert_close(res.y[:, s], one.y, rtol=TOL, atol=TOL)
        for name, g in one.grads.items():
            assert g.norm() > 0, name
            torch.testing.assert_close(res.grads[name][s], g, rtol=TOL, atol=TOL, msg=f"{kind} {rule} {name} member {s}")


def _config(kind: str, rule: str, **kw) -> TrainConfig:
    network = NetworkParams(n=10) if kind == "rate" else LIFParams(n=10, dt=20.0, tau_mem=40.0, tau_out=40.0)
    return TrainConfig(task="2af", rule=rule, model=kind, network=network, updates=20, batch=4, eval_every=10,
                       eval_batch=8, n_exponents=2, cosine_every=10, dtype="float64", lr=3e-3,
                       lyapunov={"transient_tau": 5.0, "ons_transient_tau": 2.0, "steps_tau": 20.0}, **kw)


def _single(cfg: TrainConfig, s: int, **kw):
    return train(replace(cfg, gains=(), seeds=(), seed=SEEDS[s], network=replace(cfg.network, gain=GAINS[s])), **kw)


@pytest.mark.parametrize(("kind", "rule"), CASES)
def test_stacked_training_equals_single_runs(kind, rule):
    cfg = _config(kind, rule, gains=GAINS, seeds=SEEDS)
    ds = train(cfg)
    assert ds.sizes["member"] == 5 and list(ds.gain.values) == list(GAINS) and list(ds.seed.values) == list(SEEDS)
    for s in range(5):
        one = _single(cfg, s)
        for name in ("loss", "accuracy", "eval_loss", "eval_accuracy", "grad_cosine", "final_loss", "weight_change",
                     "lambda_before", "lambda_after"):
            np.testing.assert_allclose(ds[name].isel(member=s).values, one[name].values, rtol=TOL, atol=TOL,
                                       err_msg=f"{kind} {rule} {name} member {s}")
        assert int(ds.status[s]) == int(one.status) == store.STATUS["done"]


@pytest.mark.parametrize("kind", ["rate", "lif"])
def test_one_diverging_member_leaves_the_others_unchanged(kind):
    cfg = _config(kind, "eprop", gains=GAINS, seeds=SEEDS)

    def poison(stacked: bool):
        def hook(u, net):
            if u == 5:
                with torch.no_grad():
                    (net.W[2] if stacked else net.W)[0, 0] = float("nan")
        return hook

    ds = train(cfg, on_update=poison(True))
    assert [int(v) for v in ds.status] == [1, 1, 2, 1, 1]
    assert "member 2: non-finite loss or gradient at update 5" in ds.attrs["status_message"]
    assert np.isnan(ds.loss[2, 5:]).all() and np.isfinite(ds.loss[2, :5]).all()
    for s in range(5):
        one = _single(cfg, s, on_update=poison(False) if s == 2 else None)
        np.testing.assert_allclose(ds.loss[s].values, one.loss.values, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(ds.final_loss[s].values, one.final_loss.values, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(ds.lambda_after[s].values, one.lambda_after.values, rtol=TOL, atol=TOL)
        assert int(ds.status[s]) == int(one.status)
    if kind == "rate":  # the LIF network has no spectrum
        assert np.isnan(ds.lambda_after[2]).all() and np.isfinite(ds.lambda_after[[0, 1, 3, 4]]).all()


@pytest.mark.parametrize("mode", ["exact", "local", "eprop"])
@pytest.mark.parametrize("driven", [False, True])
def test_stacked_flossing_gradients_equal_single_ones(mode, driven):
    from biorules.flossing import FlossConfig, floss_gradients

    members, stack, singles = _nets("rate")
    cfg = FlossConfig(mode=mode, n_exponents=2, transient=3, window=12, batch=2, relax=4)
    seeds = tuple(range(40, 45))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(15, 5, 2, 3, dtype=torch.float64, generator=gen) if driven else None
    res = floss_gradients(stack, cfg, step=1, inputs=x, seeds=seeds)
    assert res.lam.shape == (5, 2) and res.loss.shape == (5,)
    for s, net in enumerate(singles):
        one = floss_gradients(net, replace(cfg, seed=seeds[s]), step=1, inputs=None if x is None else x[:, s])
        torch.testing.assert_close(res.lam[s], one.lam, rtol=TOL, atol=TOL)
        for name, g in one.grads.items():
            torch.testing.assert_close(res.grads[name][s], g, rtol=TOL, atol=TOL, msg=f"{mode} {name} member {s}")


def test_stacked_flossed_training_equals_single_runs():
    from biorules.flossing import FlossConfig, FlossSchedule

    floss = dict(floss=FlossConfig(mode="eprop", window=10, transient=3, batch=2, relax=3),
                 floss_schedule=FlossSchedule(pre=2, every=5, steps=1, times=2))
    cfg = _config("rate", "eprop", gains=GAINS[:3], seeds=SEEDS[:3], **floss)
    ds = train(cfg)
    assert ds.floss_loss.dims == ("member", "floss_step") and ds.sizes["floss_step"] == 4
    for s in range(3):
        one = train(replace(cfg, gains=(), seeds=(), seed=SEEDS[s], network=replace(cfg.network, gain=GAINS[s]),
                            floss=replace(cfg.floss, seed=SEEDS[s])))
        for name in ("loss", "final_loss", "floss_loss", "floss_lambda_hat"):
            np.testing.assert_allclose(ds[name].isel(member=s).values, one[name].values, rtol=TOL, atol=TOL,
                                       err_msg=f"{name} member {s}")
