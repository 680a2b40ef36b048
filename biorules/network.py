"""Leaky rate RNN (docs/model.md): parameters, gain-controlled initial connectivity, one pure step.

a-form (default):

    a_t = (1 − α) a_{t−1} + α (W h_{t−1} + U x_t + b),    h_t = φ(a_t),    y_t = V h_t + c

with α = dt/τ and a_0 = 0 (or a learned a_0, ``learn_a0``). Optional activity noise (``noise`` =
σ_rec) adds σ_rec √(2α) ξ_t, ξ_t ~ N(0, I), to a_t: the step takes it as η_t = σ_rec √(2/α) ξ_t
inside the drive (W h + U x + b + η), which the a-form scales by α (the r-form adds η to u_t).
The noise is an input of the step, drawn by the caller from its own seeded stream, so a rule's
gradient and BPTT's see the same realisation. Every initial scheme gives W an entry variance g²/N, so its bulk
spectral radius is ≈ g (exactly g for ``orthogonal``); ``U ~ N(0, 1/n_in)``, ``V ~ N(0, 1/N)``,
``b = c = 0``. W is drawn from its own seeded stream and only scaled by g, so networks with the same
seed and different gains share their random matrix Z.

**Stacks.** A network may be a stack of S independent networks that share N, α, φ and the input
and output sizes: every weight gains a leading member axis (W (S, N, N), U (S, N, n_in), b (S, N),
V (S, n_out, N), c (S, n_out)) and every state (S, B, N). Member s is built exactly as the network
built alone from its own parameters, so it holds the same numbers bit for bit; the step, the rules
and the spectra run all members in one tensor program, which is what makes a gain study cheap.

**The Network protocol** (:class:`Network`), shared with :class:`biorules.spiking.LIFNetwork`:
``kind``, ``alpha``, ``n``, ``members``, ``initial_state(batch)``, ``step(state, x)``,
``rates(state)`` (what the readout reads), ``readout(r)``, ``presynaptic(state)`` (the recurrent
presynaptic activity of the next step) and ``psi(state)`` (ψ_t = φ'(a_t), or the pseudo-derivative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from biorules import activations
from biorules.errors import InputError

INITS = ("gaussian", "orthogonal", "sparse", "dale")


@dataclass(frozen=True)
class NetworkParams:
    """Rate network configuration (docs/model.md). Units in brackets are the xarray ``units`` attrs."""

    n: int = 200
    """N, number of recurrent units [1]."""
    alpha: float = 0.2
    """α = dt/τ, leak per step [1]."""
    nonlinearity: str = "tanh"
    """φ: ``tanh``, ``retanh`` or ``relu``."""
    gain: float = 1.0
    """g, std scale of W·√N [1]."""
    init: str = "gaussian"
    """Initial connectivity scheme: ``gaussian``, ``orthogonal``, ``sparse`` or ``dale``."""
    sparsity: float = 0.1
    """p, connection probability of the ``sparse`` scheme [1]."""
    n_in: int = 3
    """Number of input channels [1]."""
    n_out: int = 3
    """Number of readout units [1]."""
    seed: int = 0
    """Master seed of W, U and V (independent streams)."""
    noise: float = 0.0
    """σ_rec, std of the activity noise σ_rec √(2α) ξ_t added to a_t in training trials [1] (0: off)."""
    learn_a0: bool = False
    """Train the initial pre-activation a_0 (starts at 0) as a parameter ``a0`` (N,)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(f"n must be a positive number of units, got {self.n}")
        if not 0.0 < self.alpha <= 1.0:
            raise InputError(f"alpha must lie in (0, 1], got {self.alpha}")
        if not (self.gain >= 0.0 and math.isfinite(self.gain)):
            raise InputError(f"gain must be a finite non-negative number, got {self.gain}")
        if self.init not in INITS:
            raise InputError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if not 0.0 < self.sparsity <= 1.0:
            raise InputError(f"sparsity must lie in (0, 1], got {self.sparsity}")
        if self.n_in < 0 or self.n_out < 0:
            raise InputError("n_in and n_out must be non-negative")
        if not (self.noise >= 0.0 and math.isfinite(self.noise)):
            raise InputError(f"noise must be a finite non-negative std, got {self.noise}")
        activations.get(self.nonlinearity)

    def to_attrs(self) -> dict[str, Any]:
        """The parameters as flat attrs for an xarray object."""
        return asdict(self)


class RateWeights(NamedTuple):
    """Weights of a rate network, float64 numpy arrays; ``mask`` is the fixed sparse mask or None."""

    W: np.ndarray  # (N, N) recurrent, row = postsynaptic
    U: np.ndarray  # (N, n_in) input
    b: np.ndarray  # (N,) bias
    V: np.ndarray  # (n_out, N) readout
    c: np.ndarray  # (n_out,) readout bias
    mask: np.ndarray | None = None  # (N, N) 0/1 mask of the sparse scheme


