"""A trained spiking network to NIR and back, and simulated by norse from the file.

    biorules train --task 2af --rule eprop --model lif --updates 50 --out results/lif.zarr
    python examples/nir_roundtrip.py results/lif.zarr

Without an argument it trains a small LIF network first (N = 32, 50 updates, batch 8; on
two shared cores, 3 min). It reloads the trained network from the store, writes it as a NIR graph twice (the
standard LIF node, and the CubaLIF form for simulators that reset by subtraction), reads both back
with ``nir.read``, checks that ``from_nir`` gives the same parameters and weights, and runs the
spiking core in norse on one fixed input: with reset by subtraction the spikes equal ours, with
NIR's reset to v_reset they do not.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import nir
import norse.torch as norse
import torch
from norse.torch.functional.reset import reset_subtract

import biorules
from biorules import export


def simulate(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Spikes (T, B, N) of a norse graph module stepped over x (T, B, n_in)."""
    state, spikes = None, []
    with torch.no_grad():
        for t in range(len(x)):
            z, state = module(x[t], state)
            spikes.append(z)
    return torch.stack(spikes)


def main(path: Path) -> None:
    warnings.filterwarnings("ignore", message="nirtorch.load is being deprecated", category=DeprecationWarning)
    if not path.exists():
        from biorules.spiking import LIFParams
        from biorules.store import save

        save(biorules.train("2af", "eprop", LIFParams(n=32), model="lif", updates=50, batch=8, progress=True), path)
    net = biorules.load_network(path)
    print(f"loaded {net.kind} network, N={net.n}: {net.step_params}")
    with tempfile.TemporaryDirectory() as tmp:
        for node in ("lif", "cubalif"):
            file = export.write_nir(net, Path(tmp) / f"{node}.nir", node=node)
            graph = nir.read(file)
            back = export.from_nir(graph)
            same = back.step_params == net.step_params and all(
                torch.equal(getattr(back, k), getattr(net, k)) for k in ("W", "U", "b", "V", "c"))
            print(f"{node:>8}: nodes {', '.join(type(v).__name__ for v in graph.nodes.values())}; "
                  f"from_nir gives the same network: {same}")

        x = torch.rand(500, 8, net.step_params.n_in, generator=torch.Generator().manual_seed(0)) * 3.0
        with torch.no_grad():
            ours = net(x, record_states=True)[2].z
        dt = net.step_params.dt * 1e-3  # NIR times are in seconds
        core = nir.read(export.write_nir(net, Path(tmp) / "core.nir", node="cubalif", readout=False))
        subtract = simulate(norse.from_nir(core, reset_method=reset_subtract, dt=dt), x)
        to_zero = simulate(norse.from_nir(nir.read(export.write_nir(net, Path(tmp) / "zero.nir", readout=False)),
                                          dt=dt), x)
    print(f"our network: {int(ours.sum())} spikes")
    print(f"norse, reset by subtraction: {int(subtract.sum())} spikes, identical: {torch.equal(subtract, ours)}")
    print(f"norse, reset to v_reset = 0: {int(to_zero.sum())} spikes, identical: {torch.equal(to_zero, ours)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/lif-example.zarr"))
