"""Recurrent LIF network on norse's dynamics (docs/model.md, "Spiking variant (LIF, norse dynamics)").

Box cell (default; norse ``LIFBox`` with ``reset_subtract``), α_m = dt/τ_m:

    ṽ_t = (1 − α_m) v_{t−1} + α_m (W z_{t−1} + U x_t + b)
    z_t = H(ṽ_t − v_th)
    v_t = ṽ_t − v_th sg(z_t)                     (the reset is excluded from gradients)

Current-based cell (option; norse ``LIF``), α_s = dt/τ_syn:

    v_t = (1 − α_m) v_{t−1} + α_m i_{t−1},    i_t = (1 − α_s) i_{t−1} + W z_{t−1} + U x_t + b

Leaky readout, κ = 1 − dt/τ_out:  r_t = κ r_{t−1} + (1 − κ) z_t,   y_t = V r_t + c.

Pseudo-derivative ψ_t = ∂z_t/∂ṽ_t, used as the surrogate gradient of H:

    triangle (default):  ψ_t = (γ/v_th) max(0, 1 − |ṽ_t − v_th|/v_th)      (Bellec et al. 2020)
    superspike:          ψ_t = 1/(β|ṽ_t − v_th| + 1)²                     (Zenke & Ganguli 2018)

Initial weights (Z iid N(0, 1), independent seeded streams for W, U, V):
W = (v_th/α_m)·g·Z/√N, U = (v_th/α_m)·Z/√n_in, V ~ N(0, 1/N), b = c = 0.

How norse is used. The step computes norse's ``lif_box_feed_forward_step`` (subthreshold
integration ``li_box_feed_forward_step``, v ← v + dt/τ_m (v_leak − v + I), spike ``threshold``,
``reset_subtract``) with two changes that norse's step cannot express: (1) the reset receives
sg(z), as in norse's own ``lif_step`` (its ``LIFBox`` passes the undetached z to
``reset_method``); (2) the threshold sees (ṽ − v_th)/v_th, so that norse's ``triangle`` surrogate,
γ max(0, 1 − |x|), becomes the documented triangle for any v_th. The surrogate spike under
autograd is norse's ``threshold``. The integration and the reset are written out as the same
floating-point operations norse performs, in fewer torch calls (norse's v + c((0 − v) + I) is
v + c(I − v) to the bit; its (1 − z)v + z(v − v_th) is v − v_th z for z ∈ {0, 1}): a step of a
small network costs its calls, not its arithmetic, and the tests check the step against norse's
functions bit for bit. norse 1.1.0's ``SuperSpike.backward`` ignores its ``alpha`` argument
(it returns 1/(|x| + 1)²), so ``superspike`` with β uses the small :class:`_SuperSpike` function
below. The current-based cell follows the documented ordering (the membrane sees i_{t−1});
norse's ``lif_step`` adds this step's input to the current before the membrane update, so here the
membrane is norse's box integrator driven by the synaptic current i_{t−1}.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from biorules.errors import InputError
from biorules.network import _drive, affine, scalar, simulate

if TYPE_CHECKING:  # norse is imported where a surrogate gradient or its records are used (0.6 s)
    from norse.torch.functional.leaky_integrator_box import LIBoxParameters

SURROGATES = ("triangle", "superspike")
CELLS = ("box", "current")


@dataclass(frozen=True)
class LIFParams:
    """LIF network configuration (docs/model.md). Units in brackets are the xarray ``units`` attrs.

    Voltages are in units of the threshold scale, with v_leak = v_reset = 0 and no refractoriness.
    """

    n: int = 200
    """N, number of recurrent LIF neurons [1]."""
    n_in: int = 3
    """Number of input channels [1]."""
    n_out: int = 3
    """Number of readout units [1]."""
    dt: float = 1.0
    """Integration step [ms]."""
    tau_mem: float = 20.0
    """τ_m, membrane time constant [ms]; α_m = dt/τ_m."""
    tau_syn: float = 5.0
    """τ_syn, synaptic current time constant of the ``current`` cell [ms]; α_s = dt/τ_syn."""
    v_th: float = 1.0
    """Firing threshold [1] (voltage units; v_leak = v_reset = 0)."""
    tau_out: float = 20.0
    """τ_out, time constant of the readout filter r_t [ms]; κ = 1 − dt/τ_out."""
    gain: float = 1.0
    """g, std scale of W·√N·α_m/v_th [1]."""
    surrogate: str = "triangle"
    """Pseudo-derivative ψ: ``triangle`` or ``superspike``."""
    gamma: float = 0.3
    """γ, height of the triangle pseudo-derivative times v_th [1]."""
    beta: float = 100.0
    """β, sharpness of the superspike pseudo-derivative [1/voltage]."""
    cell: str = "box"
    """``box`` (no synaptic current, norse LIFBox) or ``current`` (current-based, norse LIF)."""
    seed: int = 0
    """Master seed of W, U and V (independent streams)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(f"n must be a positive number of neurons, got {self.n}")
        if self.n_in < 0 or self.n_out < 0:
            raise InputError("n_in and n_out must be non-negative")
        for name in ("dt", "tau_mem", "tau_syn", "tau_out", "v_th"):
            value = getattr(self, name)
            if not (value > 0.0 and math.isfinite(value)):
                raise InputError(f"{name} must be a finite positive number, got {value}")
        if self.dt > min(self.tau_mem, self.tau_out) or (self.cell == "current" and self.dt > self.tau_syn):
            raise InputError(f"dt={self.dt} ms must not exceed the time constants (tau_mem, tau_syn, tau_out)")
        if not (self.gain >= 0.0 and math.isfinite(self.gain)):
            raise InputError(f"gain must be a finite non-negative number, got {self.gain}")
        if self.surrogate not in SURROGATES:
            raise InputError(f"unknown surrogate {self.surrogate!r}; choose one of {', '.join(SURROGATES)}")
        if self.cell not in CELLS:
            raise InputError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if not (self.gamma > 0.0 and self.beta > 0.0):
            raise InputError("gamma and beta must be positive")

    @property
    def alpha_m(self) -> float:
        """α_m = dt/τ_m [1]."""
        return self.dt / self.tau_mem

    @property
    def alpha_s(self) -> float:
        """α_s = dt/τ_syn [1]."""
        return self.dt / self.tau_syn

    @property
    def kappa(self) -> float:
        """κ = 1 − dt/τ_out [1]."""
        return 1.0 - self.dt / self.tau_out

    def norse_params(self) -> LIBoxParameters:
        """norse's record for the subthreshold membrane integration (τ_m in ms, v_leak = 0)."""
        from norse.torch.functional.leaky_integrator_box import LIBoxParameters

        return LIBoxParameters(tau_mem_inv=1.0 / self.tau_mem, v_leak=0.0)

    def to_attrs(self) -> dict[str, Any]:
        """The parameters as flat attrs for an xarray object."""
        return asdict(self)