def _streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for W, U, V (and the sparse mask) from one master seed."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))


def recurrent_weights(params: NetworkParams) -> tuple[np.ndarray, np.ndarray | None]:
    """W of ``params.init`` with entry variance g²/N, and the sparse mask (or None)."""
    n, g = params.n, params.gain
    rng_w, _, _, rng_m = _streams(params.seed)
    z = rng_w.standard_normal((n, n))
    if params.init == "gaussian":
        return g * z / math.sqrt(n), None
    if params.init == "orthogonal":
        q, r = np.linalg.qr(z)
        return g * q * np.sign(np.diag(r)), None  # Haar (Mezzadri 2007)
    if params.init == "sparse":
        mask = (rng_m.random((n, n)) < params.sparsity).astype(np.float64)
        return g * mask * z / math.sqrt(params.sparsity * n), mask
    return _dale(z, g), None


def _dale(z: np.ndarray, g: float) -> np.ndarray:
    """Balanced excitatory/inhibitory W (Rajan & Abbott 2006) with exactly zero row sums."""
    n = z.shape[0]
    n_e = int(round(0.8 * n))
    n_i = n - n_e
    if n_i == 0 or n_e == 0:
        raise InputError(f"dale init needs both excitatory and inhibitory units; n={n} is too small")
    ratio = n_e / n_i
    c_e = g / math.sqrt((1.0 - 2.0 / math.pi) * (n_e + ratio**2 * n_i))
    w = np.abs(z)
    w[:, :n_e] *= c_e
    w[:, n_e:] *= -c_e * ratio
    exc = w[:, :n_e].sum(axis=1)
    inh = -w[:, n_e:].sum(axis=1)
    w[:, n_e:] *= (exc / inh)[:, None]  # rescale inhibition so each row sums to zero
    return w


def build_weights(params: NetworkParams) -> RateWeights:
    """Seeded W, U, b, V, c of a network (docs/model.md, "Initial connectivity", "Other parameters")."""
    W, mask = recurrent_weights(params)
    _, rng_u, rng_v, _ = _streams(params.seed)
    U = rng_u.standard_normal((params.n, params.n_in)) / math.sqrt(max(params.n_in, 1))
    V = rng_v.standard_normal((params.n_out, params.n)) / math.sqrt(params.n)
    return RateWeights(W, U, np.zeros(params.n), V, np.zeros(params.n_out), mask)


def build_stack(members: tuple[NetworkParams, ...]) -> RateWeights:
    """Weights of a stack: each member built by :func:`build_weights`, joined on a leading axis.

    Members must agree on n, α, φ, n_in and n_out; their gain, seed, init and sparsity may differ
    (the mask is 1 for members without one, so ∇W ⊙ M leaves them unchanged).
    """
    if not members:
        raise InputError("a stack needs at least one member")
    shared = ("n", "alpha", "nonlinearity", "n_in", "n_out", "noise", "learn_a0")
    for f in shared:
        if len({getattr(m, f) for m in members}) > 1:
            raise InputError(f"stack members must share {f}; got {sorted({getattr(m, f) for m in members})}")
    built = [build_weights(m) for m in members]
    masks = [w.mask for w in built]
    mask = None
    if any(m is not None for m in masks):
        n = members[0].n
        mask = np.stack([np.ones((n, n)) if m is None else m for m in masks])
    return RateWeights(*(np.stack([getattr(w, f) for w in built]) for f in ("W", "U", "b", "V", "c")), mask)


@runtime_checkable
class Network(Protocol):
    """What learning rules, flossing and training need of a network (rate or LIF, single or stack)."""

    kind: str
    """``rate`` or ``lif``."""
    alpha: float
    """Leak per step of the membrane or pre-activation [1]."""
    n: int
    """Units per member [1]."""
    members: int | None
    """S for a stack (leading axis on every weight and state), None for a single network."""

    def initial_state(self, batch: int) -> Any: ...

    def step(self, state: Any, x: Any) -> Any: ...

    def rates(self, state: Any) -> Any: ...

    def readout(self, r: Any) -> Any: ...

    def presynaptic(self, state: Any) -> Any: ...

    def psi(self, state: Any) -> Any: ...


def _bias(b: Any, W: Any) -> Any:
    """b broadcast over the trial axis of a stacked state: (S, N) -> (S, 1, N); single: unchanged."""
    return b[..., None, :] if W.ndim == 3 else b


def _t(M: Any) -> Any:
    """Transpose of the last two axes (numpy or torch, single or stacked)."""
    return M.swapaxes(-1, -2)


_SCALARS: dict[tuple[float, Any, Any], Any] = {}


