"""Flossing moves λ_max of N = 200 networks toward the target, measured by the numba estimator."""

from __future__ import annotations

import pytest

from biorules.experiments.floss_study import floss_untrained
from biorules.flossing import FlossConfig
from biorules.network import NetworkParams


@pytest.mark.slow
@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_exact_reaches_target_within_005_per_tau(gain):
    ds = floss_untrained(NetworkParams(n=200, gain=gain, seed=0), FlossConfig(mode="exact", n_exponents=1), 100)
    assert abs(float(ds.lambda_after[0])) < 0.05
    assert abs(float(ds.lambda_before[0])) > 0.05  # there was something to do


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local", "eprop"])
@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_local_and_eprop_halve_the_distance(mode, gain):
    ds = floss_untrained(NetworkParams(n=200, gain=gain, seed=0), FlossConfig(mode=mode, n_exponents=1), 150)
    assert abs(float(ds.lambda_after[0])) < 0.5 * abs(float(ds.lambda_before[0]))
