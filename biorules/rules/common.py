"""Pieces shared by every rule and both network kinds (docs/rules.md, "Shared").

- Readout: ∇V = Σ_t e_t r_tᵀ and ∇c = Σ_t e_t (summed over the batch; e_t = ∂ℒ/∂y_t already
  carries the 1/(n_b n_m) of the loss), exact and local under every rule; r_t is what the readout
  reads (h_t of a rate network, the filtered spikes of a LIF network).
- Feedback: symmetric B = Vᵀ (the current V) or a fixed random B_jk ~ N(0, 1/N) from its own seed.
- The forms of the rate network: the a-form step :func:`biorules.network.rate_step` (default) or
  the r-form step :func:`biorules.network.rate_step_r`; every loop runs :func:`biorules.network.simulate`
  or the one online loop :func:`online_pass`.
- Sparse init: the W gradient is masked, ∇W ⊙ M.

Every function works on a single network and on a stack alike: weights carry an optional leading
member axis, so a stack's gradients come out per member (member s gets exactly the gradient of its
own loss, since members share no parameter).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from biorules.errors import InputError
from biorules.network import rate_step, rate_step_r, scalar, simulate

FORMS = ("a", "r")
FEEDBACKS = ("symmetric", "random")


def check_form(form: str) -> None:
    if form not in FORMS:
        raise InputError(f"form must be 'a' (a-form) or 'r' (r-form), got {form!r}")


def check_feedback(feedback: str) -> None:
    if feedback not in FEEDBACKS:
        raise InputError(f"feedback must be one of {', '.join(FEEDBACKS)}, got {feedback!r}")


def check_kind(model: Any, rule: str, kinds: tuple[str, ...]) -> str:
    """The network's kind, or InputError when ``rule`` is not defined for it."""
    kind = getattr(model, "kind", None)
    if kind not in kinds:
        raise InputError(f"rule {rule!r} needs a network of kind {' or '.join(kinds)}, got {type(model).__name__}")
    return kind


def step_fn(form: str):
    """The pure step of the a-form or r-form rate network."""
    return rate_step if form == "a" else rate_step_r


