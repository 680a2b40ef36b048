"""Flossing of untrained networks and the alignment of the plausible flossing gradients (docs/flossing.md).

``floss_untrained`` floss a freshly built network and measures its spectrum before and after
(its weights before and after, ``W`` ... ``c`` with a ``stage`` dim, go to a store's ``weights`` group);
``gradient_alignment`` compares each plausible mode's ∇W with the exact one on the same windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from biorules.errors import InputError
from biorules.flossing import FlossConfig, Flosser, floss_gradients, task_stream


def floss_untrained(params: Any, cfg: FlossConfig, steps: int, *, measure_steps: int | None = None,
                    progress: bool = False, dtype: torch.dtype = torch.float64) -> Any:
    """Floss a freshly built network for ``steps`` steps: λ before and after, and the loss curve.

    λ is measured by the numba QR estimator (autonomous, with the network's bias), per τ, for the
    flossed number of exponents; ``measure_steps`` is its T_acc (default 400 τ). Returns a Dataset
    with dims ``step`` and ``exponent``, and the weights before and after (``stage``).
    """
    import time

    import xarray as xr

    from biorules.lyapunov import spectrum
    from biorules.network import RateRNN
    from biorules.provenance import provenance_attrs
    from biorules.store import STATUS
    from biorules.weights import network_weights, weights_dataset

    if steps < 1:
        raise InputError(f"the number of flossing steps must be positive, got {steps}")
    t0 = time.perf_counter()
    model = RateRNN(params, dtype=dtype)
    flosser = Flosser(model, cfg)
    k = flosser.cfg.n_exponents

    def measure() -> Any:
        return spectrum(model.W.detach().cpu().numpy(), alpha=params.alpha, nonlinearity=params.nonlinearity,
                        b=model.b.detach().cpu().numpy(), n_exponents=k, steps=measure_steps, unit="tau",
                        seed=params.seed)

    W0 = model.W.detach().clone()
    initial = network_weights(model)
    before = measure()
    results = flosser.run(steps, progress=progress)
    after = measure()
    loss = np.full(steps, np.nan)
    lam_hat = np.full((steps, k), np.nan)
    for i, r in enumerate(results):
        loss[i] = float(r.loss)
        lam_hat[i] = r.lam.cpu().numpy() / params.alpha
    finite = bool(np.isfinite(loss).all() and np.isfinite(after.values).all())
    per_tau = {"units": "1/tau"}
    ds = xr.Dataset(
        {
            "lambda_before": ("exponent", before.values, {**per_tau, "long_name": "Lyapunov exponent before flossing"}),
            "lambda_after": ("exponent", after.values, {**per_tau, "long_name": "Lyapunov exponent after flossing"}),
            "floss_loss": ("step", loss, {"units": "1/step^2", "long_name": "flossing loss (1/k) sum (lambda_hat - target)^2"}),
            "lambda_hat": (("step", "exponent"), lam_hat,
                           {**per_tau, "long_name": "finite-window exponent estimate of each flossing step"}),
            "weight_change": ((), float((model.W.detach() - W0).norm() / W0.norm()),
                              {"units": "1", "long_name": "||W - W0||_F / ||W0||_F"}),
            "status": ((), np.int8(STATUS["done" if finite else "diverged"]),
                       {"long_name": "run status", "flag_values": list(STATUS.values()),
                        "flag_meanings": " ".join(STATUS)}),
            "wall_time": ((), time.perf_counter() - t0, {"units": "s"}),
        },
        coords={"step": ("step", np.arange(1, steps + 1), {"long_name": "flossing step"}),
                "exponent": ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"})},
        attrs={"title": "gradient flossing of an untrained network", **params.to_attrs(),
               **flosser.cfg.to_attrs(), "target_per_tau": flosser.cfg.target / params.alpha,
               **provenance_attrs()},
    )
    return ds.assign(weights_dataset(initial, network_weights(model), params).data_vars)


def gradient_alignment(gain: float, seeds: Any = (0, 1, 2), *, n: int = 32, task: str = "2af", batch: int = 8,
                       transient: int = 16, window: int = 55, modes: Any = ("local", "eprop")) -> dict[str, list[float]]:
    """Cosine of each plausible mode's ∇W with the exact one on the same task-driven windows (docs/flossing.md).

    One value per seed: a fresh N-unit network of gain g, k = 1, the same initial states and inputs.
    """
    from biorules.network import NetworkParams, RateRNN
    from biorules.tasks import make_task

    the_task = make_task(task)
    cos: dict[str, list[float]] = {m: [] for m in modes}
    for seed in seeds:
        model = RateRNN(NetworkParams(n=n, gain=gain, seed=seed, n_in=the_task.n_in, n_out=the_task.n_out),
                        dtype=torch.float64)
        x = task_stream(the_task, transient + window, batch, seed)
        base = dict(n_exponents=1, transient=transient, window=window, batch=batch, seed=seed)
        exact = floss_gradients(model, FlossConfig(mode="exact", **base), inputs=x)
        for mode in modes:
            cos[mode].append(gradient_cosine(floss_gradients(model, FlossConfig(mode=mode, **base), inputs=x).grads,
                                             exact.grads))
    return cos


def gradient_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names=("W",)) -> float:
    """Cosine similarity of two gradients over the named parameters."""
    va = torch.cat([a[n].reshape(-1) for n in names])
    vb = torch.cat([b[n].reshape(-1) for n in names])
    return float(va @ vb / (va.norm() * vb.norm()))
