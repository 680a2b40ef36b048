"""Nonlinearities (docs/model.md, "Nonlinearities"): φ' from h, and tanh's float32 CPU form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biorules import activations
from biorules.activations import FAST_TANH_MIN, NONLINEARITIES


@pytest.mark.parametrize("name", NONLINEARITIES)
@pytest.mark.parametrize("size", [50, 4 * FAST_TANH_MIN])
def test_derivatives_from_h_are_those_of_a_to_the_bit(name, size):
    nl = activations.get(name)
    a = np.random.default_rng(0).standard_normal(size) * 3
    a[:3] = 0.0, -0.0, 1e-30
    np.testing.assert_array_equal(nl.dphi_h(nl.phi(a)), nl.dphi(a))
    np.testing.assert_array_equal(nl.d2phi_h(nl.phi(a)), nl.d2phi(a))
    for dtype in (torch.float32, torch.float64):
        t = torch.as_tensor(a, dtype=dtype)
        assert torch.equal(nl.dphi_h(nl.phi(t)), nl.dphi(t))
        assert torch.equal(nl.d2phi_h(nl.phi(t)), nl.d2phi(t))


def _ulps(y: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|y − exact| in units of the float32 spacing at the exact value."""
    spacing = (torch.nextafter(exact.float(), torch.tensor(2.0)).double() - exact.float().double()).abs()
    return (y.double() - exact).abs() / spacing


def test_float32_cpu_tanh_is_within_three_ulp_and_keeps_the_edge_cases():
    grid = torch.cat([torch.linspace(-30, 30, 600_001, dtype=torch.float64),
                      torch.logspace(-40, 1.5, 20_000, dtype=torch.float64),
                      -torch.logspace(-40, 1.5, 20_000, dtype=torch.float64)])
    x = grid.float()
    assert x.numel() >= FAST_TANH_MIN
    y = activations.tanh(x)
    assert not torch.equal(y, torch.tanh(x))  # numpy's tanh ran
    assert float(_ulps(y, torch.tanh(x.double())).max()) <= 3.0
    special = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 1e-45, 9.0, 20.0])
    edge = activations.tanh(torch.cat([special, torch.zeros(FAST_TANH_MIN)]))[:8]
    assert edge[0] == 1.0 and edge[1] == -1.0 and torch.isnan(edge[2])
    assert edge[3] == 0.0 and not torch.signbit(edge[3]) and torch.signbit(edge[4])
    assert edge[5] == torch.tensor(1e-45) and abs(float(edge[6]) - 1.0) <= 6e-8 and edge[7] == 1.0


def test_float32_cpu_tanh_gradient_is_one_minus_its_square():
    a = (torch.randn(FAST_TANH_MIN + 7, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_()
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    y = activations.tanh(a)
    (grad,) = torch.autograd.grad((y * w).sum(), a)
    torch.testing.assert_close(grad, w * (1.0 - y.detach() * y.detach()), rtol=1e-6, atol=1e-7)
    assert float((grad - torch.autograd.grad((torch.tanh(a) * w).sum(), a)[0]).abs().max()) < 1e-6


def test_float64_and_small_tensors_use_torchs_tanh():
    a = torch.randn(2 * FAST_TANH_MIN, dtype=torch.float64)
    assert torch.equal(activations.tanh(a), torch.tanh(a))
    small = torch.randn(FAST_TANH_MIN - 1)
    assert torch.equal(activations.tanh(small), torch.tanh(small))
    np.testing.assert_array_equal(activations.tanh(a.numpy()), np.tanh(a.numpy()))
