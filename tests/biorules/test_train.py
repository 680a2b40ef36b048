"""``biorules.train.train``: the Dataset, seeds, divergence, the update hook and the store round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.network import NetworkParams
from biorules.rules import RULE_NAMES
from biorules.train import seeds, train

SMALL = dict(updates=4, batch=4, eval_every=2, eval_batch=16, n_exponents=3, cosine_every=2,
             lyapunov={"transient_tau": 5.0, "ons_transient_tau": 2.0, "steps_tau": 20.0})


def small(n: int = 16, **kw) -> NetworkParams:
    return NetworkParams(n=n, gain=1.0, **kw)


def test_dataset_layout_units_and_attrs():
    ds = train("2af", "eprop", small(), **SMALL)
    assert dict(ds.sizes) == {"update": 4, "eval_update": 3, "exponent": 3, "cosine_update": 2}
    for name in ("loss", "accuracy", "eval_loss", "eval_accuracy", "lambda_before", "lambda_after",
                 "weight_change", "input_weight_change", "grad_cosine", "final_loss", "final_accuracy", "status", "wall_time"):
        assert name in ds and "long_name" in ds[name].attrs, name
        assert name == "status" or "units" in ds[name].attrs, name
    assert ds.lambda_before.attrs["units"] == "1/tau"
    assert int(ds.status) == store.STATUS["done"]
    assert np.isfinite(ds.loss).all() and np.isfinite(ds.lambda_after).all()
    assert 0.0 < float(ds.weight_change) < 1.0
    assert ds.attrs["config_rule"] == "eprop" and ds.attrs["network_n"] == 16 and ds.attrs["task_name"] == "2af"
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
    assert len(set(seeds(0).values())) == 5


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
    xr.testing.assert_identical(ds.assign_attrs(store_version=store.STORE_VERSION), xr.open_zarr(path).load())


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
    assert ds.attrs["config_model"] == "lif" and ds.attrs["task_dt"] == 20.0


def test_gradient_cosine_with_bptt():
    bptt = train("2af", "bptt", small(), **SMALL)
    eprop = train("2af", "eprop", small(), **SMALL)
    np.testing.assert_allclose(bptt.grad_cosine, 1.0, rtol=1e-5)
    assert (eprop.grad_cosine < 1.0 - 1e-4).all() and (eprop.grad_cosine > 0.0).all()