def inputs(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """The batch inputs as a tensor of the model's dtype, (T, B, n_in) or (T, S, B, n_in)."""
    return torch.as_tensor(batch.x, dtype=model.W.dtype, device=model.W.device)


def noise(model: torch.nn.Module, batch: Any) -> torch.Tensor | None:
    """The batch's activity noise η (T, ..., B, N) as a tensor of the model's dtype, or None."""
    eta = getattr(batch, "noise", None)
    if eta is None:
        return None
    if getattr(model, "kind", "rate") != "rate":
        raise InputError("activity noise is defined for rate networks only")
    return torch.as_tensor(eta, dtype=model.W.dtype, device=model.W.device)


def model_step(model: torch.nn.Module, form: str = "a") -> Callable[..., Any]:
    """``step(state, x_t[, η_t])`` of ``model`` (the r-form of a rate network with ``form="r"``)."""
    if form == "a":
        return model.step
    fn, alpha, phi = step_fn(form), model.alpha, model.nl.phi
    return lambda s, x, eta=None: fn(s, x, model.W, model.U, model.b, alpha, phi, eta)


def forward(model: torch.nn.Module, x: torch.Tensor, form: str = "a", eta: torch.Tensor | None = None) -> torch.Tensor:
    """Outputs y (T, ..., n_out) of ``model`` (autograd-able) driven by x (and the noise η), read out
    step by step so that only y, never the (T, ..., N) states, is kept (a 2048-trial test would
    otherwise hold every step's state at once)."""
    _, ys = simulate(model_step(model, form), model.initial_state(x.shape[-2]), x, noise=eta,
                     record=lambda state: model.readout(model.rates(state)))
    return torch.stack(ys)


def feedback_matrix(n: int, n_out: int, seed: int) -> np.ndarray:
    """Fixed random feedback B (N, n_out), B_jk ~ N(0, 1/N), from its own seed (docs/rules.md, "Shared")."""
    return np.random.default_rng(np.random.SeedSequence(seed)).standard_normal((n, n_out)) / math.sqrt(n)


def feedback(model: torch.nn.Module, kind: str, seed: int | tuple[int, ...]) -> torch.Tensor:
    """B (N, n_out), or (S, N, n_out) for a stack: Vᵀ (symmetric, current V) or fixed random matrices.

    A stack takes one seed per member (an int gives every member the same B).
    """
    if kind == "symmetric":
        return model.V.detach().swapaxes(-1, -2)
    n, n_out = model.V.shape[-1], model.V.shape[-2]
    if model.V.ndim == 3:
        seeds = seed if isinstance(seed, tuple) else (seed,) * model.V.shape[0]
        if len(seeds) != model.V.shape[0]:
            raise InputError(f"a stack of {model.V.shape[0]} needs as many feedback seeds, got {len(seeds)}")
    key = (n, n_out, tuple(int(s) for s in seeds) if model.V.ndim == 3 else int(seed), model.V.dtype, model.V.device)
    b = _FEEDBACK.get(key)
    if b is None:  # fixed for the run: drawn once, not at every update
        if model.V.ndim == 3:
            b = np.stack([feedback_matrix(n, n_out, s) for s in key[2]])
        else:
            b = feedback_matrix(n, n_out, key[2])
        if len(_FEEDBACK) > 64:
            _FEEDBACK.clear()
        b = _FEEDBACK[key] = torch.as_tensor(b, dtype=model.V.dtype, device=model.V.device)
    return b


_FEEDBACK: dict[tuple, torch.Tensor] = {}
"""Random feedback matrices drawn in this process, by (N, n_out, seeds, dtype, device); read only."""


def outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_r a_r b_rᵀ over the rows r of a (..., R, n) and b (..., R, m), per member: (..., n, m).

    The product runs with the narrower factor on the left, (bᵀa)ᵀ when m < n: for R = 1440 rows,
    (3 × R)(R × 64) is ~4x faster than (64 × R)(R × 3) on the CPU, for the same sum.
    """
    if b.shape[-1] < a.shape[-1]:
        return (b.swapaxes(-1, -2) @ a).swapaxes(-1, -2)
    return a.swapaxes(-1, -2) @ b


def mask_recurrent(model: torch.nn.Module, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the fixed sparse mask to ∇W (docs/model.md, ``sparse``)."""
    mask = getattr(model, "mask", None)
    if mask is not None and "W" in grads:
        grads["W"] = grads["W"] * mask
    return grads


def autograd_grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """∂ℒ/∂θ for every parameter (zeros where ℒ does not depend on it); a stack's ℒ is per member."""
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads, strict=True)}


def zero_state(model: torch.nn.Module, n_batch: int) -> Any:
    """The model's initial state, detached."""
    s = model.initial_state(n_batch)
    return type(s)(*(None if v is None else v.detach() for v in s))


def loss_steps(batch: Any) -> np.ndarray:
    """Whether any trial (of any member) has a loss at step t, (T,)."""
    return batch.mask.reshape(batch.mask.shape[0], -1).any(axis=1)


def a0_gradient(model: torch.nn.Module, g: torch.Tensor, t: int, form: str = "a") -> torch.Tensor:
    """An online rule's ∂ℒ_t/∂a_0 from g_t = ψ_t ⊙ L_t (a-form) or L_t (r-form) at step t ≥ 1.

    Only the leak carries a_0 forward once the recurrent presynaptic dependence is dropped:
    ∂a_t/∂a_0 = (1−α)^t (a-form), and ∂h_t/∂a_0 = (1−α)^t φ'(a_0) (r-form, h_0 = φ(a_0)).
    """
    leak = (1.0 - model.alpha) ** t
    if form == "a":
        return leak * g.sum(-2)
    return leak * model.nl.dphi(model.a0) * g.sum(-2)


def member_major(v: torch.Tensor) -> torch.Tensor:
    """A recording (T, ..., B, n) as (..., T, B, n), a view: a stack's member axis first."""
    return v.movedim(0, -3)


