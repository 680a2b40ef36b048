"""Pieces shared by the rate-network rules (spec §3, "Shared").

- Readout: ∇V = Σ_t e_t h_tᵀ and ∇c = Σ_t e_t (summed over the batch; e_t = ∂ℒ/∂y_t already
  carries the 1/(n_b n_m) of the loss), exact and local under every rule.
- Feedback: symmetric B = Vᵀ (the current V) or a fixed random B_jk ~ N(0, 1/N) from its own seed.
- The forms: the a-form step :func:`biorules.network.rate_step` (default) or the r-form step
  :func:`biorules.network.rate_step_r`, both run by :func:`biorules.network.simulate`.
- Sparse init: the W gradient is masked, ∇W ⊙ M.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from biorules.errors import InputError
from biorules.network import RateState, rate_step, rate_step_r, simulate

FORMS = ("a", "r")
FEEDBACKS = ("symmetric", "random")


def check_form(form: str) -> None:
    if form not in FORMS:
        raise InputError(f"form must be 'a' (a-form) or 'r' (r-form), got {form!r}")


def check_feedback(feedback: str) -> None:
    if feedback not in FEEDBACKS:
        raise InputError(f"feedback must be one of {', '.join(FEEDBACKS)}, got {feedback!r}")


def step_fn(form: str):
    """The pure step of the a-form or r-form network."""
    return rate_step if form == "a" else rate_step_r


def inputs(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """The batch inputs as a tensor of the model's dtype, (T, B, n_in)."""
    return torch.as_tensor(batch.x, dtype=model.W.dtype, device=model.W.device)


def model_step(model: torch.nn.Module, form: str):
    """``step(state, x_t)`` of ``model`` in ``form``, with the model's current parameters."""
    fn, alpha, phi = step_fn(form), model.params.alpha, model.nl.phi
    return lambda s, x: fn(s, x, model.W, model.U, model.b, alpha, phi)


def forward(model: torch.nn.Module, x: torch.Tensor, form: str = "a") -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs y (T, B, n_out) and rates h (T, B, N) of ``model`` in ``form`` (autograd-able)."""
    _, states = simulate(model_step(model, form), model.initial_state(x.shape[1]), x)
    h = torch.stack([s.h for s in states])
    return model.readout(h), h


def feedback(model: torch.nn.Module, kind: str, seed: int) -> torch.Tensor:
    """B (N, n_out): Vᵀ (symmetric, current V) or a fixed random matrix, B_jk ~ N(0, 1/N)."""
    if kind == "symmetric":
        return model.V.detach().T
    n, n_out = model.V.shape[1], model.V.shape[0]
    b = np.random.default_rng(seed).standard_normal((n, n_out)) / np.sqrt(n)
    return torch.as_tensor(b, dtype=model.V.dtype, device=model.V.device)


def mask_recurrent(model: torch.nn.Module, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the fixed sparse mask to ∇W (spec §1, ``sparse``)."""
    mask = getattr(model, "mask", None)
    if mask is not None and "W" in grads:
        grads["W"] = grads["W"] * mask
    return grads


def autograd_grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """∂ℒ/∂θ for every parameter of ``model`` (zeros where ℒ does not depend on it)."""
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads, strict=True)}


def zero_state(model: torch.nn.Module, n_batch: int) -> RateState:
    """The model's initial state (a_0 = 0, h_0 = φ(0)), detached."""
    s = model.initial_state(n_batch)
    return RateState(s.a.detach(), s.h.detach())


def online_pass(model: torch.nn.Module, batch: Any, task: Any, form: str, B: torch.Tensor,
                init: Any, advance: Any, learn: Any) -> tuple[Any, Any]:
    """The one forward-in-time loop of the online rules (e-prop, RFLO), without autograd.

    Each step advances the network by its pure step, then the rule's traces by
    ``advance(trace, state, h_prev, x_t)``; on loss steps the learning signal L_t = B e_t (e_t in
    closed form from the task) goes to ``learn(grads, trace, state, L_t)`` for W, U and b, and the
    readout gets its exact local gradient Σ e_t h_tᵀ, Σ e_t. ``init(state, x)`` builds the traces.
    Returns the :class:`~biorules.rules.base.GradResult` and the final traces.
    """
    from biorules.rules.base import GradResult

    with torch.no_grad():
        x = inputs(model, batch)
        state = zero_state(model, x.shape[1])
        step = model_step(model, form)
        trace = init(state, x)
        grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        active = batch.mask.any(axis=1)
        ys = x.new_empty((x.shape[0], x.shape[1], model.V.shape[0]))  # y_1..y_T, O(T·n_out)
        loss = torch.zeros((), dtype=x.dtype)
        for t in range(x.shape[0]):
            h_prev = state.h
            state = step(state, x[t])
            trace = advance(trace, state, h_prev, x[t])
            y = model.readout(state.h)
            ys[t] = y
            if not active[t]:
                continue  # e_t = 0: nothing to learn at this step
            part, e = task.output_error(y[None], batch, slice(t, t + 1))
            e = e[0]
            learn(grads, trace, state, e @ B.T)
            grads["V"] += e.T @ state.h
            grads["c"] += e.sum(0)
            loss += part
    return GradResult(mask_recurrent(model, grads), ys, loss), trace
