"""Random-feedback local online learning, RFLO (Murray 2019; docs/rules.md, "RFLO").

Native r-form (``form="r"``), u_t = W h_{t−1} + U x_t + b, h_t = (1−α)h_{t−1} + αφ(u_t), with traces

    P_t   = (1−α) P_{t−1}   + α φ'(u_t) h_{t−1}ᵀ        (N × N)
    P^x_t = (1−α) P^x_{t−1} + α φ'(u_t) x_tᵀ            (N × n_in)
    p^b_t = (1−α) p^b_{t−1} + α φ'(u_t)                 (N)
    ∇W_ji = Σ_t L_{t,j} P_{t,ji},  and ∇U, ∇b likewise, with L_t = B e_t;
    a learned a_0 (h_0 = φ(a_0)): ∇a_0 = φ'(a_0) ⊙ Σ_t (1−α)^t L_t, carried by the leak alone.

On the a-form (default ``form="a"``) the toolkit uses Murray's trace with u_t → a_t, so ψ_t = φ'(a_t)
enters inside the low-pass trace (at the presynaptic time) instead of at the time of the learning
signal, as in e-prop; the traces cannot be factorised and cost O(N² + N n_in) per trial (and per
batch element). B is a fixed random N(0, 1/N) matrix by default (``feedback="symmetric"``: B = Vᵀ).
The loop runs forward in time without autograd (:func:`biorules.rules.common.online_pass`); e_t
comes from the task in closed form. Applied once per batch, the same gradient comes from
:meth:`RFLO.summed` (the sums over t and s swapped: no N × N trace per trial).

Exactness (docs/rules.md, property 4): r-form with B = Vᵀ equals r-form autograd with W sg(h_{t−1}) for
any W, hence r-form BPTT at W = 0; the a-form differs from BPTT even at W = 0 (α < 1, nonlinear φ);
at α = 1 the a-form equals e-prop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from biorules.network import affine, simulate
from biorules.rules.base import GradResult
from biorules.rules.common import (
    a0_gradient,
    backward_filter,
    check_feedback,
    check_form,
    check_kind,
    feedback,
    forward,
    inputs,
    mask_recurrent,
    member_major,
    model_step,
    noise,
    online_pass,
    outer_sum,
    time_major,
    trials,
    zero_state,
)


class RfloTrace(NamedTuple):
    """RFLO eligibility traces at the end of a trial (their size is independent of T)."""

    W: torch.Tensor
    """P (..., B, N, N) [1]."""
    U: torch.Tensor
    """P^x (..., B, N, n_in) [1]."""
    b: torch.Tensor
    """p^b (..., B, N) [1]."""


@dataclass(frozen=True)
class RFLO:
    """RFLO; ``form`` a (default) or r, ``feedback`` random (default, seeded; one seed per member
    of a stack) or symmetric."""

    name: str = "rflo"
    form: str = "a"
    feedback: str = "random"
    feedback_seed: int | tuple[int, ...] = 0
    kinds: ClassVar[tuple[str, ...]] = ("rate",)
    options: ClassVar[dict[str, tuple[str, ...]]] = {"rate": ("form", "feedback", "feedback_seed")}

    def __post_init__(self) -> None:
        check_form(self.form)
        check_feedback(self.feedback)

    def forward(self, model: torch.nn.Module, x: torch.Tensor, eta: torch.Tensor | None = None) -> torch.Tensor:
        return forward(model, x, self.form, eta)

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any, *,
                  apply: Callable[[dict[str, torch.Tensor]], None] | None = None) -> GradResult:
        """Gradients of one batch; with ``apply``, each loss step's gradient is applied at once
        (online, through the traces); without, in the reordered form of :meth:`summed`."""
        if apply is not None:
            return self.run(model, batch, task, apply=apply)[0]
        return self.summed(model, batch, task)

    def summed(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        """The gradients of :meth:`run` with the sums over t and s swapped: Σ_t L_t ⊙ P_t becomes
        ∇W = Σ_s α (ψ_s ⊙ L̃_s) h_{s−1}ᵀ with the backward-filtered signal
        L̃_s = Σ_{t≥s} (1−α)^{t−s} L_t (x_s and 1 give ∇U and ∇b). The N × N trace of every trial
        becomes one matrix product, at the cost of keeping ψ, h and L for the trial (O(T·N) per
        trial, like BPTT): 1.9× faster at N = 64 and 5.4× at N = 200 (stacks of 12 and 4, one core).
        Updates applied at every step need the forward traces of :meth:`run`.
        """
        check_kind(model, self.name, self.kinds)
        alpha, dphi = model.alpha, model.nl.dphi
        with torch.no_grad():
            x, eta = inputs(model, batch), noise(model, batch)
            start = zero_state(model, x.shape[-2])
            _, states = simulate(model_step(model, self.form), start, x, noise=eta)
            # recorded member-major, (..., T + 1, B, N) with h_0 first: each sum over (t, trial)
            # is one batched product, h_1..h_T and h_0..h_{T−1} are views of one copy
            hs = torch.stack([start.h, *(st.h for st in states)], dim=-3)
            h, h_prev = hs[..., 1:, :, :], hs[..., :-1, :, :]
            if self.form == "a":
                psi = model.nl.dphi_h(h)  # φ'(a_t) from h_t = φ(a_t)
            else:
                psi = dphi(torch.stack([st.a for st in states], dim=-3))  # φ'(u_t)
            steps = h.shape[-3:-1]  # (T, B)
            y = time_major(affine(trials(h), model.V, model.c).unflatten(-2, steps))
            loss, e = task.output_error(y, batch)
            e_m = trials(member_major(e)).contiguous()
            B = feedback(model, self.feedback, self.feedback_seed)
            L = (e_m @ B.swapaxes(-1, -2)).unflatten(-2, steps)  # B e_t, 0 off loss steps
            grads = {}
            if model.a0 is not None:  # Σ_t (1−α)^t g_t, through the leak alone (as in run)
                psi_t, L_t = time_major(psi), time_major(L)
                leak = (1.0 - alpha) ** torch.arange(1, len(L_t) + 1, dtype=L.dtype, device=L.device)
                grads["a0"] = torch.einsum("t,t...bj->...j", leak, psi_t * L_t if self.form == "a" else L_t)
                if self.form == "r":
                    grads["a0"] = grads["a0"] * dphi(model.a0)
            # α ψ ⊙ L̃ in place of ψ (two passes over the trial, no new arrays)
            g = trials(psi.mul_(alpha).mul_(member_major(backward_filter(time_major(L), 1.0 - alpha))))
            grads.update({
                "W": outer_sum(g, trials(h_prev)),
                "U": outer_sum(g, trials(member_major(x))),
                "b": g.sum(-2),
                "V": outer_sum(e_m, trials(h)),
                "c": e.sum(0).sum(-2),
            })
        return GradResult(mask_recurrent(model, grads), y, loss)

    def run(self, model: torch.nn.Module, batch: Any, task: Any, *,
            apply: Callable[[dict[str, torch.Tensor]], None] | None = None) -> tuple[GradResult, RfloTrace]:
        """The gradients and the final traces of one batch, forward in time."""
        check_kind(model, self.name, self.kinds)
        alpha, dphi, n = model.alpha, model.nl.dphi, model.n

        def init(state: Any, x: torch.Tensor) -> RfloTrace:
            lead = state.h.shape[:-1]
            return RfloTrace(x.new_zeros((*lead, n, n)), x.new_zeros((*lead, n, x.shape[-1])),
                             x.new_zeros((*lead, n)))

        def advance(trace: RfloTrace, state: Any, h_prev: torch.Tensor, x_t: torch.Tensor) -> RfloTrace:
            psi = dphi(state.a).reshape(-1, n, 1)  # φ'(a_t), or φ'(u_t) in the r-form
            n_in = x_t.shape[-1]
            trace.W.view(-1, n, n).baddbmm_(psi, h_prev.reshape(-1, 1, n), beta=1.0 - alpha, alpha=alpha)
            trace.U.view(-1, n, n_in).baddbmm_(psi, x_t.reshape(-1, 1, n_in), beta=1.0 - alpha, alpha=alpha)
            trace.b.mul_(1.0 - alpha).add_(psi.reshape(trace.b.shape), alpha=alpha)
            return trace

        def learn(grads: dict, trace: RfloTrace, state: Any, L: torch.Tensor, t: int) -> None:
            grads["W"] += torch.einsum("...bj,...bji->...ji", L, trace.W)
            grads["U"] += torch.einsum("...bj,...bji->...ji", L, trace.U)
            grads["b"] += (L * trace.b).sum(-2)
            if model.a0 is not None:  # through the leak alone, ψ_t at the signal's time (a-form)
                g = dphi(state.a) * L if self.form == "a" else L
                grads["a0"] += a0_gradient(model, g, t, self.form)

        B = feedback(model, self.feedback, self.feedback_seed)
        return online_pass(model, batch, task, B, init, advance, learn, step=model_step(model, self.form), apply=apply)
