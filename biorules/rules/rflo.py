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
from biorules.rules.common import (
    check_feedback,
    check_form,
    feedback,
    forward,
    inputs,
    mask_recurrent,
    model_step,
    zero_state,
)


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
        with torch.no_grad():
            x = inputs(model, batch)
            n_batch, n = x.shape[1], model.W.shape[0]
            B = feedback(model, self.feedback, self.feedback_seed)
            state = zero_state(model, n_batch)
            step = model_step(model, self.form)
            P = x.new_zeros((n_batch, n, n))
            Px = x.new_zeros((n_batch, n, x.shape[2]))
            pb = x.new_zeros((n_batch, n))
            grads = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
            active = batch.mask.any(axis=1)
            ys = x.new_empty((x.shape[0], n_batch, model.V.shape[0]))  # y_1..y_T, O(T·n_out)
            loss = torch.zeros((), dtype=x.dtype)
            for t in range(x.shape[0]):
                h_prev = state.h
                state = step(state, x[t])
                psi = dphi(state.a)  # φ'(a_t), or φ'(u_t) in the r-form
                P.baddbmm_(psi[:, :, None], h_prev[:, None, :], beta=1.0 - alpha, alpha=alpha)
                Px.baddbmm_(psi[:, :, None], x[t][:, None, :], beta=1.0 - alpha, alpha=alpha)
                pb.mul_(1.0 - alpha).add_(psi, alpha=alpha)
                y = model.readout(state.h)
                ys[t] = y
                if not active[t]:
                    continue
                part, e = task.output_error(y[None], batch, slice(t, t + 1))
                e = e[0]
                L = e @ B.T  # (B, N)
                grads["W"] += torch.einsum("bj,bji->ji", L, P)
                grads["U"] += torch.einsum("bj,bji->ji", L, Px)
                grads["b"] += (L * pb).sum(0)
                grads["V"] += e.T @ state.h
                grads["c"] += e.sum(0)
                loss += part
        return GradResult(mask_recurrent(model, grads), ys, loss), RfloTrace(P, Px, pb)