class LIFWeights(NamedTuple):
    """Initial weights of a LIF network, float64 numpy arrays (row = postsynaptic)."""

    W: np.ndarray  # (N, N) recurrent
    U: np.ndarray  # (N, n_in) input
    b: np.ndarray  # (N,) bias current
    V: np.ndarray  # (n_out, N) readout
    c: np.ndarray  # (n_out,) readout bias


def build_lif_weights(params: LIFParams) -> LIFWeights:
    """Seeded W, U, b, V, c with the documented gain scaling (docs/model.md, "Gain").

    W = (v_th/α_m)·g·Z/√N, U = (v_th/α_m)·Z/√n_in, V ~ N(0, 1/N), b = c = 0. W, U and V come from
    independent streams spawned from ``params.seed`` (the same streams, in the same order, as the
    rate network's, so a LIF and a rate network with one seed share Z).
    """
    rng_w, rng_u, rng_v = (np.random.default_rng(s) for s in np.random.SeedSequence(params.seed).spawn(3))
    scale = params.v_th / params.alpha_m
    n = params.n
    W = scale * params.gain * rng_w.standard_normal((n, n)) / math.sqrt(n)
    U = scale * rng_u.standard_normal((n, params.n_in)) / math.sqrt(max(params.n_in, 1))
    V = rng_v.standard_normal((params.n_out, n)) / math.sqrt(n)
    return LIFWeights(W, U, np.zeros(n), V, np.zeros(params.n_out))


