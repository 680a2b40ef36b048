"""Trained networks as results: their weights next to the curves, and back to a network.

Every run records its parameters before the first update (stage ``initial``: W₀, U₀, b₀, V₀, c₀)
and after the last (stage ``final``), as variables of the Dataset :func:`biorules.train.train`
returns:

    W (stage, post, pre)      recurrent weights (row = postsynaptic unit)
    U (stage, post, input)    input weights
    b (stage, post)           bias (rate) or bias current (LIF)
    V (stage, output, pre)    readout weights
    c (stage, output)         readout bias
    mask (post, pre)          the fixed 0/1 mask of the ``sparse`` scheme (only when there is one)
    a0 (stage, post)          the learned initial pre-activation a_0 (only with ``learn_a0``)

A stack adds a leading ``member`` dim, a sweep its cell dims. Values keep the network's dtype
(float32 by default), so a reloaded network computes bit for bit what the trained one computed.
Each variable carries ``store_group = "weights"``: :func:`biorules.store.save` (and the region
writers) put it into the store's ``weights`` group, so the store's root holds the curves and
scores as before and ``xr.open_zarr(path, group="weights")`` the weights. ``W`` also carries the
network record: ``model`` (``rate`` or ``lif``) and ``network_<field>`` for every field of
:class:`~biorules.network.NetworkParams` or :class:`~biorules.spiking.LIFParams` (a stack's gain
and seed are its coords instead); for LIF also its reset: ``reset = "subtract"`` (v ← ṽ − v_th
after a spike), ``v_reset = 0``, ``v_leak = 0``.

Size: 2 (N² + N n_in + N + n_out N + n_out) values per network, 4 bytes each in float32
(:func:`weights_nbytes`): 36.4 kB for N = 64 and a 3-input, 3-output task, 331 kB for N = 200,
before compression (zarr's default compressor saves little on trained weights).

:func:`load_network` turns a store (or a Dataset) back into a network ready to run or to measure;
:func:`reproduce` recomputes a training run's final scores and spectra from its stored weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import numpy as np
import xarray as xr

from biorules.errors import InputError

GROUP = "weights"
"""The store group that holds the weight variables."""

STAGES = ("initial", "final")
"""Coordinate of the ``stage`` dim: before the first update and after the last."""

DIMS = {"W": ("post", "pre"), "U": ("post", "input"), "b": ("post",), "V": ("output", "pre"), "c": ("output",)}
"""The dims of every weight variable (after the leading cell/member dims and ``stage``)."""

A0_DIMS = ("post",)
"""The dims of the learned a_0 (``a0``), stored only when the network learns it."""

WEIGHT_VARS = (*DIMS, "mask", "a0")
"""Names of the weight variables (``mask`` only for the sparse scheme, ``a0`` only with a learned a_0)."""

_UNITS = {"rate": {"W": "1", "U": "1", "b": "1", "V": "1", "c": "1"},
          "lif": {"W": "voltage", "U": "voltage", "b": "voltage", "V": "1", "c": "1"}}
_LONG_NAMES = {"W": "recurrent weights (row = postsynaptic)", "U": "input weights", "b": "bias",
               "V": "readout weights", "c": "readout bias"}
_CELL_FREE = {"stage", "post", "pre", "input", "output", "member"}


def _numpy(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _kind(params: Any) -> str:
    return "lif" if hasattr(params, "tau_mem") else "rate"


def network_weights(network: Any) -> dict[str, np.ndarray]:
    """A copy of a network's parameters (W, U, b, V, c and the sparse mask, if any) as numpy
    arrays in the network's dtype (a stack's keep their leading member axis)."""
    out = {name: _numpy(getattr(network, name)).copy() for name in DIMS}
    if getattr(network, "a0", None) is not None:
        out["a0"] = _numpy(network.a0).copy()
    mask = getattr(network, "mask", None)
    if mask is not None:
        out["mask"] = _numpy(mask).astype(np.int8)
    return out


def network_attrs(params: Any, stacked: bool = False) -> dict[str, Any]:
    """``model`` and ``network_<field>`` of a parameter record (without gain and seed for a stack,
    whose coords hold them); for LIF also its reset semantics."""
    from biorules.train import _attr

    attrs: dict[str, Any] = {"model": _kind(params)}
    attrs.update({f"network_{f.name}": _attr(getattr(params, f.name)) for f in fields(params)
                  if not (stacked and f.name in ("gain", "seed"))})
    if attrs["model"] == "lif":
        attrs.update(reset="subtract", v_reset=0.0, v_leak=0.0)
    return attrs


def weights_dataset(initial: Mapping[str, Any], final: Mapping[str, Any], params: Any = None) -> xr.Dataset:
    """The weight variables of one network or a stack (see the module docstring).

    ``initial`` and ``final`` map W, U, b, V, c (and optionally mask) to arrays, numpy or torch,
    e.g. :func:`network_weights` before and after training; a leading member axis (W of
    shape (S, N, N)) becomes the ``member`` dim. ``params`` is the network's parameter record
    (:class:`~biorules.network.NetworkParams` or :class:`~biorules.spiking.LIFParams`; one member's
    for a stack), recorded on ``W`` so :func:`load_network` can rebuild the network.
    """
    W = _numpy(initial["W"])
    stacked = W.ndim == 3
    lead = ("member",) if stacked else ()
    kind = _kind(params) if params is not None else "rate"
    data = {}
    for name, dims in DIMS.items():
        values = np.stack([_numpy(initial[name]), _numpy(final[name])], axis=len(lead))
        attrs = {"units": _UNITS[kind][name], "long_name": _LONG_NAMES[name], "store_group": GROUP}
        if name == "W" and params is not None:
            attrs.update(network_attrs(params, stacked))
        data[name] = xr.Variable(lead + ("stage",) + dims, values, attrs)
    if "a0" in final:
        data["a0"] = xr.Variable(lead + ("stage",) + A0_DIMS,
                                 np.stack([_numpy(initial["a0"]), _numpy(final["a0"])], axis=len(lead)),
                                 {"units": "1", "long_name": "learned initial pre-activation a_0", "store_group": GROUP})
    if "mask" in final:
        data["mask"] = xr.Variable(lead + DIMS["W"], _numpy(final["mask"]).astype(np.int8),
                                   {"units": "1", "long_name": "fixed connection mask (sparse scheme)",
                                    "store_group": GROUP})
    return xr.Dataset(data, coords={"stage": ("stage", np.array(STAGES, dtype=object),
                                              {"long_name": "before the first update / after the last"})})


def weights_nbytes(n: int, n_in: int, n_out: int, dtype: str = "float32") -> int:
    """Bytes of one network's weights, both stages, uncompressed (the mask not counted)."""
    values = n * n + n * n_in + n + n_out * n + n_out
    return 2 * values * np.dtype(dtype).itemsize


