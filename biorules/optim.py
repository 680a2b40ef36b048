"""The task and flossing optimisers: Adam and plain SGD, elementwise, so that every member of a stack
keeps its own state.

They compute what ``torch.optim.Adam`` and ``torch.optim.SGD`` compute on the CPU (their
single-tensor path, tested to the bit), with each parameter's gradient read from ``p.grad``:

    Adam:  m ← m + (1−β₁)(g − m),  v ← β₂ v + (1−β₂) g²,
           p ← p − (lr/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε)
    SGD:   p ← p − lr · g

Why our own: ``torch.optim`` imports ``torch._dynamo`` on the first step (about 2 s of every
process: a spiking run of 300 updates spends a tenth of its time there) and wraps every step in
hooks, which an online rule that steps at every time step pays 10⁵ times.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from biorules.errors import InputError


class SGD:
    """p ← p − lr · g for every parameter with a gradient."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float):
        if lr < 0:
            raise InputError(f"learning rate must be non-negative, got {lr}")
        self.params = list(params)
        self.lr = float(lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (set to None; ``set_to_none=False`` zeroes them)."""
        for p in self.params:
            if p.grad is not None and not set_to_none:
                p.grad.zero_()
            else:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


class Adam(SGD):
    """Adam (Kingma & Ba 2015) without weight decay or AMSGrad; each parameter counts its own steps t
    (a parameter without a gradient is skipped, its t unchanged), as in ``torch.optim.Adam``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        if not all(0.0 <= b < 1.0 for b in betas) or eps < 0:
            raise InputError(f"Adam needs 0 <= betas < 1 and eps >= 0, got betas={betas}, eps={eps}")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)
        self.t = [0] * len(self.params)
        self.m = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.v = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for i, (p, m, v) in enumerate(zip(self.params, self.m, self.v, strict=True)):
            g = p.grad
            if g is None:
                continue
            self.t[i] += 1
            t = float(self.t[i])
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step_size = self.lr / (1 - b1**t)
            denom = (v.sqrt() / (1 - b2**t) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)