def scalar(value: float, like: Any) -> Any:
    """``value`` as a cached 0-dim tensor of ``like``'s dtype and device.

    Multiplying by it rounds exactly as multiplying by the Python number does (torch casts the
    number to the tensor's dtype either way), but skips wrapping the number into a tensor at every
    call, which on the CPU is half the cost of an elementwise operation on a small network's state.
    """
    key = (value, like.dtype, like.device)
    const = _SCALARS.get(key)
    if const is None:
        import torch

        const = _SCALARS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return const


def affine(r: Any, M: Any, c: Any) -> Any:
    """M r + c for rows r (..., B, n) of a single or stacked map M (..., m, n): one fused
    multiply-add when r has M's rank (a step's state), a product and a sum otherwise (a recorded
    trial, (T, ..., B, n))."""
    if isinstance(r, np.ndarray) or r.ndim != M.ndim:
        return r @ _t(M) + _bias(c, M)
    import torch

    fma = torch.addmm if M.ndim == 2 else torch.baddbmm
    return fma(_bias(c, M).expand(*r.shape[:-1], M.shape[-2]), r, _t(M))


def _drive(h: Any, x: Any, W: Any, U: Any, b: Any, eta: Any = None) -> Any:
    """W h + U x + b (+ η) for states (..., B, N): fused multiply-adds for torch (one BLAS call per
    term, which is what a step of a small network costs), plain products for numpy."""
    if isinstance(h, np.ndarray) or h.ndim != W.ndim:
        d = h @ _t(W) + _bias(b, W)
        d = d if x is None else d + x @ _t(U)
        return d if eta is None else d + eta
    import torch

    fma = torch.addmm if W.ndim == 2 else torch.baddbmm
    d = _bias(b, W).expand(*h.shape[:-1], W.shape[-2])
    if eta is not None:
        d = d + eta
    if x is not None:
        d = fma(d, x, _t(U))
    return fma(d, h, _t(W))


class RateState(NamedTuple):
    """State of the a-form network: pre-activation ``a`` and rate ``h = φ(a)``, shape (..., N)."""

    a: Any
    h: Any


def rate_step(
    state: RateState, x: Any, W: Any, U: Any, b: Any, alpha: float, phi: Callable[[Any], Any], eta: Any = None
) -> RateState:
    """One a-form step, a_t = (1−α)a_{t−1} + α(W h_{t−1} + U x_t + b + η_t); numpy or torch, batched.

    ``x`` may be None (autonomous), ``eta`` (the noise η_t, shaped like the state) None (no noise);
    states are (..., N) with the unit axis last; a stack's W is (S, N, N), its states (S, B, N) and
    x (S, B, n_in).
    """
    drive = _drive(state.h, x, W, U, b, eta)
    if isinstance(drive, np.ndarray):
        a = (1.0 - alpha) * state.a + alpha * drive
    else:
        a = state.a.lerp(drive, alpha)  # a + α(drive − a), one pass
    return RateState(a, phi(a))


def rate_step_r(
    state: RateState, x: Any, W: Any, U: Any, b: Any, alpha: float, phi: Callable[[Any], Any], eta: Any = None
) -> RateState:
    """One r-form step (docs/model.md), u_t = W h_{t−1} + U x_t + b + η_t, h_t = (1−α)h_{t−1} + αφ(u_t).

    The state's ``a`` field holds u_t; numpy or torch, batched like :func:`rate_step`.
    """
    u = _drive(state.h, x, W, U, b, eta)
    return RateState(u, (1.0 - alpha) * state.h + alpha * phi(u))


def initial_state(batch_shape: tuple[int, ...], n: int, phi: Callable[[Any], Any], like: Any = None) -> RateState:
    """a_0 = 0, h_0 = φ(0), as numpy (or torch, when ``like`` is a tensor)."""
    if like is not None and not isinstance(like, np.ndarray):
        import torch

        a = torch.zeros((*batch_shape, n), dtype=like.dtype, device=like.device)
    else:
        a = np.zeros((*batch_shape, n))
    return RateState(a, phi(a))


def simulate(
    step: Callable[..., RateState],
    state: RateState,
    inputs: Any = None,
    steps: int | None = None,
    noise: Any = None,
    record: Callable[[Any], Any] | None = None,
) -> tuple[RateState, list[Any]]:
    """The one time loop: apply ``step(state, x_t)`` over ``inputs`` (T, ...) or ``steps`` times;
    with ``noise`` (T, ..., N), ``step(state, x_t, η_t)``.

    Returns the final state and every step's state (a_1..a_T), for numpy and torch alike; with
    ``record``, ``record(state)`` of every step instead (say, its readout), so that a long or wide
    run keeps only what the caller reads.
    """
    if inputs is None and steps is None:
        raise ValueError("simulate needs inputs or a number of steps")
    n_steps = len(inputs) if inputs is not None else steps
    states = []
    for t in range(n_steps):
        x_t = None if inputs is None else inputs[t]
        state = step(state, x_t) if noise is None else step(state, x_t, noise[t])
        states.append(state if record is None else record(state))
    return state, states


