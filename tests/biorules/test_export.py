"""NIR export: the graph's layout, the round trip through a file read in a fresh process, and the
spikes norse simulates from the reloaded graph against our network's (reset by subtraction)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from biorules import export, store
from biorules.errors import InputError
from biorules.network import NetworkParams, RateRNN
from biorules.spiking import LIFNetwork, LIFParams
from biorules.train import train
from biorules.weights import load_network

nir = pytest.importorskip("nir")

SMALL = dict(updates=4, batch=4, eval_every=2, eval_batch=8, test_batch=8, n_exponents=0, cosine_every=0)


@pytest.fixture(scope="module")
def lif(tmp_path_factory):
    path = store.save(train("2af", "eprop", LIFParams(n=12), model="lif", **SMALL),
                      tmp_path_factory.mktemp("lif") / "l.zarr")
    return load_network(path)


def _weights(net) -> dict[str, np.ndarray]:
    return {k: getattr(net, k).detach().numpy() for k in ("W", "U", "b", "V", "c")}


def _read_in_fresh_process(path, tmp_path) -> dict:
    """nir.read + from_nir in a new interpreter; the parameters and weights back as JSON."""
    code = textwrap.dedent(f"""
        import json, nir
        from dataclasses import asdict
        from biorules.export import from_nir
        graph = nir.read({str(path)!r})
        net = from_nir(graph)
        print(json.dumps({{"nodes": {{k: type(v).__name__ for k, v in graph.nodes.items()}},
                          "params": asdict(net.member_params[0]),
                          "weights": {{k: getattr(net, k).detach().double().numpy().tolist() for k in "WUbVc"}}}}))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("node", ["lif", "cubalif"])
def test_lif_round_trip_through_a_file_in_a_fresh_process(lif, tmp_path, node):
    path = export.write_nir(lif, tmp_path / "net.nir", node=node)
    back = _read_in_fresh_process(path, tmp_path)
    assert back["nodes"] == {"input": "Input", "input_weights": "Affine", "lif": {"lif": "LIF", "cubalif": "CubaLIF"}[node],
                             "recurrent": "Linear", "readout_filter": "LI", "readout": "Affine", "output": "Output"}
    assert LIFParams(**back["params"]) == lif.step_params
    for k, v in _weights(lif).items():  # float32 weights survive exactly
        np.testing.assert_array_equal(np.asarray(back["weights"][k], dtype=np.float32).reshape(v.shape), v, err_msg=k)
    with pytest.raises(InputError, match="already exists"):
        export.write_nir(lif, path)


@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")
def test_norse_simulates_the_reloaded_graph_with_our_spikes(lif, tmp_path):
    """norse resets CubaLIF nodes by subtraction on request: the same spikes as our network, step by step."""
    import norse.torch as norse
    from norse.torch.functional.reset import reset_subtract

    path = export.write_nir(lif, tmp_path / "core.nir", node="cubalif", readout=False)
    graph = nir.read(path)
    module = norse.from_nir(graph, reset_method=reset_subtract, dt=lif.step_params.dt * 1e-3)
    x = torch.rand(300, 5, 3, generator=torch.Generator().manual_seed(0)) * 3.0  # a fixed input
    with torch.no_grad():
        _, _, ours = lif(x, record_states=True)
        state, spikes = None, []
        for t in range(len(x)):
            z, state = module(x[t], state)
            spikes.append(z)
    spikes = torch.stack(spikes)
    assert ours.z.sum() > 50  # the network spikes, so resets matter
    assert torch.equal(spikes, ours.z)
    # norse's LIF import resets to the value (v_reset = 0): NIR's own semantics, other spikes
    module = norse.from_nir(nir.read(export.write_nir(lif, tmp_path / "lif.nir", readout=False)), dt=1e-3)
    with torch.no_grad():
        state, to_zero = None, []
        for t in range(len(x)):
            z, state = module(x[t], state)
            to_zero.append(z)
    assert not torch.equal(torch.stack(to_zero), ours.z)


def test_readout_filter_and_readout_are_exact(lif):
    """LI(τ_out) then Affine(V, c) under forward Euler at dt is our leaky readout."""
    graph = export.to_nir(lif)
    li, readout = graph.nodes["readout_filter"], graph.nodes["readout"]
    z = (torch.rand(50, 2, lif.n, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    dt, r = lif.step_params.dt * 1e-3, np.zeros((2, lif.n))
    ys = []
    for t in range(len(z)):
        r = r + dt / li.tau * (li.v_leak - r + li.r * z[t].numpy())
        ys.append(r @ readout.weight.T + readout.bias)
    kappa, ours = lif.step_params.kappa, torch.zeros(2, lif.n, dtype=torch.float64)
    want = []
    for t in range(len(z)):
        ours = kappa * ours + (1 - kappa) * z[t].double()
        want.append(lif.readout(ours.float()).detach().double().numpy())
    np.testing.assert_allclose(np.stack(ys), np.stack(want), rtol=1e-5, atol=1e-6)  # float32 readout


def test_current_cell_exports_as_cubalif():
    net = LIFNetwork(LIFParams(n=6, cell="current", seed=3))
    graph = export.to_nir(net)
    cuba = graph.nodes["lif"]
    assert isinstance(cuba, nir.CubaLIF) and np.allclose(cuba.w_in, 5.0) and np.allclose(cuba.tau_syn, 5e-3)
    back = export.from_nir(graph)
    assert back.step_params == net.step_params and torch.equal(back.W, net.W)
    with pytest.raises(InputError, match="CubaLIF"):
        export.to_nir(net, node="lif")


def test_rate_network_exports_without_its_nonlinearity_and_says_so(tmp_path):
    net = RateRNN(NetworkParams(n=8, nonlinearity="retanh", alpha=0.1, seed=2))
    with pytest.warns(UserWarning, match="no node for the nonlinearity retanh"):
        path = export.write_nir(net, tmp_path / "rate.nir", dt=10.0)
    graph = nir.read(path)
    assert {type(v).__name__ for v in graph.nodes.values()} == {"Input", "Affine", "LI", "Linear", "Output"}
    assert np.allclose(graph.nodes["rate"].tau, 0.1)  # τ = dt/α = 100 ms
    back = export.from_nir(graph)
    assert back.params == net.params
    assert all(torch.equal(getattr(back, k), getattr(net, k)) for k in ("W", "U", "b", "V", "c"))


def test_bad_input():
    stack = RateRNN((NetworkParams(n=4), NetworkParams(n=4, seed=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(InputError, match="stack of 2"):
            export.to_nir(stack)
        assert isinstance(export.to_nir(stack, member=1), nir.NIRGraph)
    with pytest.raises(InputError, match="node applies to LIF"):
        export.to_nir(RateRNN(NetworkParams(n=4)), node="lif")
    with pytest.raises(InputError, match="no NIR file"):
        export.from_nir("missing.nir")
