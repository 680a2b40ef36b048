"""Shared fixtures and markers."""

from __future__ import annotations

import importlib.util

import pytest


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


requires_cuda = pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
requires_triton = pytest.mark.skipif(not _has("triton"), reason="needs triton")
requires_dask = pytest.mark.skipif(not _has("distributed"), reason="needs dask.distributed")
requires_lyapynov = pytest.mark.skipif(not _has("lyapynov"), reason="needs lyapynov")


def pytest_configure(config):
    """One torch thread: the tests use small tensors, and idle OpenMP threads only contend."""
    import torch

    torch.set_num_threads(1)
