"""Gradient flossing: drive the top Lyapunov exponents toward a target λ*, docs/flossing.md.

Flossing loss over the k largest per-step exponents of a finite window,

    ℒ_f = (1/k) Σ_{i≤k} (λ̂_i − λ*)²,   λ̂_i = (1/(B T)) Σ_b Σ_t ln|R_{t,ii}|,   D_t Q_t = Q_{t+1} R_t,

with D_t = (1−α)I + α W diag(ψ_t), ψ_t = φ'(a_t). Three modes give its gradient:

``exact``  autograd through the whole window: state, Q and transient (Engelken 2023).
``local``  a_t and Q_t held constant; with Q̃_t = Q_t R_t⁻¹,
           ∂ln|R_{t,ii}|/∂W = α q_{t+1,i} (ψ_t ⊙ q̃_{t,i})ᵀ — a three-factor rule
           ΔW_ij ∝ −M post_{t,i} pre_{t,j}, M = 2(λ̂ − λ*), post = q_{t+1,i}, pre = ψ_{t,j} q̃_{t,i,j}.
           Only W changes (U and b reach D_t only through a_t).
``eprop``  the e-prop truncation (W sg(h_{t−1}), sg(Q_t), leak kept): the local term plus
           Σ_t ℓ^{(i)}_t (ε^h_t)ᵀ, ℓ^{(i)}_{t,j} = α φ''(a_{t,j}) q̃_{t,i,j} (Wᵀ q_{t+1,i})_j, with
           the eligibility vectors ε^h_t = (1−α)ε^h_{t−1} + α h_{t−1} (ε^x with x_t, ε^1 with 1) for U, b.

``local`` and ``eprop`` run forward in time with no backpropagation; each flossing step is one
step of a separate optimiser; the readout (V, c) is never flossed. Every state update is the
network's own step (:meth:`biorules.network.RateRNN.step`).

A stack of networks flosses in one tensor program: every tensor gains the member axis, λ̂ is (S, k)
and each member's ℒ_f, gradient and optimiser state are its own (member s gets exactly the numbers
it would get alone, with its own seed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from biorules.errors import InputError
from biorules.lyapunov import lyapunov_window, qr_step, tangent_map
from biorules.optim import Adam

MODES = ("exact", "local", "eprop")
SIDES = ("both", "below", "above")
FLOSSED = ("W", "U", "b")
"""Parameters flossing may change; the readout is excluded in every mode."""

# per-mode window defaults (docs/flossing.md): exact follows Engelken's 16 + 39 steps at batch 1; local and
# eprop use the reference-behaviour setup of docs/flossing.md test 4 (T_tr = 50, T = 150, batch 4)
_WINDOWS = {"exact": (16, 39, 1), "local": (50, 150, 4), "eprop": (50, 150, 4)}


@dataclass(frozen=True)
class FlossConfig:
    """One flossing setup (docs/flossing.md). Exponents and the target are per step."""

    mode: str = "local"
    """``exact``, ``local`` or ``eprop``."""
    n_exponents: int | None = None
    """k exponents flossed [1]; default min(75, N) for exact, 1 for local and eprop."""
    target: float = 0.0
    """λ*, target of each exponent [1/step]."""
    transient: int | None = None
    """Window steps with QR but no accumulation [steps]; default 16 (exact) or 50."""
    window: int | None = None
    """T accumulated steps [steps]; default 39 (exact) or 150."""
    batch: int | None = None
    """Trials (initial states) per flossing step [1]; default 1 (exact) or 4."""
    relax: int = 100
    """Autonomous relaxation of a ~ N(0, I) before each window, no gradient [steps]."""
    lr: float | None = None
    """Learning rate of the flossing Adam optimiser; default 1e-3 (exact, Engelken's) or 3e-4.

    local/eprop at 1e-3 overshoot on stable networks (g < 1): once λ crosses 0 the fixed point
    a = 0 loses stability and Adam's unit-size steps keep λ oscillating by ~0.05/step at N = 200;
    at 3e-4 they settle within 1e-3 of the target (measurements in the flossing benchmark notes)."""
    seed: int = 0
    """Seed of initial states and Q_0 (s_ons); Q_0 is the same at every call."""
    side: str = "both"
    """Which exponents are pulled toward λ*: ``both``; ``below`` only those under it (raise a
    stable network's λ, leave a chaotic one alone); ``above`` only those over it. One-sided
    flossing weights each term of ℒ_f by 1[λ̂_i < λ*] (or >)."""

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise InputError(f"flossing side must be one of {', '.join(SIDES)}, got {self.side!r}")
        if self.mode not in MODES:
            raise InputError(f"unknown flossing mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for name in ("transient", "window", "batch", "n_exponents"):
            v = getattr(self, name)
            if v is not None and (v < (0 if name == "transient" else 1)):
                raise InputError(f"flossing {name} must be {'non-negative' if name == 'transient' else 'positive'}, got {v}")
        if self.relax < 0:
            raise InputError(f"flossing relax must be non-negative, got {self.relax}")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"flossing lr must be positive, got {self.lr}")

    def resolved(self, n: int) -> FlossConfig:
        """The config with every default filled in for a network of ``n`` units."""
        tr, win, batch = _WINDOWS[self.mode]
        k = self.n_exponents if self.n_exponents is not None else (min(75, n) if self.mode == "exact" else 1)
        if k > n:
            raise InputError(f"cannot floss {k} exponents of a network with {n} units")
        lr = (1e-3 if self.mode == "exact" else 3e-4) if self.lr is None else self.lr
        return replace(self, n_exponents=k, lr=lr, transient=tr if self.transient is None else self.transient,
                       window=win if self.window is None else self.window,
                       batch=batch if self.batch is None else self.batch)

    def to_attrs(self) -> dict[str, Any]:
        return {f"floss_{k}": ("" if v is None else v) for k, v in asdict(self).items()}


class FlossResult(NamedTuple):
    """Gradients of ℒ_f for W, U, b (zeros where a mode gives none), λ̂ (k,) and ℒ_f."""

    grads: dict[str, torch.Tensor]
    lam: torch.Tensor
    loss: torch.Tensor


# --------------------------------------------------------------------------------------------
# window set-up
# --------------------------------------------------------------------------------------------


def _seeds(model: Any, cfg: FlossConfig, seeds: tuple[int, ...] | None) -> tuple[int, ...]:
    """One flossing seed per member (a single network: ``cfg.seed``)."""
    if seeds is None:
        seeds = (cfg.seed,) * (model.members or 1)
    if len(seeds) != (model.members or 1):
        raise InputError(f"a stack of {model.members} needs as many flossing seeds, got {len(seeds)}")
    return tuple(int(x) for x in seeds)


def _window_start(model: Any, cfg: FlossConfig, step: int, seeds: tuple[int, ...] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxed initial states a_0 (B, N) for flossing step ``step`` and Q_0 (N, k), the same every
    call; a stack gets (S, B, N) and (S, N, k), member s from its own seed."""
    from biorules.network import RateState

    n, dtype, device = model.n, model.W.dtype, model.W.device
    a0, q0 = [], []
    for seed in _seeds(model, cfg, seeds):
        rng_a = np.random.default_rng(np.random.SeedSequence([seed, 0, step]))
        rng_q = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        a0.append(rng_a.standard_normal((cfg.batch, n)))
        q0.append(np.linalg.qr(rng_q.standard_normal((n, cfg.n_exponents)))[0])
    pick = (lambda v: np.stack(v)) if model.members is not None else (lambda v: v[0])
    a = torch.as_tensor(pick(a0), dtype=dtype, device=device)
    with torch.no_grad():
        state = RateState(a, model.nl.phi(a))
        for _ in range(cfg.relax):
            state = model.step(state, None)
    return state.a, torch.as_tensor(pick(q0), dtype=dtype, device=device)


def _check_inputs(model: Any, inputs: torch.Tensor | None, cfg: FlossConfig) -> None:
    lead = (cfg.transient + cfg.window,) + (() if model.members is None else (model.members,)) + (cfg.batch,)
    if inputs is not None and tuple(inputs.shape[:-1]) != lead:
        raise InputError(f"flossing inputs must be (transient + window, [members,] batch, n_in) = "
                         f"{(*lead, model.U.shape[-1])}, got {tuple(inputs.shape)}")


def _side(lam: torch.Tensor, cfg: FlossConfig) -> torch.Tensor:
    """The weights w_i of ℒ_f's terms: 1, 1[λ̂_i < λ*] or 1[λ̂_i > λ*] (no gradient through them)."""
    lam = lam.detach()
    if cfg.side == "below":
        return (lam < cfg.target).to(lam.dtype)
    if cfg.side == "above":
        return (lam > cfg.target).to(lam.dtype)
    return torch.ones_like(lam)


def _loss(lam: torch.Tensor, cfg: FlossConfig) -> torch.Tensor:
    """ℒ_f = (1/k) Σ_i w_i (λ̂_i − λ*)², per member of a stack (w_i = 1 unless one-sided)."""
    return (_side(lam, cfg) * (lam - cfg.target) ** 2).mean(-1)


def _exact(model: Any, cfg: FlossConfig, a0, q0, inputs) -> FlossResult:
    params = [getattr(model, p) for p in FLOSSED]
    lam = lyapunov_window(model, a0, q0, cfg.transient, cfg.window, inputs)
    loss = _loss(lam, cfg)
    grads = torch.autograd.grad(loss.sum(), params, allow_unused=True)
    grads = {p: torch.zeros_like(getattr(model, p)) if g is None else g for p, g in zip(FLOSSED, grads, strict=True)}
    return FlossResult(grads, lam.detach(), loss.detach())


# --------------------------------------------------------------------------------------------
# local and eprop: forward in time, no backpropagation
# --------------------------------------------------------------------------------------------

_CHUNK = 32
"""Steps of post/pre factors buffered before they are folded into the weight update by one matrix
product: the same sum as per-step outer products, at BLAS-3 speed and with memory fixed in T."""


class _OuterSum:
    """Σ over buffered steps and batch of post_{·,i} preᵀ_{·,i}, per exponent i: (..., k, N, M)."""

    def __init__(self, shape: tuple[int, ...], like: torch.Tensor):
        self.total = like.new_zeros(shape)
        self.post: list[torch.Tensor] = []
        self.pre: list[torch.Tensor] = []

    def add(self, post: torch.Tensor, pre: torch.Tensor) -> None:
        """post (..., B, k, N), pre (..., B, k, M) (or (..., B, M): the same factor for every i)."""
        self.post.append(post)
        self.pre.append(pre if pre.dim() == post.dim() else pre.unsqueeze(-2).expand(*post.shape[:-1], pre.shape[-1]))
        if len(self.post) == _CHUNK:
            self.flush()

    def flush(self) -> torch.Tensor:
        if self.post:
            P = torch.cat(self.post, dim=-3).movedim(-2, -3)  # (..., k, steps·B, N)
            R = torch.cat(self.pre, dim=-3).movedim(-2, -3)  # (..., k, steps·B, M)
            self.total += P.mT @ R
            self.post, self.pre = [], []
        return self.total


@torch.no_grad()
def _forward_rules(model: Any, cfg: FlossConfig, a0, q0, inputs) -> FlossResult:
    from biorules.network import RateState

    alpha, nl, W = model.alpha, model.nl, model.W
    *lead, B, N = a0.shape
    k, T = cfg.n_exponents, cfg.window
    eprop = cfg.mode == "eprop"
    n_in = model.U.shape[-1]
    state = RateState(a0.clone(), nl.phi(a0))
    Q = q0.mT.unsqueeze(-3).expand(*lead, B, k, N).clone()  # the basis by rows: Q[..., b, i] = q_i
    radii = []  # |R_t,ii| of the accumulated steps, (..., B, k) each; their logs are summed once
    E_loc = _OuterSum((*lead, k, N, N), a0)  # Σ_t q_{t+1,i} (ψ_t ⊙ q̃_{t,i})ᵀ
    if eprop:
        E_w, E_u = _OuterSum((*lead, k, N, N), a0), _OuterSum((*lead, k, N, n_in), a0)
        E_b = a0.new_zeros((*lead, k, N))
        eps_h = a0.new_zeros((*lead, B, N))
        eps_x = a0.new_zeros((*lead, B, n_in))
        eps_1 = 0.0
    for t in range(cfg.transient + T):
        h = state.h
        psi = nl.dphi_h(h)  # φ'(a_t) from h_t = φ(a_t), the same numbers
        M = tangent_map(W, alpha, psi, Q)
        if t >= cfg.transient:
            if k == 1:
                Qn, r = qr_step(M)
                Qt = Q / r.unsqueeze(-1)  # Q̃_t = Q_t R_t⁻¹
            else:
                Qc, R = torch.linalg.qr(M.mT)
                Qn, r = Qc.mT, torch.diagonal(R, dim1=-2, dim2=-1)
                Qt = torch.linalg.solve_triangular(R, Q.mT, upper=True, left=False).mT
            radii.append(r)
            E_loc.add(Qn, psi.unsqueeze(-2) * Qt)
            if eprop:  # ℓ/α = φ''(a_t) ⊙ q̃_{t,i} ⊙ (Wᵀ q_{t+1,i}), the rows of Q_{t+1} W
                WtQ = (Qn.reshape(*lead, B * k, N) @ W).reshape(Qn.shape)
                ell = nl.d2phi_h(h).unsqueeze(-2) * Qt * WtQ
                E_w.add(ell, eps_h)
                if inputs is not None:
                    E_u.add(ell, eps_x)
                E_b += ell.sum(-3) * eps_1
        else:
            Qn = qr_step(M)[0]
        Q = Qn
        x = None if inputs is None else inputs[t]
        if eprop:  # eligibility of a_{t+1}: ε_{t+1} = (1−α)ε_t + α·(presynaptic factor at t)
            eps_h = eps_h.lerp(h, alpha)
            if x is not None:
                eps_x = eps_x.lerp(x, alpha)
            eps_1 = (1 - alpha) * eps_1 + alpha
        state = model.step(state, x)
    lam = torch.log(torch.abs(torch.stack(radii))).sum((0, -2)) / (B * T)
    coef = (2.0 / k) * _side(lam, cfg) * (lam - cfg.target) * alpha / (B * T)  # ∂ℒ_f/∂λ̂_i × the 1/(BT) mean
    gW = torch.einsum("...i,...inm->...nm", coef, E_loc.flush())
    gU, gb = torch.zeros_like(model.U), torch.zeros_like(model.b)
    if eprop:
        gW = gW + torch.einsum("...i,...inm->...nm", coef, E_w.flush())
        gU = torch.einsum("...i,...inm->...nm", coef, E_u.flush())
        gb = torch.einsum("...i,...in->...n", coef, E_b)
    return FlossResult({"W": gW, "U": gU, "b": gb}, lam, _loss(lam, cfg))


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def floss_gradients(model: Any, cfg: FlossConfig, step: int = 0, inputs: torch.Tensor | None = None,
                    seeds: tuple[int, ...] | None = None) -> FlossResult:
    """ℒ_f, λ̂ and the gradients of ``cfg.mode`` for a rate network (``RateRNN``, single or a stack)
    at flossing ``step``.

    ``inputs`` (transient + window, [S,] batch, n_in) drive the window (a task stream); None is
    autonomous. ``seeds``: one flossing seed per member of a stack (default ``cfg.seed``).
    """
    cfg = cfg.resolved(model.n)
    _check_inputs(model, inputs, cfg)
    a0, q0 = _window_start(model, cfg, step, seeds)
    if cfg.mode == "exact":
        return _exact(model, cfg, a0, q0, inputs)
    return _forward_rules(model, cfg, a0, q0, inputs)


class Flosser:
    """Applies flossing steps to a model with its own optimiser (Adam), separate from the task's.

    Adam acts elementwise, so each member of a stack has its own optimiser state.
    """

    def __init__(self, model: Any, cfg: FlossConfig, seeds: tuple[int, ...] | None = None):
        self.model = model
        self.cfg = cfg.resolved(model.n)
        self.seeds = _seeds(model, self.cfg, seeds)
        self.optimizer = Adam([getattr(model, p) for p in FLOSSED], lr=self.cfg.lr, betas=(0.9, 0.999))
        self.steps_done = 0

    def step(self, inputs: torch.Tensor | None = None) -> FlossResult:
        """One flossing step: gradients of ℒ_f, then one optimiser step on W, U, b."""
        res = floss_gradients(self.model, self.cfg, self.steps_done, inputs, self.seeds)
        self.optimizer.zero_grad(set_to_none=True)
        for p in FLOSSED:
            param = getattr(self.model, p)
            g = res.grads[p]
            if p == "W" and getattr(self.model, "mask", None) is not None:
                g = g * self.model.mask
            param.grad = g.detach().to(param.dtype)
        self.optimizer.step()
        self.steps_done += 1
        return res

    def run(self, steps: int, progress: bool = False) -> list[FlossResult]:
        """``steps`` autonomous flossing steps; NaN/inf stops early (the results so far are returned)."""
        from tqdm.auto import tqdm

        out = []
        for _ in tqdm(range(steps), disable=not progress, desc=f"floss ({self.cfg.mode})", unit="step"):
            res = self.step()
            out.append(res)
            if not bool(torch.isfinite(res.loss).all()):
                break
        return out


def task_stream(task: Any, steps: int, batch: int, seed: int) -> torch.Tensor:
    """Inputs (steps, batch, n_in) of concatenated trials of ``task``: the driven flossing window."""
    chunks, total, i = [], 0, 0
    while total < steps:
        x = task.batch(batch, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0])).x
        chunks.append(x)
        total += x.shape[0]
        i += 1
    return torch.as_tensor(np.concatenate(chunks)[:steps])