def weights_template(params: Any, cells: Mapping[str, Any], dtype: str = "float32") -> xr.Dataset:
    """NaN weight variables for a grid store: dims ``(*cells, stage, ...)``, coords ``cells``.

    ``cells`` maps each cell dim to its coordinate values (e.g. ``{"gain": gains, "rule": rules,
    ...}``); ``params`` gives N, n_in and n_out and the network record on ``W`` (without gain and
    seed, which are cells). A cell's region is then written with the cell's weight variables, e.g.
    ``ds[list(DIMS)]`` of the run's Dataset; :func:`weights_nbytes` is its size. Grids over tasks
    of different n_in or n_out pad ``input`` or ``output`` to the largest with NaN;
    :func:`load_network` drops the trailing all-NaN entries.
    """
    sizes = {"post": params.n, "pre": params.n, "input": params.n_in, "output": params.n_out}
    lead = tuple(cells)
    shape = tuple(len(np.atleast_1d(v)) for v in cells.values())
    data = {}
    for name, dims in DIMS.items():
        attrs = {"units": _UNITS[_kind(params)][name], "long_name": _LONG_NAMES[name], "store_group": GROUP}
        if name == "W":
            attrs.update(network_attrs(params, stacked=True))
        data[name] = xr.Variable(lead + ("stage",) + dims,
                                 np.full(shape + (2,) + tuple(sizes[d] for d in dims), np.nan, dtype=dtype), attrs)
    if getattr(params, "learn_a0", False):
        data["a0"] = xr.Variable(lead + ("stage",) + A0_DIMS, np.full(shape + (2, params.n), np.nan, dtype=dtype),
                                 {"units": "1", "long_name": "learned initial pre-activation a_0", "store_group": GROUP})
    coords = {d: (d, np.asarray(v, dtype=object if isinstance(np.atleast_1d(v)[0], str) else None))
              for d, v in cells.items()}
    coords["stage"] = ("stage", np.array(STAGES, dtype=object), {"long_name": "before the first update / after the last"})
    return xr.Dataset(data, coords=coords)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def _is_path(store: Any) -> bool:
    return isinstance(store, (str, os.PathLike))


