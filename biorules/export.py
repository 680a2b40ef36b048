"""Trained networks to NIR, the Neuromorphic Intermediate Representation, and back.

NIR describes a network as a graph of continuous-time nodes; a simulator (norse, snnTorch,
Lava, SpiNNaker, ...) discretises it. Our networks are forward-Euler maps with step dt, and NIR's
nodes integrate with forward Euler at that dt to exactly our maps (τ v̇ = (v_leak − v) + R I gives
v_t = (1 − dt/τ) v_{t−1} + (dt/τ) R I_t). Times are in seconds in the graph (NIR's convention),
in ms in our records. The LIF graph (``to_nir(net)``, box cell)::

    input ─▶ input_weights: Affine(U, b) ─▶ lif: LIF(τ_m, R = 1, v_leak = 0, v_th, v_reset = 0)
                                              ▲           │
                              recurrent: Linear(W) ◀──────┤
                                                          ▼
                       readout_filter: LI(τ_out, R = 1, v_leak = 0) ─▶ readout: Affine(V, c) ─▶ output

The recurrent edge carries the previous step's spikes, so the membrane sees W z_{t−1} + U x_t + b,
as ours does; the readout filter is r_t = κ r_{t−1} + (1 − κ) z_t, κ = 1 − dt/τ_out, exactly.

**Reset.** NIR's LIF and CubaLIF reset to v_reset after a spike; ours subtracts the threshold
(v_t = ṽ_t − v_th z_t) and NIR has no field for that. The graph records ``reset = "subtract"`` in
its metadata, but a simulator that follows NIR resets to v_reset = 0: each spike then also drops
the overshoot ṽ_t − v_th, so membranes sit lower after a spike and spike trains diverge from ours
from the first spike that overshoots. A simulator that can reset by subtraction reproduces our
spikes exactly; norse offers it for CubaLIF nodes (``norse.torch.from_nir(graph,
reset_method=norse.torch.functional.reset.reset_subtract, dt=dt)``; its LIF import always resets
to the value). ``to_nir(net, node="cubalif")`` therefore writes the box cell as a CubaLIF with
τ_syn = dt and w_in = 1: at step dt its synaptic current is this step's input (α_s = 1), so the
node is our box cell; a simulator stepping finer than dt sees a 1-step synaptic filter instead.

**Current-based cell** (``cell="current"``): a CubaLIF with τ_syn and w_in = τ_syn/dt (our current
integrates its input unscaled, i_t = (1 − α_s) i_{t−1} + W z_{t−1} + U x_t + b). Our membrane
reads the previous step's current, v_t = (1 − α_m) v_{t−1} + α_m i_{t−1}, while Euler on NIR's
equations reads this step's: the exported node responds one step earlier than our network.

**Rate networks** export as input_weights: Affine(U, b) ─▶ rate: LI(τ = dt/α, R = 1, v_leak = 0)
─▶ readout: Affine(V, c), with recurrent: Linear(W) from the LI node back to it. NIR (1.0) has no
node for a pointwise nonlinearity: neither tanh nor ReLU nor retanh can be expressed, so the
graph is the network without φ (a linear network to any other NIR reader). φ is recorded in the
metadata (``nonlinearity``), and :func:`from_nir` restores it; the r-form cannot be told apart.

The graph's metadata also holds dt [s] and every field of the network record (``network_*``,
ms units), so :func:`from_nir` gives back the same record and weights.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from biorules.errors import InputError

NODES = ("lif", "cubalif")
"""The NIR neuron node of a LIF network (the current cell is always a CubaLIF)."""

_MS = 1e-3
"""Seconds per ms (NIR's time unit is the second)."""


def _nir():
    import nir

    return nir


def _array(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().copy() if hasattr(t, "detach") else np.array(t)


def _member(network: Any, member: int | None) -> tuple[Any, dict[str, np.ndarray]]:
    """The parameter record of one network (a member of a stack) and its weights."""
    params = network.member_params
    weights = {name: _array(getattr(network, name)) for name in ("W", "U", "b", "V", "c")}
    if network.members is None:
        if member not in (None, 0):
            raise InputError(f"member={member}: this is a single network, not a stack")
        return params[0], weights
    if member is None:
        raise InputError(f"this is a stack of {network.members} networks; choose one with member=0..{network.members - 1}")
    if not 0 <= member < network.members:
        raise InputError(f"member={member} is out of range for a stack of {network.members}")
    return params[member], {k: v[member] for k, v in weights.items()}


def _metadata(params: Any, **extra: Any) -> dict[str, Any]:
    from dataclasses import fields

    meta = {"source": "biorules", **extra}
    meta.update({f"network_{f.name}": getattr(params, f.name) for f in fields(params)})
    return meta


def to_nir(network: Any, *, member: int | None = None, node: str | None = None, readout: bool = True,
           dt: float | None = None) -> Any:
    """The NIR graph of a rate or LIF network (see the module docstring).

    ``member`` picks one network of a stack. ``node`` (LIF): ``lif`` (default for the box cell)
    or ``cubalif`` (the box cell as a CubaLIF with τ_syn = dt, for simulators that reset by
    subtraction; always for the current cell). ``readout=False`` leaves out the readout filter
    and readout, so the graph's output is the spikes (norse cannot import LI nodes). ``dt`` [ms]:
    the rate network's step, setting its τ = dt/α (default 20 ms, the tasks' default); a LIF
    network steps at its own ``dt``. A rate network warns that its nonlinearity is not in the graph.
    """
    nir = _nir()
    params, w = _member(network, member)
    n, n_in, n_out = w["W"].shape[0], w["U"].shape[1], w["V"].shape[0]
    one = np.ones(n)
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([n_in])),
                             "input_weights": nir.Affine(weight=w["U"], bias=w["b"])}
    if network.kind == "lif":
        if dt is not None and dt != params.dt:
            raise InputError(f"a LIF network steps at its own dt ({params.dt} ms); leave dt unset")
        step = params.dt
        node = node or ("cubalif" if params.cell == "current" else "lif")
        if node not in NODES:
            raise InputError(f"node must be one of {', '.join(NODES)}, got {node!r}")
        if params.cell == "current" and node != "cubalif":
            raise InputError("the current-based cell exports as a CubaLIF node (node='cubalif')")
        common = dict(r=one, v_leak=0 * one, v_threshold=params.v_th * one, v_reset=0 * one)
        if node == "lif":
            neuron = nir.LIF(tau=params.tau_mem * _MS * one, **common)
        else:
            tau_syn = params.dt if params.cell == "box" else params.tau_syn
            w_in = 1.0 if params.cell == "box" else params.tau_syn / params.dt
            neuron = nir.CubaLIF(tau_syn=tau_syn * _MS * one, tau_mem=params.tau_mem * _MS * one, w_in=w_in * one,
                                 **common)
        name, meta = "lif", _metadata(params, model="lif", dt=step * _MS, reset="subtract", node=node)
    else:
        if node is not None:
            raise InputError("node applies to LIF networks only")
        step = 20.0 if dt is None else float(dt)
        if not step > 0:
            raise InputError(f"dt must be positive, got {dt}")
        neuron = nir.LI(tau=(step / params.alpha) * _MS * one, r=one, v_leak=0 * one)
        name, meta = "rate", _metadata(params, model="rate", dt=step * _MS, nonlinearity=params.nonlinearity)
        warnings.warn(f"NIR has no node for the nonlinearity {params.nonlinearity}: the graph is the network "
                      "without it (recorded in its metadata; biorules.export.from_nir restores it)", UserWarning,
                      stacklevel=2)
    nodes[name] = neuron
    nodes["recurrent"] = nir.Linear(weight=w["W"])
    edges = [("input", "input_weights"), ("input_weights", name), (name, "recurrent"), ("recurrent", name)]
    if not readout:
        nodes["output"] = nir.Output(output_type=np.array([n]))
        edges.append((name, "output"))
    else:
        last = name
        if network.kind == "lif":
            nodes["readout_filter"] = nir.LI(tau=params.tau_out * _MS * one, r=one, v_leak=0 * one)
            edges.append((name, "readout_filter"))
            last = "readout_filter"
        nodes["readout"] = nir.Affine(weight=w["V"], bias=w["c"])
        nodes["output"] = nir.Output(output_type=np.array([n_out]))
        edges += [(last, "readout"), ("readout", "output")]
    meta["readout"] = int(readout)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write_nir(network: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Write :func:`to_nir` of ``network`` to ``path`` (HDF5) atomically; an existing file is refused."""
    nir = _nir()
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} already exists; choose another path or remove it")
    graph = to_nir(network, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------------
# back from NIR
# ------------------------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _uniform(values: Any, what: str) -> float:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(a == a[0]):
        raise InputError(f"the graph's {what} differs between neurons; biorules networks share one value")
    return float(a[0])


def _ms(seconds: float) -> float:
    return round(seconds / _MS, 9)


def _parts(graph: Any) -> dict[str, Any]:
    """The roles of a graph's nodes: neuron, input weights, recurrent weights, readout (filter)."""
    nir = _nir()
    nodes, edges = graph.nodes, [tuple(e) for e in graph.edges]
    succ = {k: [b for a, b in edges if a == k] for k in nodes}
    pred = {k: [a for a, b in edges if b == k] for k in nodes}
    neurons = [k for k, v in nodes.items() if isinstance(v, (nir.LIF, nir.CubaLIF))]
    if not neurons:  # a rate network: the leaky integrator with a recurrent loop
        neurons = [k for k, v in nodes.items() if isinstance(v, nir.LI)
                   and any(k in succ[r] for r in succ[k] if isinstance(nodes[r], (nir.Linear, nir.Affine)))]
    if len(neurons) != 1:
        raise InputError(f"the graph is not one recurrent population (found {len(neurons)} candidate neuron nodes)")
    neuron = neurons[0]
    rec = [r for r in succ[neuron] if neuron in succ[r] and isinstance(nodes[r], (nir.Linear, nir.Affine))]
    inp = [p for p in pred[neuron] if p not in rec and isinstance(nodes[p], (nir.Affine, nir.Linear))
           and any(isinstance(nodes[q], nir.Input) for q in pred[p])]
    if len(rec) != 1 or len(inp) != 1:
        raise InputError("the graph needs one input Affine (Input -> Affine -> neurons) and one recurrent Linear "
                         "(neurons -> Linear -> neurons)")
    out: dict[str, Any] = {"neuron": neuron, "recurrent": rec[0], "input": inp[0], "filter": None, "readout": None}
    after = [s for s in succ[neuron] if s not in rec and not isinstance(nodes[s], nir.Output)]
    if after:
        first = after[0]
        if isinstance(nodes[first], nir.LI):
            out["filter"] = first
            first = next((s for s in succ[first] if isinstance(nodes[s], (nir.Affine, nir.Linear))), None)
        if first is None or not isinstance(nodes[first], (nir.Affine, nir.Linear)):
            raise InputError("the graph's readout is not an Affine (after an LI filter for LIF networks)")
        out["readout"] = first
    return out


def _affine(node: Any, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    weight = np.asarray(node.weight)
    bias = np.asarray(getattr(node, "bias", None) if getattr(node, "bias", None) is not None else np.zeros(n_out))
    return weight, bias.astype(weight.dtype)


def from_nir(graph: Any, *, dt: float | None = None, nonlinearity: str | None = None, dtype: Any = None) -> Any:
    """The network of a NIR graph (or of a ``.nir`` file): :func:`to_nir` read back.

    Parameters come from the nodes (τ, v_th, weights; a neuron's R and v_leak are folded into its
    input weights and bias, exactly under forward Euler); what NIR does not carry comes from the
    graph's metadata when biorules wrote it: dt, the surrogate (γ, β), gain and seed, a rate
    network's α and nonlinearity. For other graphs give ``dt`` [ms] (default 1 ms for LIF) and,
    for a rate network, ``nonlinearity``. ``dtype`` defaults to the weights' own.
    """
    import torch

    nir = _nir()
    if isinstance(graph, (str, os.PathLike)):
        if not Path(graph).is_file():
            raise InputError(f"no NIR file at {graph}")
        graph = nir.read(graph)
    meta = {k: _plain(v) for k, v in (getattr(graph, "metadata", None) or {}).items()}
    record = {k[len("network_"):]: v for k, v in meta.items() if k.startswith("network_")}
    parts = _parts(graph)
    nodes = graph.nodes
    neuron = nodes[parts["neuron"]]
    W = np.asarray(nodes[parts["recurrent"]].weight)
    n = W.shape[0]
    U, b = _affine(nodes[parts["input"]], n)
    if parts["readout"] is not None:
        V, c = _affine(nodes[parts["readout"]], np.asarray(nodes[parts["readout"]].weight).shape[0])
    else:
        V, c = np.zeros((0, n), W.dtype), np.zeros(0, W.dtype)
    step = dt if dt is not None else (_ms(float(meta["dt"])) if "dt" in meta else None)
    # fold the neuron's R and v_leak into its drive: (v_leak − v) + R I = −v + (R I + v_leak)
    r, v_leak = np.asarray(neuron.r, dtype=np.float64), np.asarray(neuron.v_leak, dtype=np.float64)
    scale = r
    if isinstance(neuron, nir.CubaLIF):
        step = 1.0 if step is None else step
        tau_syn = _ms(_uniform(neuron.tau_syn, "tau_syn"))
        box = record.get("cell") == "box" or tau_syn == step
        alpha_s = min(step / tau_syn, 1.0)
        scale = r * np.asarray(neuron.w_in, dtype=np.float64) * (1.0 if box else alpha_s)
    if not np.all(v_leak == 0) or not np.allclose(scale, 1.0, rtol=1e-12, atol=0.0):
        fold = lambda a: (a * scale.reshape(-1, *([1] * (a.ndim - 1)))).astype(a.dtype)  # noqa: E731
        W, U, b = fold(W), fold(U), (b * scale + v_leak).astype(b.dtype)
    if isinstance(neuron, (nir.LIF, nir.CubaLIF)):
        from biorules.spiking import LIFNetwork as cls
        from biorules.spiking import LIFParams

        if not np.all(np.asarray(neuron.v_reset) == 0):
            raise InputError("the graph's neurons reset to v_reset != 0; biorules LIF neurons reset by "
                             "subtraction from v_leak = v_reset = 0")
        tau = neuron.tau if isinstance(neuron, nir.LIF) else neuron.tau_mem
        values: dict[str, Any] = {k: v for k, v in record.items() if k in ("surrogate", "gamma", "beta", "gain", "seed")}
        values.update(n=n, n_in=U.shape[1], n_out=V.shape[0], dt=1.0 if step is None else step,
                      tau_mem=_ms(_uniform(tau, "tau_mem")), v_th=_uniform(neuron.v_threshold, "v_threshold"))
        if isinstance(neuron, nir.CubaLIF):
            values["cell"] = "box" if box else "current"
            values["tau_syn"] = record.get("tau_syn", 5.0) if box else tau_syn
        else:
            values["tau_syn"] = record.get("tau_syn", 5.0)
        if parts["filter"] is not None:
            li = nodes[parts["filter"]]
            if not (np.all(np.asarray(li.r) == 1) and np.all(np.asarray(li.v_leak) == 0)):
                raise InputError("the readout filter must have R = 1 and v_leak = 0")
            values["tau_out"] = _ms(_uniform(li.tau, "readout tau"))
        elif "tau_out" in record:
            values["tau_out"] = record["tau_out"]
        params = LIFParams(**values)
    else:
        from biorules.network import NetworkParams
        from biorules.network import RateRNN as cls

        phi = nonlinearity or record.get("nonlinearity") or meta.get("nonlinearity")
        if phi is None:
            raise InputError("the graph does not say its nonlinearity (NIR has no node for one); pass nonlinearity=")
        if step is None:
            raise InputError("the graph does not say its time step; pass dt= (ms)")
        tau = _ms(_uniform(neuron.tau, "tau"))
        alpha = record["alpha"] if "alpha" in record and np.isclose(record["alpha"], step / tau) else step / tau
        values = {k: v for k, v in record.items() if k in ("gain", "init", "sparsity", "seed")}
        values.update(n=n, n_in=U.shape[1], n_out=V.shape[0], alpha=alpha, nonlinearity=phi)
        params = NetworkParams(**values)
    torch_dtype = getattr(torch, str(dtype or W.dtype).replace("torch.", ""))
    net = cls(params, dtype=torch_dtype)
    with torch.no_grad():
        for name, value in (("W", W), ("U", U), ("b", b), ("V", V), ("c", c)):
            getattr(net, name).copy_(torch.as_tensor(value, dtype=torch_dtype))
    return net
