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


@pytest.fixture
def triton_interpreted():
    """Run tests/segment/triton_interpreted.py under TRITON_INTERPRET=1 (the Triton kernels on the
    CPU); return its table of errors against the float64 references."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "segment" / "triton_interpreted.py"

    def run(which: str) -> list[dict]:
        env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, str(script), which], capture_output=True, text=True, env=env,
                             cwd=script.parents[2], timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    return run
