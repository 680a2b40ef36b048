"""Random-feedback local online learning, RFLO (Murray 2019; spec §3, "RFLO").

Native r-form (``form="r"``), u_t = W h_{t−1} + U x_t + b, h_t = (1−α)h_{t−1} + αφ(u_t), with traces

    P_t   = (1−α) P_{t−1}   + α φ'(u_t) h_{t−1}ᵀ        (N × N)
    P^x_t = (1−α) P^x_{t−1} + α φ'(u_t) x_tᵀ            (N × n_in)
    p^b_t = (1−α) p^b_{t−1} + α φ'(u_t)                 (N)
    ∇W_ji = Σ_t L_{t,j} P_{t,ji},  and ∇U, ∇b likewise, with L_t = B e_t.

On the a-form (default ``form="a"``) the toolkit uses Murray's trace with u_t → a_t, so ψ_t = φ'(a_t)
enters inside the low-pass trace (at the presynaptic time) instead of at the time of the learning
signal, as in e-prop; the traces cannot be factorised and cost O(N² + N n_in) per trial (and per
batch element). B is a fixed random N(0, 1/N) matrix by default (``feedback="symmetric"``: B = Vᵀ).
The loop runs forward in time without autograd; e_t comes from the task in closed form.

Exactness (spec §3, property 4): r-form with B = Vᵀ equals r-form autograd with W sg(h_{t−1}) for
any W, hence r-form BPTT at W = 0; the a-form differs from BPTT even at W = 0 (α < 1, nonlinear φ);
at α = 1 the a-form equals e-prop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from biorules.rules.base import GradResult
from biorules.rules.common import check_feedback, check_form, feedback, forward, online_pass


class RfloTrace(NamedTuple):
    """RFLO eligibility traces at the end of a trial (their size is independent of T)."""

    W: torch.Tensor
    """P (B, N, N) [1]."""
    U: torch.Tensor
    """P^x (B, N, n_in) [1]."""
    b: torch.Tensor
    """p^b (B, N) [1]."""


@dataclass(frozen=True)
class RFLO:
    """RFLO; ``form`` a (default) or r, ``feedback`` random (default, seeded) or symmetric."""

    name: str = "rflo"
    models: tuple[str, ...] = ("rate",)
    form: str = "a"
    feedback: str = "random"
    feedback_seed: int = 0

    def __post_init__(self) -> None:
        check_form(self.form)
        check_feedback(self.feedback)

    def forward(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return forward(model, x, self.form)[0]

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        return self.run(model, batch, task)[0]

    def run(self, model: torch.nn.Module, batch: Any, task: Any) -> tuple[GradResult, RfloTrace]:
        """The gradients and the final traces of one batch, forward in time."""
        alpha, dphi = model.params.alpha, model.nl.dphi

        def init(state: Any, x: torch.Tensor) -> RfloTrace:
            n_batch, n = state.h.shape
            return RfloTrace(x.new_zeros((n_batch, n, n)), x.new_zeros((n_batch, n, x.shape[2])),
                             x.new_zeros((n_batch, n)))

        def advance(trace: RfloTrace, state: Any, h_prev: torch.Tensor, x_t: torch.Tensor) -> RfloTrace:
            psi = dphi(state.a)  # φ'(a_t), or φ'(u_t) in the r-form
            trace.W.baddbmm_(psi[:, :, None], h_prev[:, None, :], beta=1.0 - alpha, alpha=alpha)
            trace.U.baddbmm_(psi[:, :, None], x_t[:, None, :], beta=1.0 - alpha, alpha=alpha)
            trace.b.mul_(1.0 - alpha).add_(psi, alpha=alpha)
            return trace

        def learn(grads: dict, trace: RfloTrace, state: Any, L: torch.Tensor) -> None:
            grads["W"] += torch.einsum("bj,bji->ji", L, trace.W)
            grads["U"] += torch.einsum("bj,bji->ji", L, trace.U)
            grads["b"] += (L * trace.b).sum(0)

        B = feedback(model, self.feedback, self.feedback_seed)
        return online_pass(model, batch, task, self.form, B, init, advance, learn)