def open_weights(store: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    """The weight variables of a store (its ``weights`` group, lazily) or of a result Dataset."""
    from biorules import store as stores

    if _is_path(store):
        stores.open_store(store)  # one of ours, of this schema version
        if GROUP not in stores.store_groups(store):
            raise InputError(f"{store} holds no weights (it has no '{GROUP}' group); it was written without them "
                             "(a sweep without --save-weights, or an older biorules)")
        return stores.open_store(store, group=GROUP)
    names = [v for v in WEIGHT_VARS if v in store.data_vars]
    if "W" not in names:
        raise InputError("this Dataset holds no weights (no variable W)")
    return store[names]


def _select(ds: xr.Dataset, cell: Mapping[str, Any]) -> xr.Dataset:
    """``ds`` at one cell: index dims by label, plain dims by position, other coords by value."""
    for key, value in cell.items():
        if key in ds.indexes:
            labels = np.asarray(ds.indexes[key].values)
            try:
                hits = np.flatnonzero(np.isclose(labels.astype(float), float(value), rtol=1e-9, atol=0.0)
                                      if np.issubdtype(labels.dtype, np.number) else labels.astype(str) == str(value))
            except (TypeError, ValueError):
                hits = np.array([], dtype=int)
            if len(hits) != 1:
                raise InputError(f"no cell with {key}={value!r}; the store has {key} = {', '.join(map(str, labels))}")
            ds = ds.isel({key: int(hits[0])})
        elif key in ds.dims:
            if not 0 <= int(value) < ds.sizes[key]:
                raise InputError(f"{key}={value} is out of range; the store has {ds.sizes[key]} of them (0-based)")
            ds = ds.isel({key: int(value)})
        elif key in ds.coords and ds[key].ndim == 1:
            coord = ds[key].values
            hits = np.flatnonzero(np.isclose(coord.astype(float), float(value)) if np.issubdtype(coord.dtype, np.number)
                                  else coord == value)
            if len(hits) != 1:
                raise InputError(f"{len(hits)} cells have {key}={value!r}; the store has {key} = "
                                 f"{', '.join(map(str, coord))}" + ("; give another coordinate too" if len(hits) else ""))
            ds = ds.isel({ds[key].dims[0]: int(hits[0])})
        else:
            cells = [d for d in ds.dims if d not in _CELL_FREE] + (["member"] if "member" in ds.dims else [])
            raise InputError(f"unknown cell coordinate {key!r}; select with " + (", ".join(cells) or "nothing (one network)"))
    left = [d for d in ds.dims if d not in _CELL_FREE]
    if left:
        sizes = ", ".join(f"{d} ({ds.sizes[d]})" for d in left)
        raise InputError(f"the store holds several networks; select one cell by {sizes}, e.g. "
                         + ", ".join(f"{d}={ds[d].values[0]!r}" if d in ds.coords else f"{d}=0" for d in left))
    return ds


def _trim(values: np.ndarray, axis: int) -> np.ndarray:
    """Drop trailing entries along ``axis`` that are NaN everywhere (a grid padded to its largest task)."""
    other = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
    keep = ~np.isnan(values).all(axis=other) if values.size else np.ones(values.shape[axis], bool)
    n = int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 0
    return np.take(values, np.arange(n), axis=axis)


def _params(attrs: Mapping[str, Any], sizes: dict[str, int]) -> Any:
    """The parameter record named by the attrs on ``W``, with the stored sizes."""
    model = attrs.get("model")
    if model == "lif":
        from biorules.spiking import LIFParams as cls
    elif model == "rate":
        from biorules.network import NetworkParams as cls
    else:
        raise InputError("the weights carry no network record (attrs model and network_* on W)")
    names = {f.name for f in fields(cls)}
    values = {k[len("network_"):]: v for k, v in attrs.items() if k.startswith("network_") and k[len("network_"):] in names}
    values = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}
    return cls(**{**values, **sizes})


