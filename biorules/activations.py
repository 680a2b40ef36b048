"""Nonlinearities φ with their first and second derivatives (docs/model.md, "Nonlinearities").

| name     | φ              | φ'                  | φ''                         |
|----------|----------------|---------------------|-----------------------------|
| tanh     | tanh a         | 1 − tanh² a         | −2 tanh a (1 − tanh² a)     |
| retanh   | max(0, tanh a) | 1[a>0](1 − tanh² a) | 1[a>0] · (tanh's φ'')       |
| relu     | max(0, a)      | 1[a>0]              | 0                           |

Rectifiers use φ'(0) = 0. Every function works on numpy arrays and torch tensors alike, so the
numpy simulator, the torch modules and the learning rules share one definition. ``dphi_h`` is φ'
written in terms of h = φ(a) (1 − h² for tanh; 1[h>0] marks a > 0 for the rectifiers): the same
numbers as ``dphi(a)`` to the bit, without evaluating φ a second time where h is at hand;
``d2phi_h`` is φ'' likewise (−2h(1 − h²); 0 for relu).

**tanh in float32 on the CPU.** torch's float32 tanh costs 2.1 ns an element on the CPUs we
measured, and in a stack of small networks it was a third of a step; numpy's vectorised float32
tanh takes 0.2 ns for the same result within 1.4 ulp (torch's: 0.5 ulp). On float32 CPU tensors of
at least :data:`FAST_TANH_MIN` elements tanh is therefore numpy's, computed on the tensor's memory
(no copy in, one array out); its gradient is (1 − tanh² a) at that value, as torch's. float64 (the
reference precision of the tests), other devices and smaller tensors use torch's tanh.
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


FAST_TANH_MIN = 512
"""Elements from which a float32 CPU tensor takes numpy's tanh (below, the call into numpy costs
more than torch's own loop) [1]."""


def _tanh_numpy(a):
    """numpy's float32 tanh of a CPU tensor, as a tensor; no autograd."""
    import torch

    return torch.from_numpy(np.tanh(a.detach().numpy()))


_TANH_FN = None


def _tanh_function():
    """The autograd Function of numpy's tanh: backward grad·(1 − y²), as torch's tanh."""
    global _TANH_FN
    if _TANH_FN is None:
        import torch

        class _Tanh(torch.autograd.Function):
            @staticmethod
            def forward(ctx, a):
                y = _tanh_numpy(a)
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx, grad):
                (y,) = ctx.saved_tensors
                return torch.ops.aten.tanh_backward(grad, y)

        _TANH_FN = _Tanh
    return _TANH_FN


def tanh(a):
    lib = _lib(a)
    if lib is np or a.dtype != lib.float32 or a.device.type != "cpu" or a.numel() < FAST_TANH_MIN:
        return lib.tanh(a)
    if lib.is_grad_enabled() and a.requires_grad:
        return _tanh_function().apply(a)
    return _tanh_numpy(a)


def dtanh(a):
    t = tanh(a)
    return 1.0 - t * t


def d2tanh(a):
    t = tanh(a)
    return -2.0 * t * (1.0 - t * t)


def dtanh_h(h):
    return 1.0 - h * h


def d2tanh_h(h):
    return -2.0 * h * dtanh_h(h)


def retanh(a):
    return _positive(a) * tanh(a)


def dretanh(a):
    return _positive(a) * dtanh(a)


def d2retanh(a):
    return _positive(a) * d2tanh(a)


def dretanh_h(h):
    return _positive(h) * dtanh_h(h)


def relu(a):
    return _positive(a) * a


def drelu(a):
    return _positive(a)


def d2relu(a):
    return 0.0 * a


def d2retanh_h(h):
    return _positive(h) * d2tanh_h(h)  # h = 0 exactly where a ≤ 0


class Nonlinearity(NamedTuple):
    """φ, φ' and φ'' of one nonlinearity; ``name`` is its CLI and attrs name."""

    name: str
    phi: Any
    dphi: Any
    d2phi: Any
    dphi_h: Any
    """φ' as a function of h = φ(a): dphi_h(phi(a)) == dphi(a)."""
    d2phi_h: Any
    """φ'' as a function of h = φ(a): d2phi_h(phi(a)) == d2phi(a)."""


_TABLE = {
    "tanh": Nonlinearity("tanh", tanh, dtanh, d2tanh, dtanh_h, d2tanh_h),
    "retanh": Nonlinearity("retanh", retanh, dretanh, d2retanh, dretanh_h, d2retanh_h),
    "relu": Nonlinearity("relu", relu, drelu, d2relu, drelu, d2relu),
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
