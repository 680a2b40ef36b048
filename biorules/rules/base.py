"""The one interface every learning rule implements (docs/rules.md, "Shared").

A rule turns one batch of trials into parameter gradients. Gradients are summed over the trial and
averaged over the batch (the task's loss does both), then handed to the task optimiser by
``biorules.train``. The readout (V, c) gets its exact local gradient under every rule. A rule
declares the network kinds it is defined for (``kinds``) and the options it takes for each
(``options``); :func:`biorules.rules.get_rule` checks both.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Protocol

import torch


class GradResult(NamedTuple):
    """What one rule step returns."""

    grads: dict[str, torch.Tensor]
    """Gradient per parameter name of the model (``W``, ``U``, ``b``, ``V``, ``c``), per member for a stack."""
    y: torch.Tensor
    """Network outputs y_1..y_T, shape (T, B, n_out) or (T, S, B, n_out), detached."""
    loss: torch.Tensor
    """Task loss ℒ of this batch, detached: a scalar, or one per member (S,) for a stack."""


class Rule(Protocol):
    """A learning rule: ``name`` as on the CLI, the ``kinds`` it is defined for, one gradient step."""

    name: str
    kinds: ClassVar[tuple[str, ...]]  # e.g. ("rate",), ("rate", "lif")
    options: ClassVar[dict[str, tuple[str, ...]]]  # options per kind

    def gradients(self, model: torch.nn.Module, batch: Any, task: Any) -> GradResult:
        """Gradients of the task loss on ``batch`` (a task batch with x, target, mask) for ``model``."""
        ...
