"""Backpropagation through time, the exact reference (docs/rules.md, "BPTT"), for rate and LIF networks.

With δ_t := ∂ℒ/∂a_t and ψ_t = φ'(a_t), for the rate network

    δ_t = ψ_t ⊙ Vᵀe_t + D_tᵀδ_{t+1},   δ_{T+1} = 0,   D_tᵀδ = (1−α)δ + αψ_t ⊙ Wᵀδ,
    ∇W = α Σ_t δ_t h_{t−1}ᵀ,   ∇U = α Σ_t δ_t x_tᵀ,   ∇b = α Σ_t δ_t,   ∇a_0 = D_0ᵀ δ_1 (learned a_0),

and ∇V = Σ_t e_t h_tᵀ, ∇c = Σ_t e_t. :class:`BPTT` gets these by autograd through the network's one
pure step (a-form, or the rate r-form with ``form="r"``; for the LIF network the surrogate ψ_t
stands in for ∂z_t/∂ṽ_t and the reset is detached, as in :func:`biorules.spiking.lif_step`);
:func:`manual_gradients` runs the δ recursion above explicitly (a-form), in full or with each loss
step backpropagated exactly ``window`` steps (the ``sliding`` truncation of docs/rules.md, "Truncated
BPTT"). Memory O(T·N). A stack's gradients come out per member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from biorules.network import simulate
from biorules.rules.base import GradResult
from biorules.rules.common import (
    autograd_grads,
    check_form,
    check_kind,
    forward,
    inputs,
    mask_recurrent,
    model_step,
    noise,
    zero_state,
)


@dataclass(frozen=True)
class BPTT:
    """Exact gradients by autograd through the whole trial."""

    name: str = "bptt"
    form: str = "a"
    """``a`` (a-form rate network, default) or ``r`` (r-form rate network)."""
    kinds: ClassVar[tuple[str, ...]] = ("rate", "lif")
    options: ClassVar[dict[str, tuple[str, ...]]] = {"rate": ("form",), "lif": ()}

    def __post_init__(self) -> None:
        check_form(self.form)

    def forward(self, model: torch.nn.Module, x: torch.Tensor, eta: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs y (T, B, n_out) of the network this rule trains."""
        return forward(model, x, self.form, eta)

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        check_kind(model, self.name, self.kinds)
        y = forward(model, inputs(model, batch), self.form, noise(model, batch))
        loss = task.loss(y, batch)
        grads = mask_recurrent(model, autograd_grads(model, loss))
        return GradResult(grads, y.detach(), loss.detach())


def manual_gradients(model: torch.nn.Module, batch: Any, task: Any, window: int | None = None) -> GradResult:
    """BPTT by the explicit δ recursion (a-form), no autograd.

    ``window=None``: the full δ_t. ``window=K``: δ^K_t = Σ_{k<K} G_k[t], where G_0[t] = ψ_t ⊙ Vᵀe_t
    and G_{k+1}[t] = D_tᵀ G_k[t+1], i.e. each loss step ℓ_s is backpropagated exactly K steps.
    """
    alpha, dphi = model.alpha, model.nl.dphi
    with torch.no_grad():
        x = inputs(model, batch)
        start = zero_state(model, x.shape[-2])
        _, states = simulate(model_step(model, "a"), start, x, noise=noise(model, batch))
        a = torch.stack([s.a for s in states])
        h = torch.stack([s.h for s in states])
        h_prev = torch.cat([start.h[None], h[:-1]])
        y = model.readout(h)
        loss, e = task.output_error(y, batch)
        psi = dphi(a)
        W = model.W
        direct = psi * (e @ model.V)  # ψ_t ⊙ Vᵀe_t, (T, ..., B, N)
        if window is None:
            delta = torch.empty_like(direct)
            nxt = torch.zeros_like(direct[0])
            for t in range(len(direct) - 1, -1, -1):
                nxt = direct[t] + (1.0 - alpha) * nxt + alpha * psi[t] * (nxt @ W)
                delta[t] = nxt
        else:
            delta, g = direct.clone(), direct
            for _ in range(1, window):
                back = (1.0 - alpha) * g[1:] + alpha * psi[:-1] * (g[1:] @ W)
                g = torch.cat([back, torch.zeros_like(g[:1])])
                delta += g
        grads = {
            "W": alpha * torch.einsum("t...bi,t...bj->...ij", delta, h_prev),
            "U": alpha * torch.einsum("t...bi,t...bj->...ij", delta, x),
            "b": alpha * delta.sum(0).sum(-2),
            "V": torch.einsum("t...bo,t...bn->...on", e, h),
            "c": e.sum(0).sum(-2),
        }
        if getattr(model, "a0", None) is not None:  # δ_0 = D_0ᵀ δ_1, ψ_0 = φ'(a_0) (truncated: δ^K_1)
            psi0 = dphi(start.a)
            grads["a0"] = ((1.0 - alpha) * delta[0] + alpha * psi0 * (delta[0] @ W)).sum(-2)
    return GradResult(mask_recurrent(model, grads), y, loss)
