"""The gain-study sweep: schema, interrupt and resume, equality with an uninterrupted run, dask."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import requires_dask

from biorules import store
from biorules.errors import InputError
from biorules.experiments.sweep import SweepConfig, run


def tiny(**kw):
    base = dict(gains=(0.5, 1.5), rules=("eprop",), floss=("none",), seeds=(0, 1), n=6, updates=3, batch=4,
                eval_every=2, eval_batch=8, test_batch=16, n_exponents=1, tasks=("2af",), cosine_every=2)
    base.update(kw)
    return SweepConfig(**base)


def _numbers(ds):
    return ds.drop_vars("wall_time").drop_attrs()


def test_schema_and_values(tmp_path):
    ds = run(tiny(), tmp_path / "s.zarr", workers=1)
    assert dict(ds.sizes) == {"task": 1, "gain": 2, "rule": 1, "floss": 1, "seed": 2, "update": 3, "eval_update": 3,
                              "exponent": 1, "condition": 3, "cosine_update": 2}
    assert ds.loss.dims == ("task", "gain", "rule", "floss", "seed", "update")
    assert ds.lambda_before.dims == ("task", "gain", "rule", "floss", "seed", "condition", "exponent")
    assert (ds.status == store.STATUS["done"]).all() and np.isfinite(ds.test_accuracy).all()
    assert np.isfinite(ds.lambda_after_sem).all() and np.isfinite(ds.grad_cosine).all()
    assert ds.lambda_before.attrs["units"] == "1/tau"
    assert ds.attrs["chance"] == 0.5 and float(ds.ceiling.sel(task="2af")) == ds.attrs["ceiling"]
    assert float(ds.criterion.squeeze()) == pytest.approx(0.9 * ds.attrs["ceiling"])
    # at g = 0.5 the network decays to its fixed point, autonomous or at the fixation input
    assert (ds.lambda_before.sel(gain=0.5, seed=0).squeeze() < 0).all()


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = tiny(rules=("eprop", "bptt"))
    whole = run(cfg, tmp_path / "whole.zarr", workers=1)
    path = tmp_path / "part.zarr"
    seen = []

    def interrupt(idx, cell):
        seen.append(idx)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, path, workers=1, on_cell=interrupt)
    assert store.finished_cells(path).sum() == 3
    redone = []
    resumed = run(cfg, path, workers=1, on_cell=lambda idx, cell: redone.append(idx))
    assert len(redone) == 8 - 3 and not set(redone) & set(seen)
    xr.testing.assert_identical(_numbers(resumed), _numbers(whole))


def test_failed_cell_is_recorded_not_raised(tmp_path, monkeypatch):
    import biorules.train

    def boom(*a, **k):
        raise RuntimeError("no luck")

    monkeypatch.setattr(biorules.train, "train", boom)
    ds = run(tiny(gains=(1.0,), seeds=(0,)), tmp_path / "f.zarr", workers=1)
    assert int(ds.status.squeeze()) == store.STATUS["failed"]


def test_another_configuration_is_refused(tmp_path):
    run(tiny(gains=(1.0,), seeds=(0,)), tmp_path / "s.zarr", workers=1)
    with pytest.raises(InputError, match="different configuration"):
        run(tiny(gains=(1.0,), seeds=(0,), updates=4), tmp_path / "s.zarr", workers=1)


@pytest.mark.parametrize("kw", [dict(rules=("nope",)), dict(floss=("magic",)), dict(n_exponents=7), dict(tasks=("x",)),
                                dict(conditions=("driven",)), dict(gains=(1.0, 1.0)), dict(floss_options={"nope": 1})])
def test_bad_config(kw):
    with pytest.raises(InputError):
        tiny(**kw)


@requires_dask
def test_dask_cluster_gives_the_same_numbers(tmp_path):
    from distributed import LocalCluster

    cfg = tiny(gains=(1.0,))
    local = run(cfg, tmp_path / "local.zarr", workers=1)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = run(cfg, tmp_path / "dask.zarr", scheduler=cluster.scheduler_address)
    xr.testing.assert_identical(_numbers(remote), _numbers(local))


def test_stacked_sweep_equals_the_sweep_cell_by_cell(tmp_path):
    cfg = tiny(rules=("eprop", "rflo"), gains=(0.5, 1.0, 1.5), dtype="float64")
    stacked = run(cfg, tmp_path / "stacked.zarr", workers=1)
    single = run(cfg, tmp_path / "single.zarr", workers=1, stack=1)
    xr.testing.assert_allclose(_numbers(stacked), _numbers(single), rtol=1e-10, atol=1e-12)
    assert (stacked.status == store.STATUS["done"]).all()


def test_noise_learned_a0_and_online_updates_stacked_equal_cell_by_cell(tmp_path):
    """The network options reach every cell; bptt trains per batch beside online e-prop."""
    cfg = tiny(rules=("eprop", "bptt"), gains=(0.5, 1.5), seeds=(0,), dtype="float64", noise=0.2, learn_a0=True,
               online=True, save_weights=True)
    stacked = run(cfg, tmp_path / "stacked.zarr", workers=1)
    single = run(cfg, tmp_path / "single.zarr", workers=1, stack=1)
    xr.testing.assert_allclose(_numbers(stacked), _numbers(single), rtol=1e-10, atol=1e-12)
    assert (stacked.status == store.STATUS["done"]).all()
    plain = run(tiny(rules=("eprop",), gains=(0.5, 1.5), seeds=(0,), dtype="float64"), tmp_path / "p.zarr", workers=1)
    assert not np.allclose(plain.loss.values, stacked.loss.sel(rule=["eprop"]).values)
    w = xr.open_zarr(tmp_path / "stacked.zarr", group="weights")
    assert np.abs(w.a0.sel(stage="final").values).max() > 0 and (w.a0.sel(stage="initial").values == 0).all()


def test_plan_groups_cells_that_can_share_a_stack():
    from biorules.experiments.sweep import plan

    cfg = tiny(rules=("eprop", "bptt"), floss=("none", "local"), gains=(0.5, 1.0, 1.5))
    cells = [(0, g, r, f, s) for g in range(3) for r in range(2) for f in range(2) for s in range(2)]
    jobs = plan(cfg, cells, workers=2)
    assert sorted(j.key[1:] for j in jobs) == [("bptt", "local"), ("bptt", "none"), ("eprop", "local"), ("eprop", "none")]
    assert all(len(j.cells) == 6 for j in jobs)  # whole groups: 4 groups already keep 2 workers busy
    assert sorted(c for j in jobs for c in j.cells) == sorted(cells)
    # the costliest stacks first (BPTT before e-prop, flossed before not), so the workers finish together
    assert [j.key[1:] for j in jobs] == [("bptt", "local"), ("bptt", "none"), ("eprop", "local"), ("eprop", "none")]
    assert max(len(j.cells) for j in plan(cfg, cells, stack=4)) == 4
    one_group = plan(tiny(gains=(0.5, 1.0, 1.5)), [(0, g, 0, 0, s) for g in range(3) for s in range(2)], workers=2)
    assert [len(j.cells) for j in one_group] == [3, 3]
    big = dict(n=200, gains=(0.5, 1.0, 1.5), rules=("eprop", "bptt"), floss=("none", "local"))
    # the CPU cap is 320 000 weights: a whole group of 6 at N = 200, 2 members at N = 400;
    # a GPU takes whole groups
    assert {len(j.cells) for j in plan(tiny(**big), cells, workers=2)} == {6}
    bigger = {**big, "n": 400}
    assert {len(j.cells) for j in plan(tiny(**bigger), cells, workers=2)} == {2}
    assert {len(j.cells) for j in plan(tiny(**bigger, device="cuda"), cells, workers=2)} == {6}


def test_a_master_seed_means_the_same_network_in_lyapunov_train_and_sweep(monkeypatch):
    """`biorules lyapunov` (the gain scan), `train` and `sweep` build the same W for (gain, seed)."""
    from biorules.experiments import gain_scan
    from biorules.network import NetworkParams, recurrent_weights
    from biorules.train import train

    built = []
    real = gain_scan.spectrum_of
    monkeypatch.setattr(gain_scan, "spectrum_of", lambda p, **kw: built.append((p, kw["seed"])) or real(p, **kw))
    gain_scan.measure_cell(gain_scan.LyapunovScanConfig(gains=(2.0,), network=NetworkParams(n=12), n_exponents=1, steps=20,
                                                        transient=5), 2.0, 3)
    models = []
    train("dms", "bptt", NetworkParams(n=12, gain=2.0), seed=3, updates=1, batch=2, eval_batch=4, test_batch=4,
          n_exponents=0, cosine_every=0, on_update=lambda u, m: models.append(m.W.detach().clone()))
    stack = []
    train("dms", "bptt", NetworkParams(n=12), gains=(0.5, 2.0), seeds=(0, 3), updates=1, batch=2, eval_batch=4,
          test_batch=4, n_exponents=0, cosine_every=0, on_update=lambda u, m: stack.append(m.W.detach().clone()))
    (params, lyap_seed), = built
    W_scan = recurrent_weights(params)[0]
    np.testing.assert_array_equal(models[0].numpy(), W_scan.astype(np.float32))
    np.testing.assert_array_equal(stack[0][1].numpy(), W_scan.astype(np.float32))
    from biorules.train import seeds

    assert params.seed == seeds(3)["network"] and lyap_seed == seeds(3)["lyapunov"]


def test_saved_weights_reload_as_the_trained_network(tmp_path):
    """--save-weights keeps each cell's initial and final parameters (NaN-padded to the widest task);
    load_network gives back exactly the network the cell trained."""
    import biorules
    from biorules.network import NetworkParams
    from biorules.train import train

    cfg = tiny(tasks=("2af", "cxt"), gains=(1.5,), seeds=(1,), save_weights=True)
    ds = run(cfg, tmp_path / "w.zarr", workers=1, stack=1)
    assert (ds.status == store.STATUS["done"]).all()
    weights = xr.open_zarr(tmp_path / "w.zarr", group="weights")
    assert weights.U.sizes["input"] == 7 and np.isnan(weights.U.sel(task="2af").values[..., 3:]).all()
    net = biorules.load_network(tmp_path / "w.zarr", task="2af", gain=1.5, rule="eprop", floss="none", seed=1)
    alone = train("2af", "eprop", NetworkParams(n=6, gain=1.5), seed=1, updates=3, batch=4, eval_every=2, eval_batch=8,
                  test_batch=16, n_exponents=1, cosine_every=2)
    np.testing.assert_array_equal(net.W.detach().numpy(), alone.W.sel(stage="final").values)
    np.testing.assert_array_equal(net.U.detach().numpy(), alone.U.sel(stage="final").values)


def test_a_diverged_member_of_a_stack_keeps_its_own_reason(tmp_path, monkeypatch):
    """One stack of two cells whose second member is poisoned at update 1: only that cell is
    diverged, and only it carries a reason, its own (not the stack's joined text)."""
    import torch

    import biorules.train as training

    original = training.train

    def poisoned(config, **kw):
        def hook(u, net):
            if u == 1:
                with torch.no_grad():
                    net.W[1, 0, 0] = float("nan")
        return original(config, on_update=hook, **kw)

    monkeypatch.setattr(training, "train", poisoned)
    ds = run(tiny(gains=(1.0, 1.5), seeds=(0,)), tmp_path / "d.zarr", workers=1, stack=2)
    status, message = ds.status.squeeze(), ds.message.squeeze()
    assert int(status.sel(gain=1.0)) == store.STATUS["done"] and message.sel(gain=1.0).item() == ""
    assert int(status.sel(gain=1.5)) == store.STATUS["diverged"]
    assert message.sel(gain=1.5).item() == "non-finite loss or gradient at update 1"