def time_major(v: torch.Tensor) -> torch.Tensor:
    """A recording (..., T, B, n) as (T, ..., B, n), a view: time first, as the tasks read it."""
    return v.movedim(-3, 0)


def trials(v: torch.Tensor) -> torch.Tensor:
    """A member-major recording (..., T, B, n) as (..., T·B, n): every (step, trial) a row, so that a
    sum over steps and trials per member, Σ_{t,b} g ⊗ p, is one batched product trials(g)ᵀ trials(p)
    (a view when the recording is contiguous; a recording stored time-major is copied)."""
    return v.flatten(-3, -2)


def backward_filter(L: torch.Tensor, decay: float) -> torch.Tensor:
    """L̃_s = Σ_{t≥s} decay^{t−s} L_t along the leading time axis (L̃_s = L_s + decay·L̃_{s+1}): the
    learning signal of the reordered batch gradients (RFLO's and spiking e-prop's ``summed``)."""
    filtered = torch.empty_like(L)
    acc, d = torch.zeros_like(L[0]), scalar(decay, L)
    for t in range(len(L) - 1, -1, -1):
        acc = torch.add(L[t], d * acc, out=filtered[t])
    return filtered


def online_pass(model: torch.nn.Module, batch: Any, task: Any, B: torch.Tensor, init: Any, advance: Any,
                learn: Any, step: Callable[..., Any] | None = None,
                apply: Callable[[dict[str, torch.Tensor]], None] | None = None) -> tuple[Any, Any]:
    """The one forward-in-time loop of the online rules (e-prop and RFLO, rate and LIF), no autograd.

    Each step reads the presynaptic activity of the state it leaves, advances the network by its
    pure step (``step``, default ``model.step``; with the batch's noise η_t), then the rule's traces
    by ``advance(trace, state, pre, x_t)``; on loss steps the learning signal L_t = B e_t (e_t in
    closed form from the task) goes to ``learn(grads, trace, state, L_t, t)`` for W, U, b (and a_0),
    and the readout gets its exact local gradient Σ e_t r_tᵀ, Σ e_t. ``init(state, x)`` builds the
    traces. With ``apply`` (online updates), each loss step's gradient is handed to
    ``apply(grads_t)`` at once, which may change the parameters before the next step (the traces
    carry on). Returns the :class:`~biorules.rules.base.GradResult` (gradients summed over the
    trial) and the final traces.
    """
    from biorules.rules.base import GradResult

    step = model.step if step is None else step
    with torch.no_grad():
        x = inputs(model, batch)
        eta = noise(model, batch)
        state = zero_state(model, x.shape[-2])
        trace = init(state, x)
        grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        now = grads if apply is None else {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        active = loss_steps(batch)
        errors = getattr(task, "step_errors", None)
        errors = (lambda y, t: task.output_error(y[None], batch, slice(t, t + 1))) if errors is None else errors(batch, x)
        ys = x.new_empty((*x.shape[:-1], model.V.shape[-2]))  # y_1..y_T, O(T·n_out)
        loss = x.new_zeros(() if getattr(model, "members", None) is None else (model.members,))
        for t in range(x.shape[0]):
            pre = model.presynaptic(state)
            state = step(state, x[t]) if eta is None else step(state, x[t], eta[t])
            trace = advance(trace, state, pre, x[t])
            r = model.rates(state)
            y = model.readout(r)
            ys[t] = y
            if not active[t]:
                continue  # e_t = 0: nothing to learn at this step
            part, e = errors(y, t)
            e = e[0]
            learn(now, trace, state, e @ B.swapaxes(-1, -2), t + 1)
            now["V"] += e.swapaxes(-1, -2) @ r
            now["c"] += e.sum(-2)
            loss += part
            if apply is not None:
                mask_recurrent(model, now)
                for n, g in now.items():
                    grads[n] += g
                apply(now)
                now = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    return GradResult(grads if apply is not None else mask_recurrent(model, grads), ys, loss), trace