@dataclass(frozen=True)
class FlossSchedule:
    """When to floss around training (Engelken's E_p, E_i, E_f, N_i; docs/flossing.md, "Schedule")."""

    pre: int = 50
    """E_p flossing steps before the first training update."""
    every: int = 10
    """E_f: a bout before each training update u > 0 with u mod E_f = 0."""
    steps: int = 50
    """E_i flossing steps per interleaved bout."""
    times: int = 2
    """N_i, the most interleaved bouts."""

    def __post_init__(self) -> None:
        for name in ("pre", "steps", "times"):
            if getattr(self, name) < 0:
                raise InputError(f"flossing {name} must be non-negative, got {getattr(self, name)}")
        if self.every < 1:
            raise InputError(f"flossing every must be positive, got {self.every}")

    def steps_before(self, update: int) -> int:
        """Flossing steps to run before training update ``update`` (0-based)."""
        if update == 0:
            return self.pre
        if update % self.every == 0 and update // self.every <= self.times:
            return self.steps
        return 0


class FlossHook:
    """``on_update(u, model)`` for :func:`biorules.train.train`: flossing bouts on a schedule.

    Windows are driven by a stream of the training task's trials (``driven=True``) or autonomous.
    The flossing optimiser is created on first use and kept, separate from the task optimiser.
    ``records`` keeps (update, ℒ_f, λ̂_1) of every flossing step (one row per member of a stack).
    ``seeds``: one flossing seed per member of a stack (default ``cfg.seed``).
    """

    def __init__(self, cfg: FlossConfig, schedule: FlossSchedule, task: Any = None, driven: bool = True,
                 seeds: tuple[int, ...] | None = None):
        self.cfg, self.schedule, self.task = cfg, schedule, task
        self.driven = driven
        self.seeds = seeds
        self.flosser: Flosser | None = None
        self.records: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.__name__ = f"floss_{cfg.mode}"

    def __call__(self, update: int, model: Any) -> None:
        n = self.schedule.steps_before(update)
        if n == 0:
            return
        if self.flosser is None:
            self.flosser = Flosser(model, self.cfg, self.seeds)
        cfg = self.flosser.cfg
        for _ in range(n):
            x = None
            if self.driven and self.task is not None:
                streams = [task_stream(self.task, cfg.transient + cfg.window, cfg.batch,
                                       seed=int(np.random.SeedSequence([seed, 2, self.flosser.steps_done]).generate_state(1)[0]))
                           for seed in self.flosser.seeds]
                x = (torch.stack(streams, dim=1) if model.members is not None else streams[0]).to(model.W.dtype)
                x = x.to(model.W.device)
            res = self.flosser.step(x)
            self.records.append((update, np.atleast_1d(res.loss.cpu().numpy()), np.atleast_1d(res.lam[..., 0].cpu().numpy())))

    def to_dataset(self, alpha: float, stacked: bool = False) -> Any:
        """The flossing record as variables along ``floss_step`` (λ̂ per τ; members first for a
        stack), with config attrs."""
        import xarray as xr

        n = len(self.records)
        S = len(self.flosser.seeds) if self.flosser is not None else 1
        loss = np.array([r[1] for r in self.records]).reshape(n, S).T
        lam = np.array([r[2] for r in self.records]).reshape(n, S).T / alpha
        dims = ("member", "floss_step") if stacked else ("floss_step",)
        pick = (lambda v: v) if stacked else (lambda v: v[0])
        cfg = self.flosser.cfg if self.flosser is not None else self.cfg
        return xr.Dataset(
            {
                "floss_loss": (dims, pick(loss), {"units": "1/step^2", "long_name": "flossing loss"}),
                "floss_lambda_hat": (dims, pick(lam),
                                     {"units": "1/tau", "long_name": "window estimate of lambda_1 per flossing step"}),
                "floss_update": ("floss_step", np.array([r[0] for r in self.records], dtype=np.int64),
                                 {"long_name": "training update before which the step ran"}),
            },
            coords={"floss_step": ("floss_step", np.arange(n), {"long_name": "flossing step"})},
            attrs={**cfg.to_attrs(), **{f"floss_schedule_{k}": v for k, v in asdict(self.schedule).items()},
                   "floss_driven": int(self.driven and self.task is not None)},
        )
