"""Small float64 networks, batches and autograd references for the rule tests (docs/rules.md)."""

from __future__ import annotations

import torch

from biorules.network import NetworkParams, RateRNN, RateState, rate_step, simulate
from biorules.tasks import make_task


def model64(n: int = 12, alpha: float = 0.2, nonlinearity: str = "tanh", gain: float = 1.5, n_in: int = 3,
            n_out: int = 3, seed: int = 0, init: str = "gaussian", zero_w: bool = False) -> torch.nn.Module:
    """A float64 rate network with a non-zero bias and readout bias (so every term is exercised)."""
    m = RateRNN(NetworkParams(n=n, alpha=alpha, nonlinearity=nonlinearity, gain=gain, n_in=n_in,
                              n_out=n_out, seed=seed, init=init), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        m.b.copy_(0.3 * torch.randn(n, generator=g, dtype=torch.float64))
        m.c.copy_(0.1 * torch.randn(n_out, generator=g, dtype=torch.float64))
        if zero_w:
            m.W.zero_()
    return m


def task_and_batch(name: str = "2af", n_batch: int = 4, seed: int = 0, **options):
    """A short task with a loss on every step (2af at dt = 50 ms: T = 18) and one batch."""
    if name in ("2af", "dms", "cxt"):
        options = {"dt": 50.0, "loss_periods": "all", **options}
    task = make_task(name, **options)
    return task, task.batch(n_batch, seed)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖."""
    return float((a - b).norm() / b.norm())


def detached_autograd(model, batch, task, form: str = "a") -> dict[str, torch.Tensor]:
    """Autograd with W sg(h_{t−1}) and everything else (the leak) kept (docs/rules.md, property 2 and 4);
    the batch's activity noise, if any, enters the drive."""
    alpha, phi = model.params.alpha, model.nl.phi
    x = torch.as_tensor(batch.x, dtype=torch.float64)
    eta = None if batch.noise is None else torch.as_tensor(batch.noise, dtype=torch.float64)

    def step(s: RateState, xt, eta_t=None):
        if form == "a":
            return rate_step(RateState(s.a, s.h.detach()), xt, model.W, model.U, model.b, alpha, phi, eta_t)
        u = s.h.detach() @ model.W.T + xt @ model.U.T + model.b  # r-form with W sg(h_{t−1})
        u = u if eta_t is None else u + eta_t
        return RateState(u, (1.0 - alpha) * s.h + alpha * phi(u))

    _, states = simulate(step, model.initial_state(x.shape[1]), x, noise=eta)
    y = model.readout(torch.stack([s.h for s in states]))
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(task.loss(y, batch), params)
    return dict(zip(names, grads, strict=True))
