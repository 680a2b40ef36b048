"""Seeded, batched trial generators (docs/tasks.md): ``2af``, ``dms``, ``cxt``, ``xor`` and ``sine``.

Every task gives inputs x[T, B, n_in] (float64), a target and a loss mask m[T, B]:

- Classification (``2af``, ``dms``, ``cxt``): n_out = 3 logits (fixate, choice 1, choice 2); the
  label k_t is 0 before the decision period and the true class in it. The loss is
  ℒ = (1/(n_b n_m)) Σ_b Σ_t m_t CE(softmax y_t, k_t), with m_t = 1 on decision steps
  (``loss_periods="decision"``, default) or on every step (``"all"``). Accuracy: average the
  logits over the decision steps, argmax over the two choice logits, compare with the true choice.
- ``xor`` (delayed XOR, in steps): bits s_t ~ Bernoulli(½), target y*_t = s_{t−d} ⊕ s_{t−2d},
  BCE with logits on t ≥ 2d (0-indexed); accuracy = fraction of loss steps with 1[σ(y_t) ≥ ½] = y*_t.
- ``sine``: a unit pulse during the first 100 ms, target y*_t = A sin(2π f t dt); MSE
  ℒ = (1/(n_b n_m n_out)) Σ m_t ‖y_t − y*_t‖² after the pulse; metric R² = 1 − SSE/SS_tot.

Durations are in ms and rounded to multiples of dt; 0 ms periods are omitted. Input noise follows
neurogym: σ_s = σ/√(dt/1 ms), added to stimulus channels in stimulus periods only. The fixation
channel is 1 before the decision period and 0 in it. The definitions follow neurogym's
``PerceptualDecisionMaking``, ``DelayMatchSample`` and ``ContextDecisionMaking`` with dim_ring = 2
(explicit-context variant); neurogym itself is not a dependency (its pins clash with ours).

Each ``batch(n_batch, seed)`` draws from ``numpy.random.default_rng(seed)`` only: no global RNG.

A stack of S networks trains on S independent batches joined by :func:`stack_batches`: every
array gains a member axis after time, x[T, S, B, n_in], and ``loss``/``output_error``/``accuracy``
normalise each member by its own trials, so member s sees exactly the numbers of its batch alone.

**The task protocol** (:data:`TASK_PROTOCOL`): :func:`biorules.train.train` takes, instead of a
name, any object with

- ``name`` (str, recorded in the config), ``n_in``, ``n_out``, ``n_steps`` (T), ``dt`` [ms] and
  ``tau`` [ms] (α = dt/τ; a LIF network steps at the task's dt);
- ``batch(n_batch, seed) -> TaskBatch``: trials drawn from that seed alone (numpy arrays);
- ``loss(y, batch)``: differentiable torch ℒ of outputs y[T, B, n_out] (one per member when the
  batch is stacked); ``partial_loss(y, batch, steps)``: the part of ℒ from ``steps`` (tbptt);
- ``output_error(y, batch, steps) -> (ℒ part, e)``: e_t = ∂ℒ/∂y_t in closed form (e-prop, RFLO;
  a task may also offer ``step_errors(batch, like)``, the per-step form with the batch converted
  once, which the online loop then uses);
- ``accuracy(y, batch)``: the metric (a float, or one per member);
- ``chance`` and ``ceiling()``: the metric of guessing and of the best policy on the inputs;
- ``fixation_input() -> (n_in,)`` and ``probe_inputs(n_steps, seed) -> (n_steps, n_in)``: the
  inputs of the fixation- and task-conditioned spectra;
- ``to_attrs() -> dict``: the settings as flat ``task_*`` attrs.

Subclassing :class:`Task` gives all but ``batch``, ``_terms`` (ℓ and ∂ℓ/∂y per step),
``_accuracy`` and ``oracle``; :func:`from_neurogym` wraps a neurogym environment that way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from biorules.errors import InputError

_CEILINGS: dict[tuple[Any, int, int], float] = {}
"""Ceilings computed in this process, by (task, trials, seed)."""

TASKS = ("2af", "dms", "cxt", "xor", "sine")
LOSS_PERIODS = ("decision", "all")


class TaskBatch(NamedTuple):
    """One batch of trials (numpy). Shapes use T = n_steps, B = n_batch."""

    x: np.ndarray
    """Inputs (T, B, n_in), float64."""
    target: np.ndarray
    """Classification: labels (T, B), int64 (0 = fixate); xor/sine: (T, B, n_out) float64."""
    mask: np.ndarray
    """Loss mask m_t (T, B), float64 (1 on loss steps)."""
    decision: np.ndarray
    """Steps scored by the metric (T, B), bool (decision period; the loss steps for xor/sine)."""
    trials: dict[str, np.ndarray]
    """Trial variables, each (B,): e.g. ``choice`` (1 or 2), ``coherence`` [%]."""
    noise: np.ndarray | None = None
    """Activity noise η_t of the network's step (T, B, N), or None (docs/model.md); set by the trainer."""

    @property
    def members(self) -> int | None:
        """S for a stacked batch (arrays (T, S, B, ...)), None for a single one."""
        return self.mask.shape[1] if self.mask.ndim == 3 else None

    def member(self, s: int) -> TaskBatch:
        """Member ``s`` of a stacked batch, as the single batch it was made from."""
        return TaskBatch(self.x[:, s], self.target[:, s], self.mask[:, s], self.decision[:, s],
                         {k: v[s] for k, v in self.trials.items()}, None if self.noise is None else self.noise[:, s])


