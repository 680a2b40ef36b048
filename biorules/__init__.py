"""biorules: recurrent networks, biologically plausible learning rules, Lyapunov spectra.

From Python (every name is imported on first use, so ``import biorules`` stays cheap)::

    import biorules
    ds = biorules.train(task="2af", rule="eprop", updates=400)      # one run -> Dataset
    net = biorules.load_network(ds)                                  # the trained network
    grid = biorules.sweep(gains=(0.5, 1.0, 1.5), seeds=(0,), out=None)  # a gain study, in memory
    scan = biorules.lyapunov_scan(gains=(0.5, 1.0, 1.5))             # spectra over g, in memory
    root = biorules.open_store("results/sweep.zarr")                 # a store, lazily

``biorules.train`` is both the submodule (``from biorules.train import TrainConfig``) and the
function :func:`biorules.train.train`. Results of these calls, and stores they create, record the
call itself in their ``command`` attr (not the interpreter's ``-c``). Submodules (``biorules.network``, ``biorules.lyapunov``, ...) are
imported on demand.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "train", "sweep", "lyapunov_scan", "open_store", "load_network"]

_LAZY = {"open_store": ("biorules.store", "open_store"), "load_network": ("biorules.weights", "load_network")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name == "train":  # the submodule, which is also callable (biorules.train(...))
        return importlib.import_module("biorules.train")
    raise AttributeError(f"module 'biorules' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def call_text(function: str, args: tuple = (), kwargs: dict | None = None) -> str:
    """``function(arg, ..., key=value, ...)`` as Python source (reprs of the arguments)."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return f"{function}({', '.join(parts)})"


def record_call(result: Any, text: str) -> Any:
    """Set the ``command`` attr of a result Dataset, or of the root of a store, to ``text``.

    The provenance attrs record ``sys.argv``, which from Python is the interpreter's (``-c``, a
    notebook kernel's); the calls of this module record themselves instead.
    """
    if hasattr(result, "attrs"):
        result.attrs["command"] = text
        return result
    import zarr

    zarr.open_group(str(result), mode="r+").attrs["command"] = text
    return result


def sweep(config: Any = None, out: Any = None, **options: Any) -> Any:
    """The gain study (:func:`biorules.experiments.sweep.run`) from Python.

    ``config`` is a :class:`~biorules.experiments.sweep.SweepConfig`, or give its fields as
    keywords (``gains=(0.5, 1.0), rules=("eprop",)``); the remaining keywords (``workers``,
    ``stack``, ``progress``, ...) go to ``run``. ``out=None`` runs in memory: the cells are
    written into a temporary store, which is read back and removed, so the Dataset equals the
    stored sweep's. With ``out`` the store is created or resumed as from the CLI. Either way the
    result is loaded, with every group's variables (:func:`biorules.store.open_all`).
    """
    from biorules.experiments import sweep as study

    return _grid(study, study.SweepConfig, "biorules.sweep", config, out, options)


def lyapunov_scan(config: Any = None, out: Any = None, **options: Any) -> Any:
    """Spectra over a grid of gains and seeds (:func:`biorules.experiments.gain_scan.run`).

    ``config`` is a :class:`~biorules.experiments.gain_scan.LyapunovScanConfig`, or give its
    fields as keywords (``gains=(0.5, 1.0), seeds=(0, 1), network=NetworkParams(n=64)``);
    ``progress`` goes to ``run``. ``out=None`` runs in memory (as :func:`sweep`).
    """
    from biorules.experiments import gain_scan

    return _grid(gain_scan, gain_scan.LyapunovScanConfig, "biorules.lyapunov_scan", config, out, options)


def _grid(module: Any, config_cls: type, name: str, config: Any, out: Any, options: dict) -> Any:
    import dataclasses
    import inspect
    import tempfile
    from pathlib import Path

    from biorules.errors import InputError

    call = {"config": config, "out": out, **options} if config is not None else {"out": out, **options}
    if config is None:
        fields = {f.name for f in dataclasses.fields(config_cls)}
        config = config_cls(**{k: v for k, v in options.items() if k in fields})
        options = {k: v for k, v in options.items() if k not in fields}
    run_options = set(inspect.signature(module.run).parameters) - {"config", "out"}
    unknown = sorted(set(options) - run_options)
    if unknown:
        raise InputError(f"{name} got unknown option(s) {', '.join(unknown)}; "
                         f"it takes the fields of {config_cls.__name__} and {', '.join(sorted(run_options))}")
    from biorules.store import open_all

    text = call_text(name, (), call)
    if out is not None:
        created = not Path(out).exists()
        module.run(config, out, **options)
        if created:
            record_call(out, text)
        return open_all(out).load()
    with tempfile.TemporaryDirectory(prefix="biorules-") as tmp:
        path = Path(tmp) / "grid.zarr"
        module.run(config, path, **options)
        return record_call(open_all(path).load(), text)
