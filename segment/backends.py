"""Backend choice shared by the ops that have a fused Triton path (``segment.wkv``, ``segment.dwconv``).

Each op has a plain-torch backend that runs everywhere and a ``triton`` backend that needs CUDA
and an importable Triton; ``auto`` takes Triton for CUDA tensors when it imports.
"""

from __future__ import annotations

import functools
import importlib

import torch

from biorules.errors import InputError


@functools.cache
def _importable(module: str) -> bool:
    try:
        importlib.import_module(f"segment.{module}")
    except ImportError:
        return False
    return True


@torch.compiler.assume_constant_result
def triton_kernels_available(module: str) -> bool:
    """True when the kernel module ``segment.<module>`` imports (Triton installed) and CUDA is present.

    torch.compile runs it at trace time and keeps the answer as a constant instead of tracing the
    import (a graph break at every fused op of a compiled model)."""
    return _importable(module) and torch.cuda.is_available()


def resolve(backend: str, device: torch.device, *, choices: tuple[str, ...], fallback: str, what: str,
            module: str) -> str:
    """Validate ``backend`` against ``choices`` and map ``auto`` to ``triton`` (CUDA tensors, kernels
    importable from ``segment.<module>``) or ``fallback``."""
    if backend not in choices:
        raise InputError(f"unknown {what} backend {backend!r}; choose from {', '.join(choices)}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_kernels_available(module) else fallback
    return backend
