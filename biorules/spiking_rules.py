"""Learning rules for the LIF network (spec §3): surrogate-gradient BPTT and spiking e-prop.

**Spiking e-prop** (Bellec et al. 2020; spec §3, "Spiking e-prop"). With pre_t the presynaptic
variable of a weight (z_{t−1} for W, x_t for U, 1 for b), every ε_0 = 0 and ψ_t the pseudo-derivative:

    box cell:        ε_t = (1 − α_m) ε_{t−1} + α_m pre_t
    current cell:    ε^v_t = (1 − α_m) ε^v_{t−1} + α_m ε^i_{t−1},   ε^i_t = (1 − α_s) ε^i_{t−1} + pre_t
    filtered trace:  Ē_{t,ji} = κ Ē_{t−1,ji} + (1 − κ) ψ_{t,j} ε_{t,i}      (ε^v_t for the current cell)
    gradient:        ∇W_ji = Σ_t L_{t,j} Ē_{t,ji},   L_t = B e_t,   e_t = ∂ℒ/∂y_t

B = Vᵀ (``eprop``) or a fixed random B_jk ~ N(0, 1/N) from its own seed (``eprop-random``).
The readout gets its exact local gradient, ∇V = Σ_t e_t r_tᵀ and ∇c = Σ_t e_t (batch-summed; ℒ
already carries 1/(n_b n_m)). This equals autograd of ℒ with W sg(z_{t−1}), the reset detached,
the same pseudo-derivative and the leak kept; at W = 0 it equals BPTT (spec §3, property 3).

One pass forward in time, online: step t runs :func:`biorules.spiking.lif_step`, updates the traces
from z_{t−1}, x_t and ψ_t, and adds L_t Ē_t with e_t in closed form from the task
(:meth:`biorules.tasks.Task.output_error`). No stored trajectory and no autograd; trace memory is
O(n_b·N·(N + n_in + 1)), independent of T (only y_1..y_T, O(T·n_b·n_out), is kept).

**BPTT** backpropagates ℒ through the whole trial with autograd: the surrogate ψ_t stands in for
∂z_t/∂ṽ_t and the reset is detached, as in :func:`biorules.spiking.lif_step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from biorules.errors import InputError
from biorules.rules.base import GradResult
from biorules.spiking import LIFParams, feedback_matrix, pseudo_derivative

FEEDBACKS = ("symmetric", "random")


class EpropTrace(NamedTuple):
    """Forward-in-time traces of spiking e-prop; P = N + n_in + 1 presynaptic variables (z, x, 1)."""

    eps: torch.Tensor
    """ε_t (box) or ε^v_t (current), shape (B, P) [1]."""
    eps_i: torch.Tensor | None
    """ε^i_t of the current cell, shape (B, P) [1]; None for the box cell."""
    E: torch.Tensor
    """Ē_t, filtered eligibility traces, shape (B, N, P) [1/voltage]."""


def zero_trace(n_batch: int, n: int, n_pre: int, params: LIFParams, like: torch.Tensor) -> EpropTrace:
    """ε_0 = ε^i_0 = 0 and Ē_0 = 0 for ``n_pre`` presynaptic variables."""
    zeros = lambda *shape: torch.zeros(shape, dtype=like.dtype, device=like.device)  # noqa: E731
    return EpropTrace(zeros(n_batch, n_pre), None if params.cell == "box" else zeros(n_batch, n_pre),
                      zeros(n_batch, n, n_pre))


def eprop_trace_step(trace: EpropTrace, pre: torch.Tensor, psi: torch.Tensor, params: LIFParams) -> EpropTrace:
    """One forward step of the traces (module docstring) from pre_t (B, P) and ψ_t (B, N)."""
    a_m = params.alpha_m
    if params.cell == "box":
        eps, eps_i = (1.0 - a_m) * trace.eps + a_m * pre, None
    else:
        eps = (1.0 - a_m) * trace.eps + a_m * trace.eps_i
        eps_i = (1.0 - params.alpha_s) * trace.eps_i + pre
    E = params.kappa * trace.E + (1.0 - params.kappa) * psi[:, :, None] * eps[:, None, :]
    return EpropTrace(eps, eps_i, E)


def _inputs(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    return torch.as_tensor(batch.x, dtype=model.W.dtype, device=model.W.device)


def _check_model(model: torch.nn.Module, rule: str) -> None:
    if getattr(model, "model_kind", None) != "lif":
        raise InputError(f"rule {rule!r} of biorules.spiking_rules needs a LIFNetwork, got {type(model).__name__}")


class LIFBPTT:
    """Surrogate-gradient BPTT for :class:`biorules.spiking.LIFNetwork` (autograd through the trial)."""

    name = "bptt"
    models = ("lif",)

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        _check_model(model, self.name)
        y, _ = model(_inputs(model, batch))
        loss = task.loss(y, batch)
        names, params = zip(*model.named_parameters(), strict=True)
        grads = torch.autograd.grad(loss, params)
        return GradResult(dict(zip(names, grads, strict=True)), y.detach(), loss.detach())


class LIFEprop:
    """Spiking e-prop (module docstring) with symmetric (B = Vᵀ) or fixed random feedback."""

    name = "eprop"
    models = ("lif",)

    def __init__(self, feedback: str = "symmetric", feedback_seed: int = 0):
        if feedback not in FEEDBACKS:
            raise InputError(f"unknown feedback {feedback!r}; choose one of {', '.join(FEEDBACKS)}")
        self.feedback = feedback
        self.feedback_seed = feedback_seed

    def feedback_matrix(self, model: torch.nn.Module) -> torch.Tensor:
        """B (N, n_out): Vᵀ of the current readout, or the fixed random matrix of ``feedback_seed``."""
        if self.feedback == "symmetric":
            return model.V.detach().T
        p = model.params
        return torch.as_tensor(feedback_matrix(p.n, p.n_out, self.feedback_seed), dtype=model.V.dtype, device=model.V.device)

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        return self.run(model, batch, task)[0]

    def run(self, model: torch.nn.Module, batch: Any, task: Any) -> tuple[GradResult, EpropTrace]:
        """The gradients and the final traces of one batch, online: one pass forward in time."""
        _check_model(model, self.name)
        p = model.params
        with torch.no_grad():
            x = _inputs(model, batch)
            n_steps, n_batch, n_in = x.shape
            B = self.feedback_matrix(model)
            state = model.initial_state(n_batch)
            trace = zero_trace(n_batch, p.n, p.n + n_in + 1, p, like=x)
            grad = x.new_zeros((p.n, p.n + n_in + 1))  # [∇W | ∇U | ∇b]
            gV, gc, loss = torch.zeros_like(model.V), torch.zeros_like(model.c), x.new_zeros(())
            ones = x.new_ones((n_batch, 1))
            active = batch.mask.any(axis=1)
            ys = x.new_empty((n_steps, n_batch, p.n_out))  # y_1..y_T, O(T·n_out)
            for t in range(n_steps):
                pre = torch.cat([state.z, x[t], ones], dim=-1)  # z_{t−1}, x_t, 1
                state = model.step(state, x[t])
                trace = eprop_trace_step(trace, pre, pseudo_derivative(state.v_pre, p), p)
                ys[t] = y = model.readout(state.r)
                if not active[t]:
                    continue  # e_t = 0: nothing to learn at this step
                part, e = task.output_error(y[None], batch, slice(t, t + 1))
                e = e[0]  # e_t = ∂ℒ/∂y_t, (B, n_out)
                grad += torch.einsum("bj,bjp->jp", e @ B.T, trace.E)  # L_t Ē_t
                gV += e.T @ state.r
                gc += e.sum(0)
                loss += part
        grads = {"W": grad[:, : p.n], "U": grad[:, p.n : p.n + n_in], "b": grad[:, -1], "V": gV, "c": gc}
        return GradResult(grads, ys, loss), trace


class LIFEpropRandom(LIFEprop):
    """Spiking e-prop with a fixed random feedback matrix B (spec §3, "Shared")."""

    name = "eprop-random"

    def __init__(self, feedback_seed: int = 0):
        super().__init__("random", feedback_seed)


LIF_RULES: dict[str, type] = {"bptt": LIFBPTT, "eprop": LIFEprop, "eprop-random": LIFEpropRandom}
"""Rules for ``--model lif``: name → class; instantiate with ``LIF_RULES[name]()``."""
