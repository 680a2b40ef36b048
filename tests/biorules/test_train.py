"""``biorules.train.train``: the Dataset, seeds, divergence, the update hook and the store round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.network import NetworkParams
from biorules.rules import RULE_NAMES
from biorules.train import SEED_STREAMS, seeds, train

SMALL = dict(updates=4, batch=4, eval_every=2, eval_batch=16, n_exponents=3, cosine_every=2,
             lyapunov={"transient_tau": 5.0, "ons_transient_tau": 2.0, "steps_tau": 20.0})


def small(n: int = 16, **kw) -> NetworkParams:
    return NetworkParams(n=n, gain=1.0, **kw)


def test_dataset_layout_units_and_attrs():
    ds = train("2af", "eprop", small(), **SMALL)
    assert dict(ds.sizes) == {"update": 4, "eval_update": 3, "exponent": 3, "cosine_update": 2, "condition": 3,
                              "stage": 2, "post": 16, "pre": 16, "input": 3, "output": 3}  # + the weights
    assert list(ds.condition.values) == ["autonomous", "fixation", "task"]
    for name in ("loss", "accuracy", "eval_loss", "eval_accuracy", "lambda_before", "lambda_after",
                 "weight_change", "input_weight_change", "grad_cosine", "final_loss", "final_accuracy", "status", "wall_time",
                 "test_loss", "test_accuracy", "eval_accuracy_best", "eval_accuracy_last", "updates_to_criterion",
                 "lambda_before_sem", "lambda_after_sem"):
        assert name in ds and "long_name" in ds[name].attrs, name
        assert name == "status" or "units" in ds[name].attrs, name
    assert ds.lambda_before.attrs["units"] == "1/tau"
    assert int(ds.status) == store.STATUS["done"]
    assert np.isfinite(ds.loss).all() and np.isfinite(ds.lambda_after).all()
    assert 0.0 < float(ds.weight_change) < 1.0
    assert json.loads(ds.attrs["config"])["rule"] == "eprop" and ds.attrs["network_n"] == 16 and ds.attrs["task_name"] == "2af"
    assert ds.attrs["network_n_in"] == 3 and ds.attrs["rule_feedback"] == "symmetric"
    assert list(ds.eval_update.values) == [0, 2, 4]
    assert float(ds.eval_accuracy[-1]) == float(ds.final_accuracy)


def test_same_seed_same_numbers_and_shared_initial_spectrum():
    a = train("dms", "bptt", small(), **SMALL)
    b = train("dms", "bptt", small(), **SMALL)
    c = train("dms", "rflo", small(), **SMALL)
    d = train("dms", "bptt", small(), seed=1, **SMALL)
    xr.testing.assert_identical(a.loss, b.loss)
    xr.testing.assert_identical(a.lambda_after, b.lambda_after)
    xr.testing.assert_identical(a.lambda_before, c.lambda_before)  # "before" depends on (g, seed) only
    assert not np.array_equal(a.loss.values, d.loss.values)
    assert len(set(seeds(0).values())) == len(SEED_STREAMS)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_every_rule_trains_every_task_briefly(rule):
    for task in ("2af", "xor", "sine"):
        opts = {"n_steps": 40, "delay": 5} if task == "xor" else None
        ds = train(task, rule, small(), task_options=opts, **SMALL)
        assert int(ds.status) == store.STATUS["done"], (task, ds.attrs["status_message"])
        assert np.isfinite(ds.loss).all() and np.isfinite(float(ds.final_accuracy))


def test_nan_ends_the_run_as_diverged_with_padded_curves():
    calls = []

    def poison(u, model):
        calls.append(u)
        if u == 2:
            with torch.no_grad():
                model.W[0, 0] = float("nan")

    ds = train("2af", "bptt", small(), on_update=poison, **SMALL)
    assert calls == [0, 1, 2]
    assert int(ds.status) == store.STATUS["diverged"] and "update 2" in ds.attrs["status_message"]
    assert np.isfinite(ds.loss[:2]).all() and np.isnan(ds.loss[2:]).all()
    assert np.isnan(float(ds.final_loss)) and np.isnan(ds.lambda_after).all()
    assert np.isfinite(ds.lambda_before).all()


def test_exploding_learning_rate_diverges_without_raising():
    ds = train("sine", "eprop", small(), optimizer="sgd", lr=1e30, **SMALL)
    assert int(ds.status) == store.STATUS["diverged"]


def test_hook_runs_before_every_update():
    seen = []
    train("2af", "rflo", small(), on_update=lambda u, m: seen.append((u, type(m).__name__)), **SMALL)
    assert seen == [(u, "RateRNN") for u in range(4)]


def test_sparse_and_dale_constraints_hold():
    ds = train("2af", "eprop", small(init="sparse"), **SMALL)
    assert int(ds.status) == store.STATUS["done"]
    from biorules.network import RateRNN, recurrent_weights

    captured = {}
    p = small(init="dale")

    def grab(u, m):
        captured["W"] = m.W.detach().clone()

    train("2af", "bptt", p, on_update=grab, lr=0.05, **SMALL)
    W0 = torch.as_tensor(recurrent_weights(NetworkParams(**{**p.to_attrs(), "seed": seeds(0)["network"]}))[0],
                         dtype=torch.float32)
    assert ((captured["W"] * torch.sign(W0)) >= 0).all()  # no sign flips
    assert RateRNN is not None


def test_store_round_trip(tmp_path):
    ds = train("2af", "eprop", small(), **SMALL)
    path = store.save(ds, tmp_path / "run.zarr")
    xr.testing.assert_identical(ds.assign_attrs(store_version=store.STORE_VERSION), store.open_all(path).load())
    assert "W" not in xr.open_zarr(path) and "W" in xr.open_zarr(path, group="weights")  # weights in their group


def test_bad_input():
    with pytest.raises(InputError, match="unknown task"):
        train("nope", "eprop", updates=1)
    with pytest.raises(InputError, match="unknown rule"):
        train("2af", "nope", updates=1)
    with pytest.raises(InputError, match="not defined for model 'lif'"):
        train("2af", "rflo", model="lif", updates=1)
    with pytest.raises(InputError, match="updates"):
        train("2af", "eprop", updates=0)


def test_lif_model_trains_and_has_no_spectrum():
    from biorules.spiking import LIFParams

    ds = train("2af", "eprop", LIFParams(n=16), model="lif", updates=2, batch=2, eval_batch=4,
               task_options={"dt": 20.0})
    assert int(ds.status) == store.STATUS["done"] and ds.sizes["exponent"] == 0
    assert json.loads(ds.attrs["config"])["model"] == "lif" and ds.attrs["task_dt"] == 20.0


def test_gradient_cosine_with_bptt():
    bptt = train("2af", "bptt", small(), **SMALL)
    eprop = train("2af", "eprop", small(), **SMALL)
    np.testing.assert_allclose(bptt.grad_cosine, 1.0, rtol=1e-5)
    assert (eprop.grad_cosine < 1.0 - 1e-4).all() and (eprop.grad_cosine > 0.0).all()


def test_fixation_spectrum_is_the_autonomous_map_with_the_input_folded_into_the_bias():
    """Before training: the fixation row equals the autonomous spectrum of W₀ with b + U x_fix, and
    a spectrum driven by the constant input x_fix equals it exactly (x enters only through a_t)."""
    from biorules.lyapunov import spectrum
    from biorules.network import build_weights
    from biorules.tasks import make_task
    from biorules.train import spectrum_steps

    ds = train("dms", "eprop", NetworkParams(n=16, gain=1.5), dtype="float64", **SMALL)
    task = make_task("dms")
    w = build_weights(NetworkParams(n=16, gain=1.5, n_in=3, n_out=3, seed=seeds(0)["network"]))
    tr, ons, steps = spectrum_steps(0.2, SMALL["lyapunov"])
    x_fix = task.fixation_input()
    kw = dict(alpha=0.2, n_exponents=3, unit="tau", steps=steps, transient=tr, ons_transient=ons, seed=seeds(0)["lyapunov"])
    folded = spectrum(w.W, b=w.b + w.U @ x_fix, **kw).values
    driven = spectrum(w.W, b=w.b, U=w.U, inputs=np.tile(x_fix, (tr + ons + steps, 1)), **kw).values
    np.testing.assert_array_equal(driven, folded)
    np.testing.assert_allclose(ds.lambda_before.sel(condition="fixation").values, folded, rtol=1e-12, atol=1e-12)
    auto = spectrum(w.W, b=w.b, **kw).values
    np.testing.assert_allclose(ds.lambda_before.sel(condition="autonomous").values, auto, rtol=1e-12, atol=1e-12)
    assert not np.allclose(folded, auto)  # the fixation input moves the network off x = 0


def test_final_test_uses_its_own_fresh_trials():
    """test_accuracy is the trained network's metric on 2048 trials of the ``test`` stream, which are
    neither the monitoring batch nor any training batch."""
    from biorules.rules import get_rule
    from biorules.tasks import make_task

    models = []
    ds = train("dms", "bptt", small(), on_update=lambda u, m: models.append(m), **SMALL)
    task, s = make_task("dms"), seeds(0)
    test, monitor = task.batch(2048, s["test"]), task.batch(16, s["eval"])
    # the noisy inputs of a test trial never equal those of a monitoring trial
    assert not any(np.array_equal(test.x[:, i], monitor.x[:, j]) for i in range(256) for j in range(16))
    with torch.no_grad():
        y = get_rule("bptt").forward(models[-1], torch.as_tensor(test.x, dtype=torch.float32))
    assert float(ds.test_accuracy) == pytest.approx(task.accuracy(y, test), abs=0)
    assert float(ds.test_loss) == pytest.approx(float(task.loss(y, test)), rel=1e-6)
    assert ds.test_accuracy.attrs["long_name"].startswith("task metric on 2048 fresh test trials")


def test_updates_to_criterion_is_the_first_monitoring_point_at_the_criterion():
    ds = train("dms", "bptt", small(n=24), updates=60, batch=16, eval_every=10, eval_batch=64, n_exponents=1,
               cosine_every=0, lr=0.01, lyapunov=SMALL["lyapunov"])
    crit = ds.attrs["criterion"]
    assert crit == pytest.approx(0.9 * ds.attrs["ceiling"]) and ds.attrs["ceiling"] == 1.0 and ds.attrs["chance"] == 0.5
    hit = np.flatnonzero(ds.eval_accuracy.values >= crit)
    expected = float(ds.eval_update[hit[0]]) if hit.size else np.nan
    np.testing.assert_equal(float(ds.updates_to_criterion), expected)
    assert float(ds.eval_accuracy_best) == float(ds.eval_accuracy.max())
    assert float(ds.eval_accuracy_last) == float(ds.eval_accuracy[-1])
