"""e-prop for leaky rate units (Bellec et al. 2020; spec §3, "e-prop").

Only the dependence through recurrent presynaptic activity is dropped; the leak is kept. The
eligibility vectors are presynaptic, O(N + n_in) per trial, all starting at 0:

    ε^h_t = (1−α) ε^h_{t−1} + α h_{t−1}
    ε^x_t = (1−α) ε^x_{t−1} + α x_t
    ε^1_t = (1−α) ε^1_{t−1} + α

With the learning signal L_t = B e_t and ψ_t = φ'(a_t):

    ∇W = Σ_t (ψ_t ⊙ L_t)(ε^h_t)ᵀ,   ∇U = Σ_t (ψ_t ⊙ L_t)(ε^x_t)ᵀ,   ∇b = Σ_t (ψ_t ⊙ L_t) ε^1_t,

and the exact local readout gradient. ``eprop``: B = Vᵀ (current V); ``eprop-random``: a fixed
random B ~ N(0, 1/N) from its own seed. The loop runs forward in time, one step of
:func:`biorules.network.rate_step` at a time, with no stored trajectory and no autograd; e_t comes
in closed form from the task (:meth:`biorules.tasks.Task.output_error`). With B = Vᵀ it equals
autograd through a_t = (1−α)a_{t−1} + α(W sg(h_{t−1}) + U x_t + b) (spec §3, property 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from biorules.rules.base import GradResult
from biorules.rules.common import check_feedback, feedback, forward, online_pass


class EpropTrace(NamedTuple):
    """Presynaptic eligibility vectors at the end of a trial (their size is independent of T)."""

    h: torch.Tensor
    """ε^h (B, N) [1]."""
    x: torch.Tensor
    """ε^x (B, n_in) [1]."""
    one: float
    """ε^1 [1]."""


@dataclass(frozen=True)
class Eprop:
    """e-prop on the a-form network; ``feedback`` symmetric (B = Vᵀ) or random (seeded)."""

    name: str = "eprop"
    models: tuple[str, ...] = ("rate",)
    feedback: str = "symmetric"
    feedback_seed: int = 0

    def __post_init__(self) -> None:
        check_feedback(self.feedback)

    def forward(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return forward(model, x, "a")[0]

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        return self.run(model, batch, task)[0]

    def run(self, model: torch.nn.Module, batch: Any, task: Any) -> tuple[GradResult, EpropTrace]:
        """The gradients and the final eligibility vectors of one batch, forward in time."""
        alpha, dphi = model.params.alpha, model.nl.dphi

        def init(state: Any, x: torch.Tensor) -> EpropTrace:
            return EpropTrace(torch.zeros_like(state.h), torch.zeros_like(x[0]), 0.0)

        def advance(trace: EpropTrace, state: Any, h_prev: torch.Tensor, x_t: torch.Tensor) -> EpropTrace:
            return EpropTrace((1.0 - alpha) * trace.h + alpha * h_prev, (1.0 - alpha) * trace.x + alpha * x_t,
                              (1.0 - alpha) * trace.one + alpha)

        def learn(grads: dict, trace: EpropTrace, state: Any, L: torch.Tensor) -> None:
            g = dphi(state.a) * L  # ψ_t ⊙ L_t, (B, N)
            grads["W"] += g.T @ trace.h
            grads["U"] += g.T @ trace.x
            grads["b"] += g.sum(0) * trace.one

        B = feedback(model, self.feedback, self.feedback_seed)
        return online_pass(model, batch, task, "a", B, init, advance, learn)