class LIFState(NamedTuple):
    """State of the LIF network after step t; tensors of shape (..., N)."""

    z: torch.Tensor
    """z_t, spikes [1] (0 or 1)."""
    v: torch.Tensor
    """v_t, membrane potential after the reset [voltage]."""
    i: torch.Tensor | None
    """i_t, synaptic current of the ``current`` cell [voltage]; None for the box cell."""
    r: torch.Tensor
    """r_t, low-pass filtered spikes read out by V [1]."""
    v_pre: torch.Tensor
    """ṽ_t, membrane potential before the reset [voltage]; recorded for ψ_t, not read by the next step."""


def pseudo_derivative(v_pre: torch.Tensor, params: LIFParams) -> torch.Tensor:
    """ψ_t = ∂z_t/∂ṽ_t (docs/model.md): the same function the surrogate gradient of :func:`spike` uses."""
    x = v_pre - params.v_th
    if params.surrogate == "triangle":
        return (params.gamma / params.v_th) * torch.relu(1.0 - x.abs() / params.v_th)
    return 1.0 / (params.beta * x.abs() + 1.0) ** 2


class _SuperSpike(torch.autograd.Function):
    """H(x) forward, 1/(β|x| + 1)² backward (norse 1.1.0's SuperSpike drops β, see module doc)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        from norse.torch.functional.heaviside import heaviside

        return heaviside(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad / (ctx.beta * x.abs() + 1.0) ** 2, None


def spike(v_pre: torch.Tensor, params: LIFParams) -> torch.Tensor:
    """z_t = H(ṽ_t − v_th) with surrogate gradient ψ_t (:func:`pseudo_derivative`); where no
    gradient is recorded (the online rules, evaluation), H alone, without the autograd Function."""
    if not (torch.is_grad_enabled() and v_pre.requires_grad):  # H(ṽ − v_th) = H((ṽ − v_th)/v_th), v_th > 0
        return torch.gt(v_pre, scalar(params.v_th, v_pre), out=torch.empty_like(v_pre))
    if params.surrogate == "triangle":
        from norse.torch.functional.threshold import threshold

        return threshold((v_pre - params.v_th) / params.v_th, "triangle", params.gamma)
    return _SuperSpike.apply(v_pre - params.v_th, params.beta)


def lif_step(
    state: LIFState, x: torch.Tensor | None, W: torch.Tensor, U: torch.Tensor, b: torch.Tensor, params: LIFParams
) -> LIFState:
    """One step of the LIF network and its readout filter (module docstring; docs/model.md). Pure, batched.

    ``x`` (..., n_in) may be None (no input). Returns the new state; the caller reads z_t and r_t.
    """
    drive = _drive(state.z, x, W, U, b)  # W z_{t−1} + U x_t + b, as in the rate step
    if params.cell == "box":
        current, i_new = drive, None
    else:
        current, i_new = state.i, (1.0 - params.alpha_s) * state.i + drive
    c = scalar(params.dt * (1.0 / params.tau_mem), state.v)  # norse's dt·τ_m⁻¹
    v_pre = state.v + c * (current - state.v)  # norse li_box, v_leak = 0
    z = spike(v_pre, params)
    v = v_pre.sub(z.detach(), alpha=params.v_th)  # norse reset_subtract(sg(z), ṽ, 0, v_th)
    r = torch.add(scalar(params.kappa, state.r) * state.r, z, alpha=1.0 - params.kappa)  # exact for z ∈ {0, 1}
    return LIFState(z, v, i_new, r, v_pre)


def initial_state(batch_shape: tuple[int, ...], params: LIFParams, like: torch.Tensor) -> LIFState:
    """z_0 = v_0 = i_0 = r_0 = 0 (ṽ_0 = 0), with the dtype and device of ``like``."""
    zeros = lambda: torch.zeros((*batch_shape, params.n), dtype=like.dtype, device=like.device)  # noqa: E731
    return LIFState(zeros(), zeros(), None if params.cell == "box" else zeros(), zeros(), zeros())


def build_lif_stack(members: tuple[LIFParams, ...]) -> LIFWeights:
    """Weights of a stack of LIF networks: each member built alone, joined on a leading axis.

    Members may differ in gain and seed only (the step's constants are shared).
    """
    if not members:
        raise InputError("a stack needs at least one member")
    shared = [f for f in asdict(members[0]) if f not in ("gain", "seed")]
    for f in shared:
        if len({getattr(m, f) for m in members}) > 1:
            raise InputError(f"stack members must share {f}; got {sorted({getattr(m, f) for m in members})}")
    built = [build_lif_weights(m) for m in members]
    return LIFWeights(*(np.stack([getattr(w, f) for w in built]) for f in LIFWeights._fields))


class LIFNetwork(nn.Module):
    """Trainable recurrent LIF network, single or a stack; a thin shell around :func:`lif_step` and ``simulate``.

    ``LIFNetwork(params)`` is one network, ``LIFNetwork((p_1, ..., p_S))`` a stack whose member s
    equals ``LIFNetwork(p_s)`` bit for bit (leading member axis on weights, states and inputs).
    ``forward(x[T, B, n_in], state=None)`` returns ``(y[T, B, n_out], final_state)``, and with
    ``record_states=True`` also every step's :class:`LIFState`, stacked along a leading time axis.
    """

    kind = "lif"
    model_kind = "lif"

    def __init__(self, params: LIFParams | tuple[LIFParams, ...], dtype: torch.dtype = torch.float32):
        super().__init__()
        stacked = not isinstance(params, LIFParams)
        self.params = tuple(params) if stacked else params
        first = self.params[0] if stacked else params
        self.members = len(self.params) if stacked else None
        self.step_params = first
        """The constants of :func:`lif_step`, shared by every member."""
        self.alpha, self.n = first.alpha_m, first.n
        w = build_lif_stack(self.params) if stacked else build_lif_weights(params)
        as_param = lambda v: nn.Parameter(torch.as_tensor(v, dtype=dtype))  # noqa: E731
        self.W, self.U, self.b = as_param(w.W), as_param(w.U), as_param(w.b)
        self.V, self.c = as_param(w.V), as_param(w.c)

    @property
    def member_params(self) -> tuple[LIFParams, ...]:
        """The parameters of every member (one for a single network)."""
        return self.params if self.members is not None else (self.params,)

    def initial_state(self, batch: int) -> LIFState:
        shape = (batch,) if self.members is None else (self.members, batch)
        return initial_state(shape, self.step_params, like=self.W)

    def step(self, state: LIFState, x: torch.Tensor | None) -> LIFState:
        return lif_step(state, x, self.W, self.U, self.b, self.step_params)

    def rates(self, state: LIFState) -> torch.Tensor:
        """r_t, the filtered spikes the readout reads."""
        return state.r

    def presynaptic(self, state: LIFState) -> torch.Tensor:
        """z_t, the spikes the next step's recurrent input reads."""
        return state.z

    def psi(self, state: LIFState) -> torch.Tensor:
        """ψ_t, the pseudo-derivative at ṽ_t."""
        return pseudo_derivative(state.v_pre, self.step_params)

    def readout(self, r: torch.Tensor) -> torch.Tensor:
        """y_t = V r_t + c."""
        return affine(r, self.V, self.c)

    def forward(self, x: torch.Tensor, state: LIFState | None = None, record_states: bool = False):
        x = torch.as_tensor(x, dtype=self.W.dtype, device=self.W.device)
        state = self.initial_state(x.shape[-2]) if state is None else state
        final, states = simulate(self.step, state, x)
        y = self.readout(torch.stack([s.r for s in states]))
        if record_states:
            return y, final, stack_states(states)
        return y, final


def stack_states(states: list[LIFState]) -> LIFState:
    """Every step's state as one :class:`LIFState` of (T, ..., N) tensors."""
    return LIFState(*(None if f[0] is None else torch.stack(f) for f in zip(*states, strict=True)))
