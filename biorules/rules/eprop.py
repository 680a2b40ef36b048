"""e-prop (Bellec et al. 2020; docs/rules.md, "e-prop" and "Spiking e-prop") for rate and LIF networks.

Only the dependence through recurrent presynaptic activity is dropped; the leak is kept. With the
learning signal L_t = B e_t (B = Vᵀ for ``eprop``, a fixed random B ~ N(0, 1/N) from its own seed
for ``eprop-random``) and ψ_t the network's ψ (φ'(a_t), or the LIF pseudo-derivative):

**Rate network.** Presynaptic eligibility vectors, O(N + n_in) per trial, all starting at 0:

    ε^h_t = (1−α) ε^h_{t−1} + α h_{t−1},   ε^x_t = (1−α) ε^x_{t−1} + α x_t,   ε^1_t = (1−α) ε^1_{t−1} + α
    ∇W = Σ_t (ψ_t ⊙ L_t)(ε^h_t)ᵀ,   ∇U = Σ_t (ψ_t ⊙ L_t)(ε^x_t)ᵀ,   ∇b = Σ_t (ψ_t ⊙ L_t) ε^1_t,
    and, for a learned a_0, ∇a_0 = Σ_t (1−α)^t (ψ_t ⊙ L_t) (its trace is the leak alone).

With B = Vᵀ this equals autograd through a_t = (1−α)a_{t−1} + α(W sg(h_{t−1}) + U x_t + b)
(docs/rules.md, property 2).

**LIF network.** With pre_t the presynaptic variable of a weight (z_{t−1} for W, x_t for U, 1 for b):

    box cell:        ε_t = (1 − α_m) ε_{t−1} + α_m pre_t
    current cell:    ε^v_t = (1 − α_m) ε^v_{t−1} + α_m ε^i_{t−1},   ε^i_t = (1 − α_s) ε^i_{t−1} + pre_t
    filtered trace:  Ē_{t,ji} = κ Ē_{t−1,ji} + (1 − κ) ψ_{t,j} ε_{t,i}      (ε^v_t for the current cell)
    gradient:        ∇W_ji = Σ_t L_{t,j} Ē_{t,ji}

This equals autograd of ℒ with W sg(z_{t−1}), the reset detached, the same pseudo-derivative and
the leak kept; at W = 0 it equals BPTT (docs/rules.md, property 3). Trace memory O(n_b·N·(N + n_in + 1)).

Both run in the one online loop :func:`biorules.rules.common.online_pass`, forward in time with no
stored trajectory and no autograd; e_t comes in closed form from the task; the readout gets its
exact local gradient. Applied once per batch, the LIF gradient comes from :meth:`Eprop.summed`
instead: the same numbers with the sums over t and s swapped, so no N × P trace per trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from biorules.errors import InputError
from biorules.network import scalar, simulate
from biorules.rules.base import GradResult
from biorules.rules.common import (
    a0_gradient,
    backward_filter,
    check_feedback,
    check_kind,
    feedback,
    forward,
    inputs,
    mask_recurrent,
    member_major,
    online_pass,
    outer_sum,
    time_major,
    trials,
    zero_state,
)


class EpropTrace(NamedTuple):
    """Presynaptic eligibility vectors of the rate network at the end of a trial (size independent of T)."""

    h: torch.Tensor
    """ε^h (..., B, N) [1]."""
    x: torch.Tensor
    """ε^x (..., B, n_in) [1]."""
    one: float
    """ε^1 [1]."""


class SpikingTrace(NamedTuple):
    """Forward-in-time traces of spiking e-prop; P = N + n_in + 1 presynaptic variables (z, x, 1)."""

    eps: torch.Tensor
    """ε_t (box) or ε^v_t (current), shape (..., B, P) [1]."""
    eps_i: torch.Tensor | None
    """ε^i_t of the current cell, shape (..., B, P) [1]; None for the box cell."""
    E: torch.Tensor
    """Ē_t, filtered eligibility traces, shape (..., B, N, P) [1/voltage]."""


def spiking_trace_step(trace: SpikingTrace, pre: torch.Tensor, psi: torch.Tensor, params: Any) -> SpikingTrace:
    """One forward step of the spiking traces (module docstring) from pre_t (..., P) and ψ_t (..., N)."""
    a_m = params.alpha_m
    if params.cell == "box":
        eps, eps_i = (1.0 - a_m) * trace.eps + a_m * pre, None
    else:
        eps = (1.0 - a_m) * trace.eps + a_m * trace.eps_i
        eps_i = (1.0 - params.alpha_s) * trace.eps_i + pre
    E = params.kappa * trace.E + (1.0 - params.kappa) * psi[..., :, None] * eps[..., None, :]
    return SpikingTrace(eps, eps_i, E)


def _rate_traces(model: torch.nn.Module):
    alpha = model.alpha

    def init(state: Any, x: torch.Tensor) -> EpropTrace:
        return EpropTrace(torch.zeros_like(state.h), torch.zeros_like(x[0]), 0.0)

    def advance(trace: EpropTrace, state: Any, h_prev: torch.Tensor, x_t: torch.Tensor) -> EpropTrace:
        return EpropTrace((1.0 - alpha) * trace.h + alpha * h_prev, (1.0 - alpha) * trace.x + alpha * x_t,
                          (1.0 - alpha) * trace.one + alpha)

    def learn(grads: dict, trace: EpropTrace, state: Any, L: torch.Tensor, t: int) -> None:
        g = model.psi(state) * L  # ψ_t ⊙ L_t, (..., B, N)
        gT = g.swapaxes(-1, -2)
        grads["W"] += gT @ trace.h
        grads["U"] += gT @ trace.x
        grads["b"] += g.sum(-2) * trace.one
        if getattr(model, "a0", None) is not None:
            grads["a0"] += a0_gradient(model, g, t)

    return init, advance, learn


def _lif_traces(model: torch.nn.Module):
    p, n = model.step_params, model.n

    def init(state: Any, x: torch.Tensor) -> SpikingTrace:
        lead, n_pre = x.shape[1:-1], n + x.shape[-1] + 1
        zeros = lambda *shape: x.new_zeros(shape)  # noqa: E731
        return SpikingTrace(zeros(*lead, n_pre), None if p.cell == "box" else zeros(*lead, n_pre),
                            zeros(*lead, n, n_pre))

    def advance(trace: SpikingTrace, state: Any, z_prev: torch.Tensor, x_t: torch.Tensor) -> SpikingTrace:
        pre = torch.cat([z_prev, x_t, x_t.new_ones((*x_t.shape[:-1], 1))], dim=-1)  # z_{t−1}, x_t, 1
        return spiking_trace_step(trace, pre, model.psi(state), p)

    def learn(grads: dict, trace: SpikingTrace, state: Any, L: torch.Tensor, t: int) -> None:
        g = torch.einsum("...bj,...bjp->...jp", L, trace.E)  # L_t Ē_t = [∇W | ∇U | ∇b]
        grads["W"] += g[..., :n]
        grads["U"] += g[..., n:-1]
        grads["b"] += g[..., -1]

    return init, advance, learn


_TRACES = {"rate": _rate_traces, "lif": _lif_traces}


@dataclass(frozen=True)
class Eprop:
    """e-prop on the a-form rate network or the LIF network; ``feedback`` symmetric (B = Vᵀ) or random.

    ``feedback_seed`` seeds the random B: one int, or one per member of a stack.
    """

    name: str = "eprop"
    feedback: str = "symmetric"
    feedback_seed: int | tuple[int, ...] = 0
    kinds: ClassVar[tuple[str, ...]] = ("rate", "lif")
    options: ClassVar[dict[str, tuple[str, ...]]] = {"rate": ("feedback_seed",), "lif": ("feedback_seed",)}

    def __post_init__(self) -> None:
        check_feedback(self.feedback)

    def forward(self, model: torch.nn.Module, x: torch.Tensor, eta: torch.Tensor | None = None) -> torch.Tensor:
        return forward(model, x, "a", eta)

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any, *,
                  apply: Callable[[dict[str, torch.Tensor]], None] | None = None) -> GradResult:
        """Gradients of one batch; with ``apply``, each loss step's gradient is applied at once (online).

        Without ``apply``, a LIF network's gradients come from :meth:`summed` (the same numbers);
        the rate network keeps its O(N) traces, which stay in cache.
        """
        if apply is None and check_kind(model, self.name, self.kinds) == "lif":
            return self.summed(model, batch, task)
        return self.run(model, batch, task, apply=apply)[0]

    def summed(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        """Spiking e-prop's batch gradient with the sums over t and s swapped:

            ∇[W|U|b]_jp = Σ_t L_{t,j} Ē_{t,jp} = Σ_s (1−κ) ψ_{s,j} L̃_{s,j} ε_{s,p},
            L̃_s = Σ_{t≥s} κ^{t−s} L_t   (backward-filtered learning signal),

        so the N × P filtered trace Ē of every trial and step becomes one matrix product over
        (t, trial), at the cost of keeping ψ, ε and L for the trial (O(T·(N + P)) per trial).
        LIF networks only; updates applied at every step need the forward traces of :meth:`run`.
        """
        if check_kind(model, self.name, self.kinds) != "lif":
            raise InputError("Eprop.summed is the LIF network's batch gradient; the rate network uses run")
        from biorules.spiking import LIFState

        p, n = model.step_params, model.n
        with torch.no_grad():
            x = inputs(model, batch)
            start = zero_state(model, x.shape[-2])
            _, states = simulate(model.step, start, x)
            # recorded member-major, (..., T, B, ·): each sum over (step, trial) is one batched product
            z_prev = torch.stack([start.z, *(st.z for st in states[:-1])], dim=-3)  # z_{t−1}
            r = torch.stack([st.r for st in states], dim=-3)
            v_pre = torch.stack([st.v_pre for st in states], dim=-3)
            psi = model.psi(LIFState(None, None, None, r, v_pre))  # ψ_t, from ṽ_t alone
            x_m = member_major(x)
            pre = torch.cat([z_prev, x_m, x_m.new_ones((*x_m.shape[:-1], 1))], dim=-1)  # z_{t−1}, x_t, 1
            eps = torch.empty_like(pre)
            e_v, e_i = torch.zeros_like(pre[..., 0, :, :]), torch.zeros_like(pre[..., 0, :, :])
            leak_m, a_m, leak_s = (scalar(v, pre) for v in (1.0 - p.alpha_m, p.alpha_m, 1.0 - p.alpha_s))
            for t in range(pre.shape[-3]):  # ε_t (box) or ε^v_t (current), O(P) per trial and step
                if p.cell == "box":
                    e_v = torch.add(leak_m * e_v, a_m * pre[..., t, :, :], out=eps[..., t, :, :])
                else:
                    e_v = torch.add(leak_m * e_v, a_m * e_i, out=eps[..., t, :, :])
                    e_i = leak_s * e_i + pre[..., t, :, :]
            steps = r.shape[-3:-1]  # (T, B)
            y = model.readout(time_major(r))
            loss, e = task.output_error(y, batch)
            e_m = trials(member_major(e)).contiguous()
            L = (e_m @ self.feedback_matrix(model).swapaxes(-1, -2)).unflatten(-2, steps)  # B e_t, 0 off loss steps
            # (1−κ) ψ ⊙ L̃ in place of ψ
            g = trials(psi.mul_(1.0 - p.kappa).mul_(member_major(backward_filter(time_major(L), p.kappa))))
            G = outer_sum(g, trials(eps))
            grads = {"W": G[..., :n], "U": G[..., n:-1], "b": G[..., -1],
                     "V": outer_sum(e_m, trials(r)), "c": e.sum(0).sum(-2)}
        return GradResult(mask_recurrent(model, grads), y, loss)

    def feedback_matrix(self, model: torch.nn.Module) -> torch.Tensor:
        """B: Vᵀ of the current readout, or the fixed random matrices of ``feedback_seed``."""
        return feedback(model, self.feedback, self.feedback_seed)

    def run(self, model: torch.nn.Module, batch: Any, task: Any, *,
            apply: Callable[[dict[str, torch.Tensor]], None] | None = None) -> tuple[GradResult, Any]:
        """The gradients and the final traces of one batch, forward in time."""
        kind = check_kind(model, self.name, self.kinds)
        init, advance, learn = _TRACES[kind](model)
        return online_pass(model, batch, task, self.feedback_matrix(model), init, advance, learn, apply=apply)