def trajectory(
    weights: RateWeights,
    params: NetworkParams,
    inputs: np.ndarray | None = None,
    steps: int | None = None,
    a0: np.ndarray | None = None,
) -> np.ndarray:
    """Pre-activations a_1..a_T (T, ..., N) of the numpy network, autonomous or driven by (T, ..., n_in)."""
    phi = activations.get(params.nonlinearity).phi
    if a0 is None:
        batch = () if inputs is None else inputs.shape[1:-1]
        state = initial_state(batch, params.n, phi)
    else:
        state = RateState(a0, phi(a0))
    W, U, b = weights.W, weights.U, weights.b

    def step(s: RateState, x: Any) -> RateState:
        return rate_step(s, x, W, U, b, params.alpha, phi)

    _, states = simulate(step, state, inputs, steps)
    return np.stack([s.a for s in states])


def _torch_module():
    import torch
    from torch import nn

    class RateRNN(nn.Module):
        """Trainable a-form rate RNN, single or a stack; a shell around :func:`rate_step` and :func:`simulate`.

        ``RateRNN(params)`` builds one network (W (N, N), ...); ``RateRNN((p_1, ..., p_S))`` a stack
        whose member s equals ``RateRNN(p_s)`` bit for bit (W (S, N, N), ...).
        ``forward(x[T, B, n_in], state=None)`` (x[T, S, B, n_in] for a stack) returns
        ``(y[T, ..., n_out], final_state)``, and with ``record_states=True`` also the stacked
        pre-activations a_1..a_T.
        """

        kind = "rate"

        def __init__(self, params: NetworkParams | tuple[NetworkParams, ...], dtype: torch.dtype = torch.float32):
            super().__init__()
            stacked = not isinstance(params, NetworkParams)
            self.params = tuple(params) if stacked else params
            first = self.params[0] if stacked else params
            self.members = len(self.params) if stacked else None
            self.alpha, self.n, self.noise = first.alpha, first.n, first.noise
            self.nl = activations.get(first.nonlinearity)
            w = build_stack(self.params) if stacked else build_weights(params)
            as_param = lambda v: nn.Parameter(torch.as_tensor(v, dtype=dtype))  # noqa: E731
            self.W, self.U, self.b = as_param(w.W), as_param(w.U), as_param(w.b)
            self.V, self.c = as_param(w.V), as_param(w.c)
            self.register_buffer("mask", None if w.mask is None else torch.as_tensor(w.mask, dtype=dtype))
            if first.learn_a0:
                self.a0 = nn.Parameter(torch.zeros_like(self.b))  # a_0, (N,) or (S, N), starts at 0
            else:
                self.a0 = None

        @property
        def member_params(self) -> tuple[NetworkParams, ...]:
            """The parameters of every member (one for a single network)."""
            return self.params if self.members is not None else (self.params,)

        def initial_state(self, batch: int) -> RateState:
            shape = (batch,) if self.members is None else (self.members, batch)
            if self.a0 is None:
                return initial_state(shape, self.n, self.nl.phi, like=self.W)
            a = _bias(self.a0, self.W).expand(*shape, self.n)  # the learned a_0 in every trial
            return RateState(a, self.nl.phi(a))

        def step(self, state: RateState, x: Any, eta: Any = None) -> RateState:
            return rate_step(state, x, self.W, self.U, self.b, self.alpha, self.nl.phi, eta)

        def rates(self, state: RateState) -> torch.Tensor:
            return state.h

        def presynaptic(self, state: RateState) -> torch.Tensor:
            return state.h

        def psi(self, state: RateState) -> torch.Tensor:
            """ψ_t = φ'(a_t) of an a-form state, from its h_t = φ(a_t) (the same numbers)."""
            return self.nl.dphi_h(state.h)

        def readout(self, h: torch.Tensor) -> torch.Tensor:
            return affine(h, self.V, self.c)

        def forward(self, x: torch.Tensor, state: RateState | None = None, record_states: bool = False):
            state = self.initial_state(x.shape[-2]) if state is None else state
            final, states = simulate(self.step, state, x)
            h = torch.stack([s.h for s in states])
            y = self.readout(h)
            if record_states:
                return y, final, torch.stack([s.a for s in states])
            return y, final

    return RateRNN


def __getattr__(name: str):
    # RateRNN is built on first access so that importing biorules.network does not import torch.
    if name == "RateRNN":
        cls = _torch_module()
        globals()["RateRNN"] = cls
        return cls
    raise AttributeError(name)