def load_network(store: str | os.PathLike | xr.Dataset, *, stage: str = "final", dtype: Any = None,
                 device: str = "cpu", **cell: Any) -> Any:
    """The network (rate or LIF) stored in ``store``, ready to run or to measure.

    ``store`` is a store path (its ``weights`` group) or a Dataset from :func:`biorules.train.train`
    or an in-memory sweep. ``cell`` selects one network of a grid or a stack: index dims by label
    (``gain=1.5, rule="eprop", seed=0``), the ``member`` dim by position, a stack's ``gain``/``seed``
    coords by value; a stack left unselected comes back as a stack. ``stage`` is ``final`` (after
    training) or ``initial`` (W₀). ``dtype`` defaults to the stored one. Running it on the run's
    task, or measuring it with :func:`biorules.lyapunov.spectrum`, gives the stored numbers
    (:func:`reproduce` does both for a training run); a member of a stacked run gives them to rounding.
    """
    import torch

    if stage not in STAGES:
        raise InputError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    ds = _select(open_weights(store), cell)
    mask = ds["mask"].values if "mask" in ds else None
    ds = ds.sel(stage=stage)
    values = {name: ds[name].values for name in DIMS}
    if "a0" in ds:
        values["a0"] = ds["a0"].values
    stacked = "member" in ds.dims
    lead = 1 if stacked else 0
    values["U"] = _trim(values["U"], lead + 1)
    values["V"], values["c"] = _trim(values["V"], lead), _trim(values["c"], lead)
    values["V"] = values["V"][..., : values["c"].shape[-1], :]
    if not all(np.isfinite(v).all() for v in values.values()):
        status = ""
        if _is_path(store):
            from biorules import store as stores

            root = _select(stores.open_store(store)[["status"]], cell)
            names = {v: k for k, v in stores.STATUS.items()}
            status = f" (status {', '.join(sorted({names.get(int(s), str(s)) for s in np.atleast_1d(root.status.values)}))})"
        raise InputError(f"the selected network has no finite {stage} weights{status}")
    n, n_in, n_out = values["W"].shape[-1], values["U"].shape[-1], values["c"].shape[-1]
    base = _params(ds["W"].attrs, {"n": n, "n_in": n_in, "n_out": n_out})
    members = []
    from biorules.train import seeds as master_seeds

    for s in range(ds.sizes["member"]) if stacked else [None]:
        at = ds.isel(member=s) if stacked else ds
        extra = {}
        if "gain" in at.coords and at["gain"].ndim == 0:
            extra["gain"] = float(at["gain"])
        if "seed" in at.coords and at["seed"].ndim == 0:
            extra["seed"] = master_seeds(int(at["seed"]))["network"]
        members.append(replace(base, **extra))
    torch_dtype = getattr(torch, str(dtype or values["W"].dtype).replace("torch.", ""))
    if base.__class__.__name__ == "LIFParams":
        from biorules.spiking import LIFNetwork as cls
    else:
        from biorules.network import RateRNN as cls
    net = cls(tuple(members) if stacked else members[0], dtype=torch_dtype)
    with torch.no_grad():
        for name, v in values.items():
            p = getattr(net, name)
            if tuple(p.shape) != v.shape:
                raise InputError(f"stored {name} has shape {v.shape}, the network expects {tuple(p.shape)}")
            p.copy_(torch.as_tensor(v, dtype=torch_dtype))
        if mask is not None and getattr(net, "mask", None) is not None:
            net.mask.copy_(torch.as_tensor(mask, dtype=torch_dtype))
    return net.to(device)


