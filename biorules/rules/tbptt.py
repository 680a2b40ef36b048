"""Truncated BPTT with window K (docs/rules.md, "Truncated BPTT", K = 10 by default).

- ``chunk`` (default): the state is detached after every step t with t mod K = 0, so gradients
  flow back at most to the start of their chunk, and δ_t = ψ_t ⊙ Vᵀe_t at the chunk's last step.
  Each chunk is backpropagated as soon as it ends (memory O(K·N)).
- ``sliding``: each loss term ℓ_s is backpropagated exactly K steps (t = s−K+1..s), by the
  explicit δ recursion of :func:`biorules.rules.bptt.manual_gradients`.

U and b use the same truncated δ; V and c get the exact local gradient. K ≥ T gives BPTT; K = 1
gives ∇W = α Σ_t (ψ_t ⊙ Vᵀe_t) h_{t−1}ᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from biorules.errors import InputError
from biorules.network import RateState, simulate
from biorules.rules.base import GradResult
from biorules.rules.bptt import manual_gradients
from biorules.rules.common import (
    autograd_grads,
    check_kind,
    forward,
    inputs,
    mask_recurrent,
    model_step,
    noise,
)

MODES = ("chunk", "sliding")


@dataclass(frozen=True)
class TBPTT:
    """Truncated BPTT: ``window`` K steps, ``mode`` chunk or sliding (a-form network)."""

    name: str = "tbptt"
    window: int = 10
    mode: str = "chunk"
    kinds: ClassVar[tuple[str, ...]] = ("rate",)
    options: ClassVar[dict[str, tuple[str, ...]]] = {"rate": ("window", "mode")}

    def __post_init__(self) -> None:
        if int(self.window) < 1:
            raise InputError(f"the tbptt window must be at least 1 step, got {self.window}")
        if self.mode not in MODES:
            raise InputError(f"tbptt mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def forward(self, model: torch.nn.Module, x: torch.Tensor, eta: torch.Tensor | None = None) -> torch.Tensor:
        return forward(model, x, "a", eta)

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        check_kind(model, self.name, self.kinds)
        if self.mode == "sliding":
            return manual_gradients(model, batch, task, window=int(self.window))
        x, eta = inputs(model, batch), noise(model, batch)
        K, T = int(self.window), x.shape[0]
        state = model.initial_state(x.shape[-2])
        step = model_step(model, "a")
        grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        ys, loss = [], x.new_zeros(() if model.members is None else (model.members,))
        for start in range(0, T, K):
            stop = min(start + K, T)
            final, states = simulate(step, state, x[start:stop], noise=None if eta is None else eta[start:stop])
            y = model.readout(torch.stack([s.h for s in states]))
            ys.append(y.detach())
            if batch.mask[start:stop].any():
                part = task.partial_loss(y, batch, slice(start, stop))
                for n, g in autograd_grads(model, part).items():
                    grads[n] += g
                loss = loss + part.detach()
            state = RateState(final.a.detach(), final.h.detach())  # detach after t mod K = 0
        return GradResult(mask_recurrent(model, grads), torch.cat(ys), loss)