def stack_batches(batches: list[TaskBatch]) -> TaskBatch:
    """One batch for a stack of networks: member s of the result is ``batches[s]``."""
    if not batches:
        raise InputError("a stack needs at least one batch")
    noisy = [b.noise is not None for b in batches]
    if any(noisy) and not all(noisy):
        raise InputError("stacked batches must all carry noise or none")
    return TaskBatch(*(np.stack([getattr(b, f) for b in batches], axis=1) for f in ("x", "target", "mask", "decision")),
                     {k: np.stack([b.trials[k] for b in batches]) for k in batches[0].trials},
                     np.stack([b.noise for b in batches], axis=1) if all(noisy) else None)


def _member_sum(v: Any, stacked: bool) -> Any:
    """Σ over time and trials: a scalar, or one value per member for a stacked (T, S, B) array."""
    if not stacked:
        return v.sum()
    return v.sum(axis=(0, 2)) if isinstance(v, np.ndarray) else v.sum(dim=(0, 2))


def _steps(ms: float, dt: float) -> int:
    """A duration in ms rounded to a whole number of steps of dt ms."""
    return int(round(ms / dt))


def _torch():
    import torch

    return torch


@dataclass(frozen=True)
class Task:
    """Common fields of every task. ``dt`` and ``tau`` in ms; ``alpha = dt/tau``."""

    name: str
    n_in: int
    n_out: int
    n_steps: int
    dt: float = 20.0
    tau: float = 100.0

    @property
    def alpha(self) -> float:
        """α = dt/τ of the network that runs this task."""
        return self.dt / self.tau

    def batch(self, n_batch: int, seed: int) -> TaskBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def _terms(self, y: Any, target: Any) -> tuple[Any, Any]:  # pragma: no cover - abstract
        """Per-(t, b) loss ℓ (summed over outputs) and its gradient ∂ℓ/∂y, both torch."""
        raise NotImplementedError

    norm_outputs: ClassVar[bool] = False
    """Whether the normaliser also counts outputs (xor, sine)."""

    def _norm(self, batch: TaskBatch, like: Any) -> Any:
        """The normaliser Z of ℒ = Σ m ℓ / Z: n_b n_m (classification), × n_out (xor, sine);
        one per member (S,) for a stacked batch."""
        z = _member_sum(batch.mask, batch.members is not None) * (self.n_out if self.norm_outputs else 1)
        if batch.members is None:
            return float(z)
        return _torch().as_tensor(z, dtype=like.dtype, device=like.device)

    def _block(self, y: Any, batch: TaskBatch, steps: slice) -> tuple[Any, Any]:
        torch = _torch()
        target = torch.as_tensor(batch.target[steps], device=y.device)
        if target.is_floating_point():
            target = target.to(y.dtype)
        mask = torch.as_tensor(batch.mask[steps], dtype=y.dtype, device=y.device)
        return target, mask

    def loss(self, y: Any, batch: TaskBatch) -> Any:
        """The task loss ℒ of outputs y (T, B, n_out), a differentiable torch scalar (docs/tasks.md)."""
        return self.partial_loss(y, batch)

    def partial_loss(self, y: Any, batch: TaskBatch, steps: slice = slice(None)) -> Any:
        """The part of ℒ contributed by ``steps``, for outputs ``y`` of those steps only.

        Summing over a partition of the trial gives :meth:`loss` (used by truncated BPTT).
        """
        target, mask = self._block(y, batch, steps)
        elem, _ = self._terms(y, target)
        return _member_sum(elem * mask, batch.members is not None) / self._norm(batch, y)

    def output_error(self, y: Any, batch: TaskBatch, steps: slice = slice(None)) -> tuple[Any, Any]:
        """(part of ℒ, e) for outputs ``y`` of ``steps``: e_t = ∂ℒ/∂y_t, in closed form, no autograd.

        e_t is 0 outside the loss steps; used online (one step at a time) by e-prop and RFLO.
        """
        target, mask = self._block(y, batch, steps)
        return self._error(y, target, mask, self._norm(batch, y), batch.members is not None)

    def _error(self, y: Any, target: Any, mask: Any, z: Any, stacked: bool) -> tuple[Any, Any]:
        torch = _torch()
        with torch.no_grad():
            elem, grad = self._terms(y, target)
            zb = z[None, :, None] if stacked else z
            return _member_sum(elem * mask, stacked) / z, grad * (mask / zb)[..., None]

    def step_errors(self, batch: TaskBatch, like: Any) -> Callable[[Any, int], tuple[Any, Any]]:
        """``f(y_t, t) = output_error(y_t[None], batch, slice(t, t + 1))`` for a loop forward in
        time (e-prop, RFLO online): the same numbers, with the batch's target, mask and normaliser
        converted to tensors (of ``like``'s dtype and device) once per trial instead of every step.
        """
        target, mask = self._block(like, batch, slice(None))
        z, stacked = self._norm(batch, like), batch.members is not None

        def error(y_t: Any, t: int) -> tuple[Any, Any]:
            return self._error(y_t[None], target[t:t + 1], mask[t:t + 1], z, stacked)

        return error

    def accuracy(self, y: Any, batch: TaskBatch) -> Any:
        """The task metric of outputs y (T, B, n_out): a float, or one per member (S,) when stacked."""
        if batch.members is None:
            return self._accuracy(y, batch)
        if self.stacked_accuracy:
            return np.asarray(self._accuracy(y, batch), dtype=np.float64)
        y = _as_numpy(y)
        return np.array([self._accuracy(y[:, s], batch.member(s)) for s in range(batch.members)])

    def _accuracy(self, y: Any, batch: TaskBatch) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    stacked_accuracy: ClassVar[bool] = False
    """Whether ``_accuracy`` also takes a stacked batch (then returning one value per member), so
    that a stack's metric is one vectorised call instead of one call per member."""

    def oracle(self, batch: TaskBatch) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    chance: ClassVar[float] = 0.5
    """The metric of a policy that ignores the inputs (guessing; R² = 0 for sine)."""

    def ideal(self, batch: TaskBatch) -> np.ndarray:
        """Logits of the ideal observer, which sees the inputs only (default: :meth:`oracle`)."""
        return self.oracle(batch)

    def ceiling(self, n_trials: int = 32768, seed: int = 0) -> float:
        """The ideal observer's metric on ``n_trials`` fixed trials: the best any network can score.

        A fixed number of the task's definition, so a process computes it once per (frozen) task
        and reuses it (each stack of a sweep asks for it; 32768 trials of 450 steps take seconds).
        """
        try:
            key = (self, int(n_trials), int(seed))
            known = _CEILINGS.get(key)
        except TypeError:  # a task with unhashable fields: computed every time
            key, known = None, None
        if known is not None:
            return known
        batch = self.batch(n_trials, seed)
        value = float(self.accuracy(self.ideal(batch), batch))
        if key is not None:
            _CEILINGS[key] = value
        return value

    def fixation_input(self) -> np.ndarray:
        """The constant input x_fix (n_in,) a network sees while it waits for a trial: the mean
        first-step input over trials (fixation on, no stimulus); zero for tasks without one."""
        return np.zeros(self.n_in)

    def probe_inputs(self, n_steps: int, seed: int) -> np.ndarray:
        """(n_steps, n_in) inputs of fresh trials back to back, for spectra conditional on the
        task's own input (the state runs on across trial boundaries)."""
        n_trials = -(-int(n_steps) // self.n_steps)
        x = self.batch(n_trials, seed).x  # (T, B, n_in)
        return np.ascontiguousarray(x.transpose(1, 0, 2).reshape(-1, self.n_in)[: int(n_steps)])

    def to_attrs(self) -> dict[str, Any]:
        """Task settings as flat attrs (prefixed ``task_``); periods become ``name:ms,...``."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, tuple) and v and isinstance(v[0], tuple):
                v = ",".join(f"{p}:{d}" for p, d in v)
            elif isinstance(v, tuple):
                v = [float(c) for c in v]
            out[f"task_{k}"] = v
        return out


def _check_batch(n_batch: int) -> None:
    if int(n_batch) < 1:
        raise InputError(f"a batch needs at least one trial, got {n_batch}")


def _as_numpy(y: Any) -> np.ndarray:
    if isinstance(y, np.ndarray):
        return y
    return y.detach().cpu().numpy()


# ------------------------------------------------------------------------------------------------
# classification tasks
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationTask(Task):
    """A two-choice task with a fixation output: ``periods`` are (name, ms) in order."""

    periods: tuple[tuple[str, float], ...] = ()
    sigma: float = 1.0
    """σ of the input noise before the √dt scaling [1]."""
    loss_periods: str = "decision"
    period_steps: tuple[tuple[str, int], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.loss_periods not in LOSS_PERIODS:
            raise InputError(f"loss_periods must be one of {', '.join(LOSS_PERIODS)}, got {self.loss_periods!r}")
        if self.sigma < 0:
            raise InputError(f"sigma must be non-negative, got {self.sigma}")
        steps = tuple((p, _steps(ms, self.dt)) for p, ms in self.periods if _steps(ms, self.dt) > 0)
        if dict(steps).get("decision", 0) < 1:
            raise InputError(f"task {self.name} needs a decision period of at least one step (dt = {self.dt} ms)")
        object.__setattr__(self, "period_steps", steps)
        object.__setattr__(self, "n_steps", sum(n for _, n in steps))

    @property
    def sigma_s(self) -> float:
        """Per-step noise σ_s = σ/√(dt/1 ms)."""
        return self.sigma / math.sqrt(self.dt)

    def period(self, name: str) -> slice:
        """Step indices of the period ``name`` (an empty slice when it is omitted)."""
        start = 0
        for p, n in self.period_steps:
            if p == name:
                return slice(start, start + n)
            start += n
        return slice(0, 0)

    def _frame(self, n_batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Empty inputs with the fixation channel, the decision mask and the loss mask."""
        T = self.n_steps
        x = np.zeros((T, n_batch, self.n_in))
        dec = np.zeros((T, n_batch), dtype=bool)
        dec[self.period("decision")] = True
        x[:, :, 0] = (~dec).astype(np.float64)
        mask = dec.astype(np.float64) if self.loss_periods == "decision" else np.ones((T, n_batch))
        return x, dec, mask

    def batch(self, n_batch: int, seed: int) -> TaskBatch:
        """``n_batch`` trials drawn from ``default_rng(seed)``."""
        _check_batch(n_batch)
        rng = np.random.default_rng(seed)
        x, dec, mask = self._frame(int(n_batch))
        trials = self._fill(x, rng)
        target = np.where(dec, trials["choice"][None, :], 0).astype(np.int64)
        return TaskBatch(x, target, mask, dec, trials)

    def _fill(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def fixation_input(self) -> np.ndarray:
        """Mean noiseless first-step input: the fixation channel on (and, for cxt, the mean context)."""
        return self.batch(256, 0).x[0].mean(axis=0)

    def _noise(self, x: np.ndarray, period: str, channels: slice, rng: np.random.Generator) -> None:
        s = self.period(period)
        shape = x[s, :, channels].shape
        x[s, :, channels] += self.sigma_s * rng.standard_normal(shape)

    def _terms(self, y: Any, target: Any) -> tuple[Any, Any]:
        """ℓ = CE(softmax y_t, k_t), ∂ℓ/∂y_t = softmax(y_t) − onehot(k_t).

        Computed over the logits as the outer axis: torch's log_softmax over a last axis of 3 is
        ~7x slower than over an outer one, for the same numbers to the bit (tested).
        """
        torch = _torch()
        logp = torch.log_softmax(y.movedim(-1, 0), dim=0)  # (n_out, ...)
        k = target.unsqueeze(0)
        elem = -logp.gather(0, k)[0]
        grad = logp.exp()
        grad.scatter_add_(0, k, torch.full_like(k, -1, dtype=grad.dtype))  # − onehot(k_t)
        return elem, grad.movedim(0, -1)

    def _accuracy(self, y: Any, batch: TaskBatch) -> Any:
        """Fraction of trials whose decision-averaged choice logits pick the true choice (one per
        member of a stacked batch)."""
        dec = batch.decision.reshape(len(batch.decision), -1)
        rows = dec.any(axis=1)  # the steps some trial decides on; the others add zeros only
        y = _as_numpy(y)[rows]
        dec = batch.decision[rows].astype(np.float64)
        mean = (y * dec[..., None]).sum(axis=0) / dec.sum(axis=0)[..., None]
        pick = 1 + np.argmax(mean[..., 1:3], axis=-1)
        right = np.mean(pick == batch.trials["choice"], axis=-1)
        return float(right) if batch.members is None else right

    stacked_accuracy: ClassVar[bool] = True

    def _oracle_logits(self, choice: np.ndarray) -> np.ndarray:
        """Logits that fixate before the decision and report ``choice`` (B,) in it."""
        T, B = self.n_steps, len(choice)
        y = np.zeros((T, B, self.n_out))
        dec = self.period("decision")
        y[:, :, 0] = 10.0
        y[dec, :, 0] = 0.0
        y[dec, np.arange(B), choice] = 10.0
        return y


@dataclass(frozen=True)
class TwoAFC(ClassificationTask):
    """``2af``: evidence 0.5 ± c/200 for choice k ∈ {1, 2}, c ∈ ``coherences`` [%] (docs/tasks.md)."""

    coherences: tuple[float, ...] = (0.0, 6.4, 12.8, 25.6, 51.2)

    def _fill(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        B = x.shape[1]
        choice = rng.integers(1, 3, size=B)
        coh = np.asarray(self.coherences)[rng.integers(0, len(self.coherences), size=B)]
        s = self.period("stimulus")
        sign = np.where(choice == 1, 1.0, -1.0)
        x[s, :, 1] = 0.5 + sign * coh / 200.0
        x[s, :, 2] = 0.5 - sign * coh / 200.0
        self._noise(x, "stimulus", slice(1, 3), rng)
        return {"choice": choice, "coherence": coh}

    def oracle(self, batch: TaskBatch) -> np.ndarray:
        """Reports the true choice read from the batch (c = 0 trials carry no evidence, so no
        policy on the inputs alone can score 1.0); it checks the metric and loss plumbing."""
        return self._oracle_logits(batch.trials["choice"])

    def ideal(self, batch: TaskBatch) -> np.ndarray:
        """Sign of the summed evidence difference Σ_t (x_1 − x_2) over the stimulus (the likelihood
        ratio test for equal Gaussian noise on both channels)."""
        s = self.period("stimulus")
        evidence = (batch.x[s, :, 1] - batch.x[s, :, 2]).sum(0)
        return self._oracle_logits(np.where(evidence >= 0, 1, 2))


@dataclass(frozen=True)
class DelayMatchSample(ClassificationTask):
    """``dms``: one-hot sample, delay, one-hot test (= sample on match, p = ½); 1 = match, 2 = non-match."""

    def _fill(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        B = x.shape[1]
        sample = rng.integers(0, 2, size=B)
        match = rng.random(B) < 0.5
        test = np.where(match, sample, 1 - sample)
        for period, code in (("sample", sample), ("test", test)):
            s = self.period(period)
            x[s, np.arange(B), 1 + code] = 1.0
            self._noise(x, period, slice(1, 3), rng)
        return {"choice": np.where(match, 1, 2), "sample": sample + 1, "test": test + 1}

    def oracle(self, batch: TaskBatch) -> np.ndarray:
        """Compares the period-averaged sample and test codes in the inputs (noise 7σ below the gap)."""
        x = batch.x
        code = lambda p: np.sign(x[self.period(p), :, 1].mean(0) - x[self.period(p), :, 2].mean(0))  # noqa: E731
        return self._oracle_logits(np.where(code("sample") == code("test"), 1, 2))


@dataclass(frozen=True)
class ContextDecision(ClassificationTask):
    """``cxt``: two modalities with independent k_m and c_m; the context one-hot picks the one to report."""

    coherences: tuple[float, ...] = (5.0, 15.0, 50.0)

    def _fill(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        B = x.shape[1]
        context = rng.integers(1, 3, size=B)
        k = rng.integers(1, 3, size=(2, B))
        coh = np.asarray(self.coherences)[rng.integers(0, len(self.coherences), size=(2, B))]
        s = self.period("stimulus")
        for m in range(2):
            sign = np.where(k[m] == 1, 1.0, -1.0)
            x[s, :, 1 + 2 * m] = 0.5 + sign * coh[m] / 200.0
            x[s, :, 2 + 2 * m] = 0.5 - sign * coh[m] / 200.0
        self._noise(x, "stimulus", slice(1, 5), rng)
        x[:, np.arange(B), 4 + context] = 1.0  # context one-hot, whole trial, noiseless
        choice = np.where(context == 1, k[0], k[1])
        return {"choice": choice, "context": context, "choice_1": k[0], "choice_2": k[1],
                "coherence_1": coh[0], "coherence_2": coh[1]}

    def oracle(self, batch: TaskBatch) -> np.ndarray:
        """Reads the context from its (noiseless) input channels and reports that modality's true
        direction from the batch (5 % coherence is below the noise, so inputs alone cannot score 1.0)."""
        context = 1 + np.argmax(batch.x[0, :, 5:7], axis=1)
        k = np.where(context == 1, batch.trials["choice_1"], batch.trials["choice_2"])
        return self._oracle_logits(k)

    def ideal(self, batch: TaskBatch) -> np.ndarray:
        """Reads the context, then the sign of the attended modality's summed evidence."""
        context = 1 + np.argmax(batch.x[0, :, 5:7], axis=1)
        s = self.period("stimulus")
        ev = np.stack([(batch.x[s, :, 1 + 2 * m] - batch.x[s, :, 2 + 2 * m]).sum(0) for m in range(2)])
        k = np.where(ev[context - 1, np.arange(len(context))] >= 0, 1, 2)
        return self._oracle_logits(k)


# ------------------------------------------------------------------------------------------------
# delayed XOR and sine generation
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DelayedXor(Task):
    """``xor`` (Engelken 2023): y*_t = s_{t−d} ⊕ s_{t−2d}, BCE with logits on t ≥ 2d (docs/tasks.md)."""

    delay: int = 10
    """d [steps]."""

    def __post_init__(self) -> None:
        if self.delay < 1 or self.n_steps <= 2 * self.delay:
            raise InputError(f"xor needs delay ≥ 1 and n_steps > 2·delay, got delay={self.delay}, n_steps={self.n_steps}")

    def batch(self, n_batch: int, seed: int) -> TaskBatch:
        _check_batch(n_batch)
        rng = np.random.default_rng(seed)
        T, d = self.n_steps, self.delay
        bits = rng.integers(0, 2, size=(T, int(n_batch)))
        target = np.zeros((T, int(n_batch), 1))
        target[2 * d:, :, 0] = np.bitwise_xor(bits[d:T - d], bits[: T - 2 * d])
        mask = np.zeros((T, int(n_batch)))
        mask[2 * d:] = 1.0
        return TaskBatch(bits[..., None].astype(np.float64), target, mask, mask.astype(bool), {})

    def _terms(self, y: Any, target: Any) -> tuple[Any, Any]:
        """ℓ = Σ_o BCE-with-logits(y_t, y*_t), ∂ℓ/∂y_t = σ(y_t) − y*_t."""
        torch = _torch()
        elem = torch.nn.functional.binary_cross_entropy_with_logits(y, target, reduction="none").sum(-1)
        return elem, torch.sigmoid(y) - target

    norm_outputs: ClassVar[bool] = True

    def _accuracy(self, y: Any, batch: TaskBatch) -> float:
        y = _as_numpy(y)
        right = ((y >= 0.0) == (batch.target >= 0.5)).all(-1)
        return float(right[batch.decision].mean())

    def oracle(self, batch: TaskBatch) -> np.ndarray:
        """Computes s_{t−d} ⊕ s_{t−2d} from the input bits; logits ±10."""
        s = batch.x[..., 0].astype(np.int64)
        T, d = self.n_steps, self.delay
        y = np.full((T, s.shape[1], 1), -10.0)
        y[2 * d:, :, 0] = np.where(np.bitwise_xor(s[d:T - d], s[: T - 2 * d]) == 1, 10.0, -10.0)
        return y


@dataclass(frozen=True)
class SineGeneration(Task):
    """``sine``: after a unit pulse of ``pulse`` ms, produce A sin(2π f t dt) (docs/tasks.md)."""

    frequency: float = 1.0
    """f [Hz]."""
    amplitude: float = 1.0
    """A [1]."""
    pulse: float = 100.0
    """Pulse duration [ms]."""

    def __post_init__(self) -> None:
        if not 0 < _steps(self.pulse, self.dt) < self.n_steps:
            raise InputError(f"sine needs a pulse shorter than the trial, got {self.pulse} ms of {self.n_steps} steps")

    def batch(self, n_batch: int, seed: int) -> TaskBatch:
        """Deterministic trials (``seed`` is accepted for a uniform interface)."""
        _check_batch(n_batch)
        T, B, p = self.n_steps, int(n_batch), _steps(self.pulse, self.dt)
        x = np.zeros((T, B, 1))
        x[:p] = 1.0
        t = np.arange(T) * self.dt / 1000.0  # s
        target = np.broadcast_to(
            (self.amplitude * np.sin(2 * np.pi * self.frequency * t))[:, None, None], (T, B, 1)
        ).copy()
        mask = np.zeros((T, B))
        mask[p:] = 1.0
        return TaskBatch(x, target, mask, mask.astype(bool), {})

    def _terms(self, y: Any, target: Any) -> tuple[Any, Any]:
        """ℓ = ‖y_t − y*_t‖², ∂ℓ/∂y_t = 2(y_t − y*_t)."""
        return ((y - target) ** 2).sum(-1), 2.0 * (y - target)

    norm_outputs: ClassVar[bool] = True

    def _accuracy(self, y: Any, batch: TaskBatch) -> float:
        """R² = 1 − SSE/SS_tot over the loss steps."""
        y = _as_numpy(y)
        m = batch.mask.astype(bool)
        yt, yp = batch.target[m], y[m]
        sse = float(((yp - yt) ** 2).sum())
        ss_tot = float(((yt - yt.mean(axis=0)) ** 2).sum())
        return 1.0 - sse / ss_tot

    chance: ClassVar[float] = 0.0

    def oracle(self, batch: TaskBatch) -> np.ndarray:
        """The target itself."""
        return batch.target.copy()


# ------------------------------------------------------------------------------------------------
# factory
# ------------------------------------------------------------------------------------------------

_PERIODS = {
    "2af": (("fixation", 100.0), ("stimulus", 700.0), ("decision", 100.0)),
    "dms": (("fixation", 100.0), ("sample", 100.0), ("delay", 500.0), ("test", 100.0), ("decision", 100.0)),
    "cxt": (("fixation", 100.0), ("stimulus", 200.0), ("delay", 500.0), ("decision", 100.0)),
}
_CLASSES = {"2af": (TwoAFC, 3), "dms": (DelayMatchSample, 3), "cxt": (ContextDecision, 7)}


def make_task(name: str, **options: Any) -> Task:
    """The task ``name`` (one of :data:`TASKS`) with ``options`` (None values mean the default).

    Common: ``dt`` [ms, 20], ``tau`` [ms, 100]. Classification: ``sigma`` [1], ``loss_periods``
    (``decision`` | ``all``), ``timing`` {period: ms} overriding the docs/tasks.md durations,
    ``coherences`` [%] (2af, cxt). xor: ``delay`` [steps, 10], ``n_steps`` [300]. sine:
    ``frequency`` [Hz], ``amplitude``, ``pulse`` [ms], ``duration`` [ms, 2000].
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    common = {k: float(options.pop(k)) for k in ("dt", "tau") if k in options}
    if common.get("dt", 20.0) <= 0 or common.get("tau", 100.0) <= 0:
        raise InputError("dt and tau must be positive (ms)")
    try:
        if name in _CLASSES:
            cls, n_in = _CLASSES[name]
            timing = dict(_PERIODS[name])
            extra = set(options.get("timing", {})) - set(timing)
            if extra:
                raise InputError(f"unknown period(s) {', '.join(sorted(extra))} for task {name}; it has {', '.join(timing)}")
            timing.update({k: float(v) for k, v in options.pop("timing", {}).items()})
            if "coherences" in options:
                options["coherences"] = tuple(float(c) for c in options["coherences"])
            return cls(name=name, n_in=n_in, n_out=3, n_steps=0, periods=tuple(timing.items()), **common, **options)
        if name == "xor":
            return DelayedXor(name=name, n_in=1, n_out=1, n_steps=int(options.pop("n_steps", 300)), **common, **options)
        dt = common.get("dt", 20.0)
        duration = float(options.pop("duration", 2000.0))
        return SineGeneration(name=name, n_in=1, n_out=1, n_steps=_steps(duration, dt), **common, **options)
    except TypeError as e:
        raise InputError(f"bad option for task {name}: {e}") from None


# ------------------------------------------------------------------------------------------------
# the task protocol, and tasks from elsewhere
# ------------------------------------------------------------------------------------------------

TASK_PROTOCOL = ("name", "n_in", "n_out", "n_steps", "dt", "tau", "batch", "loss", "partial_loss", "output_error",
                 "accuracy", "chance", "ceiling", "fixation_input", "probe_inputs", "to_attrs")
"""What :func:`biorules.train.train` uses of a task object (module docstring)."""


def check_task(task: Any) -> None:
    """Raise InputError (one line) naming what a task object lacks of :data:`TASK_PROTOCOL`."""
    missing = [m for m in TASK_PROTOCOL if not hasattr(task, m)]
    if missing:
        raise InputError(f"{type(task).__name__} is not a task: it lacks {', '.join(missing)} "
                         "(see the task protocol in biorules.tasks)")


@dataclass(frozen=True, eq=False)
class NeurogymTask(Task):
    """A neurogym environment's trials as a task: one trial per row, cut or padded to ``n_steps``.

    x is the environment's observation ``ob`` and the label its ground truth ``gt`` (0 = fixate,
    as in neurogym's classification tasks); steps after a trial ends are zero input, label 0, and
    outside the loss mask. The loss is the cross-entropy on every step of the trial
    (``loss_periods="all"``, neurogym's supervised setting) or on its decision steps (gt ≠ 0,
    ``"decision"``). The metric is the classification tasks' one: logits averaged over the decision
    steps, argmax over the actions 1..n_out−1, compared with the trial's gt there (trials without a
    decision step in the window are not counted). ``batch(n, seed)`` reseeds a private copy of the
    environment from ``seed`` (neurogym draws from its own ``RandomState``), so trials depend on
    the seed alone. The ceiling is the ground truth's metric (1): no ideal observer is known for a
    generic environment.
    """

    env: Any = None
    env_id: str = ""
    loss_periods: str = "all"

    def __post_init__(self) -> None:
        if self.loss_periods not in LOSS_PERIODS:
            raise InputError(f"loss_periods must be one of {', '.join(LOSS_PERIODS)}, got {self.loss_periods!r}")

    @property
    def chance(self) -> float:  # type: ignore[override]
        """Guessing among the n_out − 1 non-fixation actions."""
        return 1.0 / max(self.n_out - 1, 1)

    def batch(self, n_batch: int, seed: int) -> TaskBatch:
        _check_batch(n_batch)
        T, B = self.n_steps, int(n_batch)
        self.env.seed(int(np.random.SeedSequence(int(seed)).generate_state(1)[0]))
        x = np.zeros((T, B, self.n_in))
        labels = np.zeros((T, B), dtype=np.int64)
        inside = np.zeros((T, B), dtype=bool)
        for b in range(B):
            self.env.new_trial()
            ob, gt = np.asarray(self.env.ob, dtype=np.float64), np.asarray(self.env.gt)
            n = min(len(ob), T)
            x[:n, b], labels[:n, b], inside[:n, b] = ob[:n].reshape(n, -1), gt[:n], True
        dec = inside & (labels != 0)
        first = np.where(dec.any(0), dec.argmax(0), 0)
        choice = np.where(dec.any(0), labels[first, np.arange(B)], 0)
        mask = (inside if self.loss_periods == "all" else dec).astype(np.float64)
        return TaskBatch(x, labels, mask, dec, {"choice": choice})

    def _terms(self, y: Any, target: Any) -> tuple[Any, Any]:
        return ClassificationTask._terms(self, y, target)

    def _accuracy(self, y: Any, batch: TaskBatch) -> float:
        y = _as_numpy(y)
        dec = batch.decision.astype(np.float64)
        scored = dec.sum(axis=0) > 0
        if not scored.any():
            return float("nan")
        mean = (y * dec[..., None]).sum(axis=0)[scored] / dec.sum(axis=0)[scored, None]
        pick = 1 + np.argmax(mean[:, 1:], axis=1)
        return float(np.mean(pick == batch.trials["choice"][scored]))

    def oracle(self, batch: TaskBatch) -> np.ndarray:
        """Logits 10 on the ground-truth action of every step."""
        y = np.zeros((*batch.target.shape, self.n_out))
        np.put_along_axis(y, batch.target[..., None], 10.0, axis=-1)
        return y

    def ceiling(self, n_trials: int = 256, seed: int = 0) -> float:
        """The ground truth's metric on ``n_trials`` trials (1 when every trial has a decision step)."""
        return super().ceiling(n_trials, seed)

    def to_attrs(self) -> dict[str, Any]:
        return {"task_name": self.name, "task_env": self.env_id, "task_n_in": self.n_in, "task_n_out": self.n_out,
                "task_n_steps": self.n_steps, "task_dt": self.dt, "task_tau": self.tau,
                "task_loss_periods": self.loss_periods}


def from_neurogym(env: Any, seq_len: int, *, tau: float = 100.0, loss_periods: str = "all") -> NeurogymTask:
    """A task (:class:`NeurogymTask`) from a neurogym environment, ``seq_len`` steps per trial.

    ``env``: a neurogym ``TrialEnv`` (or a gymnasium wrapper of one, e.g. ``neurogym.make(...)``)
    with a discrete action space; its ``dt`` [ms] is the task's, ``tau`` [ms] the network's time
    constant (α = dt/τ). The environment is copied, so the caller's is never reseeded. neurogym is
    an optional extra (``pip install biorules[neurogym]``): it pins older gymnasium and numpy.
    """
    import copy

    inner = getattr(env, "unwrapped", env)
    for attr in ("new_trial", "seed", "dt", "observation_space", "action_space"):
        if not hasattr(inner, attr):
            raise InputError(f"{type(env).__name__} is not a neurogym trial environment (it has no {attr})")
    if not hasattr(inner.action_space, "n"):
        raise InputError("from_neurogym needs a discrete action space (classification by ground-truth action)")
    if int(seq_len) < 1:
        raise InputError(f"seq_len must be a positive number of steps, got {seq_len}")
    spec = getattr(env, "spec", None) or getattr(inner, "spec", None)
    env_id = str(getattr(spec, "id", "") or type(inner).__name__)
    n_in = int(np.prod(inner.observation_space.shape))
    return NeurogymTask(name=f"neurogym:{env_id}", n_in=n_in, n_out=int(inner.action_space.n), n_steps=int(seq_len),
                        dt=float(inner.dt), tau=float(tau), env=copy.deepcopy(inner), env_id=env_id,
                        loss_periods=loss_periods)