# ------------------------------------------------------------------------------------------------
# a training run, again
# ------------------------------------------------------------------------------------------------


def train_config(attrs: Mapping[str, Any], task: Any = None) -> Any:
    """The :class:`~biorules.train.TrainConfig` of a training run, from its ``config`` attr.

    ``task``: the task object for a run trained on one (the config records only its name).
    """
    from biorules.flossing import FlossConfig, FlossSchedule
    from biorules.network import NetworkParams
    from biorules.spiking import LIFParams
    from biorules.tasks import TASKS
    from biorules.train import TrainConfig

    text = attrs.get("config")
    try:
        raw = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        raw = None
    if not isinstance(raw, dict) or "rule" not in raw or "model" not in raw:
        raise InputError("this is not the result of a training run (no TrainConfig in its config attr)")
    records = {c.__name__: c for c in (NetworkParams, LIFParams, FlossConfig, FlossSchedule)}

    def build(v: Any) -> Any:
        if isinstance(v, dict) and v.get("type") in records:
            cls = records[v["type"]]
            return cls(**{k: build(x) for k, x in v.items() if k != "type"})
        return v

    known = {f.name: f for f in fields(TrainConfig)}
    values = {k: build(v) for k, v in raw.items() if k in known}
    for name in ("gains", "seeds", "conditions"):
        if name in values:
            values[name] = tuple(values[name])
    if task is not None:
        values["task"], values["task_options"] = task, {}
    elif values.get("task") not in TASKS:
        raise InputError(f"the run was trained on the task object {values.get('task')!r}; pass it as task=")
    return TrainConfig(**values)


def reproduce(store: str | os.PathLike | xr.Dataset, *, task: Any = None) -> xr.Dataset:
    """A training run's final scores and spectra recomputed from its stored final weights.

    ``store``: a ``biorules train`` store or a Dataset from :func:`biorules.train.train` (single
    or stack). The run's own monitoring batch, test trials and spectrum seeds are rebuilt from its
    config, so ``final_loss``, ``final_accuracy``, ``test_loss``, ``test_accuracy``,
    ``lambda_after`` and ``lambda_after_sem`` equal the stored ones exactly for every finished
    member. ``task``: the task object, for a run trained on one.
    """
    import torch

    from biorules import store as stores
    from biorules.train import _Run

    root = stores.open_store(store) if _is_path(store) else store
    cfg = train_config(root.attrs, task)
    net = load_network(store)
    run = _Run(cfg, None, False)
    with torch.no_grad():
        for name in DIMS:
            getattr(run.net, name).copy_(getattr(net, name).to(getattr(run.net, name)))
    final_loss, final_acc = run._evaluate(run._batch(int(cfg.eval_batch), [s["eval"] for s in run.streams]))
    test_loss, test_acc = run._evaluate(run._batch(int(cfg.test_batch), [s["test"] for s in run.streams]))
    lam, sem = run._spectra()
    lead = ("member",) if cfg.stacked else ()
    take = (lambda a: a) if cfg.stacked else (lambda a: a[0])  # noqa: E731
    out = xr.Dataset({
        "final_loss": (lead, take(final_loss)), "final_accuracy": (lead, take(final_acc)),
        "test_loss": (lead, take(test_loss)), "test_accuracy": (lead, take(test_acc)),
        "lambda_after": (lead + ("condition", "exponent"), take(lam)),
        "lambda_after_sem": (lead + ("condition", "exponent"), take(sem)),
    })
    return out.assign_coords({k: root[k] for k in ("condition", "exponent") if k in root.coords})
