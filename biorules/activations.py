"""Nonlinearities φ with their first and second derivatives (docs/model.md, "Nonlinearities").

| name     | φ              | φ'                  | φ''                         |
|----------|----------------|---------------------|-----------------------------|
| tanh     | tanh a         | 1 − tanh² a         | −2 tanh a (1 − tanh² a)     |
| retanh   | max(0, tanh a) | 1[a>0](1 − tanh² a) | 1[a>0] · (tanh's φ'')       |
| relu     | max(0, a)      | 1[a>0]              | 0                           |

Rectifiers use φ'(0) = 0. Every function works on numpy arrays and torch tensors alike, so the
numpy simulator, the torch modules and the learning rules share one definition.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

NONLINEARITIES = ("tanh", "retanh", "relu")
CODES = {name: i for i, name in enumerate(NONLINEARITIES)}  # integer codes for numba kernels


def _lib(a: Any):
    if isinstance(a, np.ndarray | np.generic | float | int):
        return np
    import torch

    return torch


def _positive(a: Any):
    return (a > 0).astype(a.dtype) if isinstance(a, np.ndarray | np.generic) else (a > 0).to(a.dtype)


def tanh(a):
    return _lib(a).tanh(a)


def dtanh(a):
    t = _lib(a).tanh(a)
    return 1.0 - t * t


def d2tanh(a):
    t = _lib(a).tanh(a)
    return -2.0 * t * (1.0 - t * t)


def retanh(a):
    return _positive(a) * _lib(a).tanh(a)


def dretanh(a):
    return _positive(a) * dtanh(a)


def d2retanh(a):
    return _positive(a) * d2tanh(a)


def relu(a):
    return _positive(a) * a


def drelu(a):
    return _positive(a)


def d2relu(a):
    return 0.0 * a


class Nonlinearity(NamedTuple):
    """φ, φ' and φ'' of one nonlinearity; ``name`` is its CLI and attrs name."""

    name: str
    phi: Any
    dphi: Any
    d2phi: Any


_TABLE = {
    "tanh": Nonlinearity("tanh", tanh, dtanh, d2tanh),
    "retanh": Nonlinearity("retanh", retanh, dretanh, d2retanh),
    "relu": Nonlinearity("relu", relu, drelu, d2relu),
}


def get(name: str) -> Nonlinearity:
    """The nonlinearity called ``name`` (one of :data:`NONLINEARITIES`)."""
    from biorules.errors import InputError

    try:
        return _TABLE[name]
    except KeyError:
        raise InputError(
            f"unknown nonlinearity {name!r}; choose one of {', '.join(NONLINEARITIES)}"
        ) from None
