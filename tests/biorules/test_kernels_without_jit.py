"""The numba kernels stay valid Python: rerun the Lyapunov tests with NUMBA_DISABLE_JIT=1.

That run covers the single and the stacked kernels (``prange`` is then a plain ``range``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_lyapunov_tests_pass_with_jit_disabled():
    here = Path(__file__).parent
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not jit_heavy",
         str(here / "test_lyapunov.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout
