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

The trial is run once to obtain y and, from the task's scalar loss, the output errors e_t; the traces
then run forward in time, step t reading only z_{t−1}, x_t, ψ_t and e_t (no autograd through time).
Trace memory is O(n_b·N·(N + n_in + 1)), independent of T; the recorded run (z, ṽ, r) is O(T·n_b·N).

**BPTT** backpropagates ℒ through the whole trial with autograd: the surrogate ψ_t stands in for
∂z_t/∂ṽ_t and the reset is detached, as in :func:`biorules.spiking.lif_step`.
"""

from __future__ import annotations

from functools import reduce
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
    grad: torch.Tensor
    """Σ_{s≤t} L_s Ē_s, batch-summed, shape (N, P): the columns of [∇W | ∇U | ∇b]."""


def eprop_trace_step(trace: EpropTrace, inputs: tuple[torch.Tensor, ...], params: LIFParams) -> EpropTrace:
    """One forward step of the traces (module docstring) from ``inputs = (pre_t, ψ_t, L_t)``."""
    pre, psi, L = inputs
    a_m = params.alpha_m
    if params.cell == "box":
        eps, eps_i = (1.0 - a_m) * trace.eps + a_m * pre, None
    else:
        eps = (1.0 - a_m) * trace.eps + a_m * trace.eps_i
        eps_i = (1.0 - params.alpha_s) * trace.eps_i + pre
    E = params.kappa * trace.E + (1.0 - params.kappa) * psi[:, :, None] * eps[:, None, :]
    grad = trace.grad + torch.einsum("bj,bjp->jp", L, E)
    return EpropTrace(eps, eps_i, E, grad)


def eprop_gradients(
    z_prev: torch.Tensor, x: torch.Tensor, psi: torch.Tensor, L: torch.Tensor, params: LIFParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """∇W, ∇U, ∇b of spiking e-prop from z_{t−1} (T,B,N), x_t (T,B,n_in), ψ_t and L_t (T,B,N)."""
    T, n_b, n = psi.shape
    ones = torch.ones((T, n_b, 1), dtype=psi.dtype, device=psi.device)
    pre = torch.cat([z_prev, x, ones], dim=-1)
    p = pre.shape[-1]
    zeros = lambda *shape: torch.zeros(shape, dtype=psi.dtype, device=psi.device)  # noqa: E731
    start = EpropTrace(zeros(n_b, p), None if params.cell == "box" else zeros(n_b, p), zeros(n_b, n, p), zeros(n, p))
    final = reduce(lambda tr, inp: eprop_trace_step(tr, inp, params), zip(pre, psi, L, strict=True), start)
    g = final.grad
    return g[:, :n], g[:, n : n + x.shape[-1]], g[:, -1]


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
        _check_model(model, self.name)
        x = _inputs(model, batch)
        with torch.no_grad():
            y, _, states = model(x, record_states=True)
        y = y.detach().requires_grad_(True)
        loss = task.loss(y, batch)
        (e,) = torch.autograd.grad(loss, y)  # e_t = ∂ℒ/∂y_t, (T, B, n_out)
        with torch.no_grad():
            z_prev = torch.cat([torch.zeros_like(states.z[:1]), states.z[:-1]])
            psi = pseudo_derivative(states.v_pre, model.params)
            L = e @ self.feedback_matrix(model).T
            gW, gU, gb = eprop_gradients(z_prev, x, psi, L, model.params)
            gV = torch.einsum("tbo,tbn->on", e, states.r)
            gc = e.sum(dim=(0, 1))
        grads = {"W": gW, "U": gU, "b": gb, "V": gV, "c": gc}
        return GradResult(grads, y.detach(), loss.detach())


class LIFEpropRandom(LIFEprop):
    """Spiking e-prop with a fixed random feedback matrix B (spec §3, "Shared")."""

    name = "eprop-random"

    def __init__(self, feedback_seed: int = 0):
        super().__init__("random", feedback_seed)


LIF_RULES: dict[str, type] = {"bptt": LIFBPTT, "eprop": LIFEprop, "eprop-random": LIFEpropRandom}
"""Rules for ``--model lif``: name → class; instantiate with ``LIF_RULES[name]()``."""
