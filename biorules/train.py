"""Train a network, or a stack of them, on one task with one learning rule (docs/rules.md, docs/study.md).

Per update u = 0..n−1: ``on_update(u, model)`` (optional hook, e.g. flossing steps before the
update), draw a training batch, let the rule compute gradients (summed over the trial, averaged
over the batch), and take one optimiser step (Adam, lr 10⁻³, β = (0.9, 0.999) by default, no
clipping). Recorded:

- ``loss``, ``accuracy`` (update): the task loss and metric of each training batch;
- ``eval_loss``, ``eval_accuracy`` (eval_update): on a fixed monitoring batch every ``eval_every``;
  ``eval_accuracy_best`` and ``eval_accuracy_last``; ``final_loss``, ``final_accuracy``: that batch
  after training;
- ``test_loss``, ``test_accuracy``: on ``test_batch`` (2048) fresh trials of their own stream, once,
  after training: the number to report;
- ``updates_to_criterion``: updates done at the first monitoring point whose metric reaches
  :data:`CRITERION` × the task's ceiling (NaN when never); attrs ``chance``, ``ceiling``, ``criterion``;
- ``lambda_before``, ``lambda_after`` (condition, exponent) and their ``_sem``: the top-k Lyapunov
  spectrum per τ of the rate network before and after training in each of :data:`CONDITIONS`
  (:func:`biorules.lyapunov.spectrum`);
- ``grad_cosine`` (cosine_update): cos(∇W_rule, ∇W_BPTT) on the same batch every ``cosine_every``;
- ``weight_change`` = ‖W − W₀‖_F/‖W₀‖_F, ``input_weight_change`` likewise for U;
- ``status`` (CF flags of :data:`biorules.store.STATUS`): ``done``, or ``diverged`` when a loss,
  gradient or weight becomes NaN/inf; the run then stops and its curves are NaN-padded, never an
  exception;
- ``wall_time`` [s];
- the parameters before the first update and after the last: ``W``, ``U``, ``b``, ``V``, ``c``
  (stage, ...) in the network's dtype (:mod:`biorules.weights`; a store keeps them in its
  ``weights`` group).

**Any task.** ``task`` is a name of :data:`biorules.tasks.TASKS` or an object with the task
protocol (see :mod:`biorules.tasks`, e.g. :func:`biorules.tasks.from_neurogym`); the config records
its name.

**Stacks.** With ``gains`` and ``seeds`` (one of each per member) the config trains a stack of S
networks in one tensor program: every variable gains a leading ``member`` dimension (coords
``gain`` and ``seed``). Members share nothing but the program: each has its own network, feedback,
training and evaluation streams (from its own master seed), its own optimiser state (Adam and SGD
act elementwise) and its own divergence flag; a member that diverges is frozen and NaN-padded while
the others go on unchanged. Member s gives the numbers its single run gives (to rounding).

Seeds: one master seed spawns independent streams (:data:`SEED_STREAMS`) for the network, the
feedback matrix B, the training batches, the monitoring batch, Q₀ and the spectrum's initial
states, the test trials and the probe trials of the task-conditioned spectrum.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import xarray as xr

from biorules.errors import InputError
from biorules.network import NetworkParams
from biorules.tasks import TASKS, make_task
from biorules.weights import network_weights, weights_dataset

MODELS = ("rate", "lif")
OPTIMIZERS = ("adam", "sgd")
DTYPES = ("float32", "float64")
DEFAULT_LYAPUNOV = {"transient_tau": 50.0, "ons_transient_tau": 10.0, "steps_tau": 200.0}
"""Quick spectrum settings (in τ) for before/after training: transient, Q warm-up, accumulation."""


SEED_STREAMS = ("network", "feedback", "train", "eval", "lyapunov", "test", "probe", "noise")
"""Streams spawned from a master seed: W, U, V (network), B (feedback), training batches, the
monitoring batch, Q₀ and the spectrum's initial states (lyapunov), the final test trials, the
trials that drive the task-conditioned spectrum (probe) and the activity noise of training,
monitoring and test trials (noise). New streams are appended, so the earlier ones never change."""

ONLINE_RULES = ("eprop", "eprop-random", "rflo")
"""Rules that can apply their update at every time step (``online=True``)."""

CONDITIONS = ("autonomous", "fixation", "task")
"""Spectrum conditions: x = 0; the task's constant fixation input x_fix (folded into the bias,
b + U x_fix); the task's own trials back to back (exponents conditional on that input)."""


CONDITION_LONG_NAME = ("spectrum condition: autonomous (x = 0), fixation (constant fixation input), "
                       "task (conditional on the task's trials back to back)")
CRITERION = 0.9
"""A run has learned when its metric reaches this fraction of the task's ceiling."""


@functools.lru_cache(maxsize=64)
def task_limits(task: Any) -> tuple[float, float]:
    """(chance, ceiling) of a task's metric: guessing, and the ideal observer on 32768 fixed trials."""
    return float(task.chance), float(task.ceiling())


def seeds(seed: int) -> dict[str, int]:
    """Independent integer seeds, one per name in :data:`SEED_STREAMS`, from one master seed."""
    names = SEED_STREAMS
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: int(c.generate_state(1, dtype=np.uint32)[0]) for n, c in zip(names, children, strict=True)}


def rules_for(model: str) -> tuple[str, ...]:
    """Names of the rules defined for ``model`` (``rate`` or ``lif``)."""
    from biorules.rules import rules_for as _rules_for

    return _rules_for(model)


def check_choice(task: str, rule: str, model: str = "rate") -> None:
    """Raise InputError (one line) for an unknown task, model, or a rule not defined for ``model``."""
    from biorules.rules import check_rule

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    check_rule(rule, model)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run, with its default; serialised once into the Dataset attrs."""

    task: Any = "2af"
    """Task name (:data:`biorules.tasks.TASKS`), or a task object with the protocol of
    :mod:`biorules.tasks` (then ``task_options`` must be empty)."""
    rule: str = "eprop"
    """Rule name, defined for ``model`` (:func:`biorules.rules.rules_for`)."""
    model: str = "rate"
    """Network kind: ``rate`` or ``lif`` (the LIF step is the task's dt, 1 ms by default)."""
    network: Any = None
    """:class:`~biorules.network.NetworkParams` (rate) or ``LIFParams`` (lif); n_in and n_out come
    from the task, the seed from each member's master seed. None: the defaults."""
    seed: int = 0
    """Master seed of a single run."""
    gains: tuple[float, ...] = ()
    """A stack: the gain g of every member (empty: one network of ``network.gain``)."""
    seeds: tuple[int, ...] = ()
    """A stack: the master seed of every member (as many as ``gains``)."""
    optimizer: str = "adam"
    """``adam`` (β = (0.9, 0.999)) or ``sgd``."""
    lr: float = 1e-3
    """Learning rate of the task optimiser [1]."""
    batch: int = 32
    """Trials per update [1]."""
    updates: int = 2000
    """Number of updates [1]."""
    n_exponents: int = 10
    """k top exponents before/after training (capped at N; 0 skips the spectra; none for lif)."""
    eval_every: int = 50
    """Held-out evaluation period [updates]."""
    eval_batch: int = 512
    """Trials of the fixed monitoring batch [1]."""
    test_batch: int = 2048
    """Fresh trials of the final test (own seeded stream, never used for monitoring) [1]."""
    conditions: tuple[str, ...] = CONDITIONS
    """Spectrum conditions before/after training (:data:`CONDITIONS`)."""
    cosine_every: int = 100
    """Every this many updates the cosine of the rule's ∇W with BPTT's on the same batch (0: off)."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Passed to :func:`biorules.tasks.make_task` (None values mean the default)."""
    rule_options: dict[str, Any] = field(default_factory=dict)
    """Passed to the rule (e.g. ``{"window": 10}``)."""
    lyapunov: dict[str, float] = field(default_factory=dict)
    """Spectrum settings in τ, overriding :data:`DEFAULT_LYAPUNOV`."""
    enforce_dale: bool = True
    """With the ``dale`` init, zero entries whose sign flips after each update."""
    dtype: str = "float32"
    """``float32`` or ``float64``."""
    device: str = "cpu"
    """Torch device of the network (``cpu``, ``cuda``, ``cuda:1``)."""
    floss: Any = None
    """A :class:`biorules.flossing.FlossConfig`: flossing around training (rate model); in a stack
    each member flosses with its own master seed as the flossing seed."""
    floss_schedule: Any = None
    """Its :class:`~biorules.flossing.FlossSchedule` (default E_p = 50, E_f = 10, E_i = 50, N_i = 2)."""
    floss_driven: bool = True
    """Flossing windows driven by the task's trials (else autonomous)."""
    online: bool = False
    """Apply the rule's update at every loss step of a trial, as it runs (:data:`ONLINE_RULES`),
    instead of once per batch; one update is still one batch of trials."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if isinstance(self.task, str):
            check_choice(self.task, self.rule, self.model)
        else:
            from biorules.rules import check_rule
            from biorules.tasks import check_task

            check_task(self.task)
            check_rule(self.rule, self.model)
            if any(v is not None for v in self.task_options.values()):
                raise InputError("task_options apply to named tasks only; build the task object with them")
        if int(self.updates) < 1:
            raise InputError(f"updates must be a positive number, got {self.updates}")
        if int(self.batch) < 1 or int(self.eval_batch) < 1 or int(self.eval_every) < 1 or int(self.cosine_every) < 0:
            raise InputError("batch, eval_batch and eval_every must be positive, cosine_every non-negative")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if int(self.seed) < 0 or any(int(s) < 0 for s in self.seeds):
            raise InputError(f"seeds must be non-negative integers, got {self.seeds or self.seed}")
        if len(self.gains) != len(self.seeds):
            raise InputError(f"a stack needs one seed per gain, got {len(self.gains)} gains and {len(self.seeds)} seeds")
        if any(not (g >= 0 and math.isfinite(g)) for g in self.gains):
            raise InputError(f"gains must be finite and non-negative, got {self.gains}")
        if int(self.test_batch) < 1:
            raise InputError(f"test_batch must be positive, got {self.test_batch}")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.conditions:
            raise InputError(f"unknown spectrum condition {bad[0] if bad else '(none)'}; choose from {', '.join(CONDITIONS)}")
        if self.floss is not None and self.model != "rate":
            raise InputError("flossing is defined for rate networks only; use --model rate")
        if self.online and self.rule not in ONLINE_RULES:
            raise InputError(f"online updates need a forward-in-time rule ({', '.join(ONLINE_RULES)}), not {self.rule}")
        if self.model != "rate" and (getattr(self.network, "noise", 0.0) or getattr(self.network, "learn_a0", False)):
            raise InputError("activity noise and a learned a0 are options of the rate network (--model rate)")

    @property
    def task_name(self) -> str:
        """The task's name (a task object's ``name``)."""
        return self.task if isinstance(self.task, str) else str(getattr(self.task, "name", type(self.task).__name__))

    @property
    def stacked(self) -> bool:
        """Whether this config trains a stack (``gains``/``seeds`` given)."""
        return bool(self.gains)

    def to_json(self) -> str:
        """Every option as one JSON object (nested records as objects)."""

        def plain(v: Any) -> Any:
            if hasattr(v, "__dataclass_fields__"):
                return {"type": type(v).__name__, **{k: plain(x) for k, x in asdict(v).items()}}
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            return v

        value = lambda name: self.task_name if name == "task" else getattr(self, name)  # noqa: E731
        return json.dumps({f.name: plain(value(f.name)) for f in fields(self)}, sort_keys=True)


def _kind(model: str):
    """(parameter record, network class, has a Lyapunov spectrum) of a network kind."""
    if model == "rate":
        from biorules.network import RateRNN

        return NetworkParams, RateRNN, True
    from biorules.spiking import LIFNetwork, LIFParams

    return LIFParams, LIFNetwork, False


def _member_params(config: TrainConfig, task: Any, gain: float | None, net_seed: int) -> Any:
    """One member's network parameters: the config's record with the task's sizes, gain and seed."""
    params_cls, _, _ = _kind(config.model)
    base = config.network
    if base is None:
        base = params_cls()
    elif not isinstance(base, params_cls):  # shared options of both kinds: size and gain
        base = params_cls(n=base.n, gain=base.gain)
    extra = {"dt": task.dt} if hasattr(base, "dt") else {}
    return replace(base, n_in=task.n_in, n_out=task.n_out, seed=net_seed,
                   **({} if gain is None else {"gain": float(gain)}), **extra)


def _finite(t: Any, stacked: bool) -> np.ndarray:
    """Per member (or one value): whether every entry of ``t`` is finite."""
    import torch

    ok = torch.isfinite(t)
    if not stacked:
        return np.array([bool(ok.all())])
    return ok.reshape(ok.shape[0], -1).all(dim=1).cpu().numpy() if ok.ndim else np.array([bool(ok)])


def spectrum_steps(alpha: float, settings: dict | None = None) -> tuple[int, int, int]:
    """(transient, Q warm-up, accumulation) steps of the before/after spectra (settings in τ)."""
    st = {**DEFAULT_LYAPUNOV, **(settings or {})}
    return tuple(int(round(st[k] / alpha)) for k in ("transient_tau", "ons_transient_tau", "steps_tau"))


def _spectrum(W: np.ndarray, b: np.ndarray, params: NetworkParams, k: int, seed: tuple[int, ...],
              settings: dict, U: np.ndarray | None = None, inputs: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k spectra per τ and their SEM, (S, k) each, of W (S, N, N) with bias b (S, N), optionally
    driven by ``inputs`` (S, T, n_in) through U (S, N, n_in); NaN where a weight is not finite."""
    from biorules.lyapunov import spectrum

    arrays = [W, b] + ([U] if U is not None else [])
    finite = np.logical_and.reduce([np.isfinite(a).reshape(a.shape[0], -1).all(1) for a in arrays])
    if not finite.any():
        return np.full((W.shape[0], k), np.nan), np.full((W.shape[0], k), np.nan)
    zero = lambda a: np.where(finite.reshape(-1, *[1] * (a.ndim - 1)), a, 0.0)  # noqa: E731
    drive = {} if inputs is None else {"U": zero(U), "inputs": inputs}
    transient, ons, steps = spectrum_steps(params.alpha, settings)
    lam = spectrum(zero(W), alpha=params.alpha, nonlinearity=params.nonlinearity, n_exponents=k, b=zero(b),
                   seed=seed, unit="tau", steps=steps, transient=transient, ons_transient=ons, **drive)
    values = np.asarray(lam.values, dtype=np.float64).reshape(-1, k).copy()
    sem = np.asarray(lam.coords["sem"].values, dtype=np.float64).reshape(-1, k).copy()
    values[~finite], sem[~finite] = np.nan, np.nan
    return values, sem


def train(
    config: TrainConfig | str = "2af",
    rule: str | None = None,
    network: Any = None,
    *,
    on_update: Callable[[int, Any], None] | None = None,
    progress: bool = False,
    **options: Any,
) -> xr.Dataset:
    """Train as ``config`` says and return the run as a Dataset (see the module docstring).

    ``train(TrainConfig(...))``, or the same fields as arguments: ``train("2af", "eprop",
    NetworkParams(n=64), updates=400)``. ``on_update(u, model)`` is called before update u
    (u = 0..updates−1), e.g. to run flossing steps with their own optimiser; it may change the
    parameters in place. ``progress`` draws a tqdm bar.
    """
    if not isinstance(config, TrainConfig):
        kw = dict(options)
        if rule is not None:
            kw["rule"] = rule
        if "params" in kw:
            kw["network"] = kw.pop("params")
        for name in ("task_options", "rule_options", "lyapunov"):
            kw[name] = dict(kw.get(name) or {})
        config = TrainConfig(task=config, network=network, **kw)
    elif rule is not None or network is not None or options:
        raise InputError("train(config) takes no further options; put them in the TrainConfig")
    return _Run(config, on_update, progress).run()


class _Run:
    """One call of :func:`train`: build, measure, loop, measure, assemble. Members are an axis."""

    def __init__(self, config: TrainConfig, on_update: Callable[[int, Any], None] | None, progress: bool):
        import torch

        self.cfg, self.user_hook, self.progress = config, on_update, progress
        self.t0 = time.perf_counter()
        cfg = config
        _, net_cls, has_spectrum = _kind(cfg.model)
        task_options = {k: v for k, v in cfg.task_options.items() if v is not None}
        params_cls = _kind(cfg.model)[0]
        if hasattr(params_cls, "dt"):  # the LIF step is the task's dt
            lif_dt = cfg.network.dt if isinstance(cfg.network, params_cls) else params_cls.dt
            task_options.setdefault("dt", lif_dt)
        self.task = make_task(cfg.task, **task_options) if isinstance(cfg.task, str) else cfg.task
        master = cfg.seeds if cfg.stacked else (cfg.seed,)
        self.streams = [seeds(s) for s in master]
        gains = cfg.gains if cfg.stacked else (None,)
        members = tuple(_member_params(cfg, self.task, g, s["network"]) for g, s in zip(gains, self.streams, strict=True))
        self.members = members
        self.S = len(members)
        self.torch_dtype = getattr(torch, cfg.dtype)
        self.net = net_cls(members if cfg.stacked else members[0], dtype=self.torch_dtype).to(cfg.device)
        from biorules.rules import get_rule

        rule_options = {k: v for k, v in cfg.rule_options.items() if v is not None}
        if cfg.rule in ("eprop-random", "rflo"):
            fb = tuple(s["feedback"] for s in self.streams)
            rule_options.setdefault("feedback_seed", fb if cfg.stacked else fb[0])
        self.rule = get_rule(cfg.rule, kind=cfg.model, **rule_options)
        sigma = float(getattr(members[0], "noise", 0.0))
        self.noise_scale = sigma * math.sqrt(2.0 / members[0].alpha) if sigma else 0.0
        self.k = min(int(cfg.n_exponents), members[0].n) if has_spectrum else 0
        self.settings = {**DEFAULT_LYAPUNOV, **cfg.lyapunov}
        self.hook = None
        if cfg.floss is not None:
            from biorules.flossing import FlossHook, FlossSchedule

            self.hook = FlossHook(cfg.floss, cfg.floss_schedule or FlossSchedule(), driven=cfg.floss_driven,
                                  seeds=cfg.seeds if cfg.stacked else None)
            self.hook.task = self.task if self.hook.driven else None

    # ------------------------------------------------------------------------------ pieces
    def _batch(self, n: int, draw: list[int], noise: list[np.random.Generator] | None = None) -> Any:
        """n trials per member from the seeds ``draw``; with activity noise, η_t drawn from ``noise``
        (one generator per member): η = σ_rec √(2/α) ξ, ξ ~ N(0, I), shape (T, B, N)."""
        from biorules.tasks import stack_batches

        batches = [self.task.batch(n, d) for d in draw]
        if self.noise_scale:
            batches = [b._replace(noise=self.noise_scale * g.standard_normal((b.x.shape[0], n, self.members[0].n)))
                       for b, g in zip(batches, noise, strict=True)]
        return batches[0] if not self.cfg.stacked else stack_batches(batches)

    def _noise_streams(self, use: str) -> list[np.random.Generator] | None:
        """One generator per member for the noise of ``use`` (train, eval or test), or None without noise."""
        if not self.noise_scale:
            return None
        which = ("train", "eval", "test").index(use)
        return [np.random.default_rng(np.random.SeedSequence(s["noise"]).spawn(3)[which]) for s in self.streams]

    def _spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """The top-k spectra per τ and their SEM, (S, C, k) each, in every condition of the config
        (one stacked call per condition; the same Q₀, initial states and probe trials before and after)."""
        C = len(self.cfg.conditions)
        if not self.k:
            return np.zeros((self.S, C, 0)), np.zeros((self.S, C, 0))
        W = self.net.W.detach().double().cpu().numpy().reshape(self.S, self.members[0].n, -1)
        b = self.net.b.detach().double().cpu().numpy().reshape(self.S, -1)
        U = self.net.U.detach().double().cpu().numpy().reshape(self.S, W.shape[1], -1)
        lyap_seeds = tuple(s["lyapunov"] for s in self.streams)
        lam, sem = np.full((self.S, C, self.k), np.nan), np.full((self.S, C, self.k), np.nan)
        for c, condition in enumerate(self.cfg.conditions):
            if condition == "autonomous":
                out = _spectrum(W, b, self.members[0], self.k, lyap_seeds, self.settings)
            elif condition == "fixation":
                b_fix = b + U @ self.task.fixation_input()
                out = _spectrum(W, b_fix, self.members[0], self.k, lyap_seeds, self.settings)
            else:
                T = sum(spectrum_steps(self.members[0].alpha, self.settings))
                x = np.stack([self.task.probe_inputs(T, s["probe"]) for s in self.streams])
                out = _spectrum(W, b, self.members[0], self.k, lyap_seeds, self.settings, U=U, inputs=x)
            lam[:, c], sem[:, c] = out
        return lam, sem

    def _evaluate(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(data.x, dtype=self.net.W.dtype, device=self.net.W.device)
            eta = None if data.noise is None else torch.as_tensor(data.noise, dtype=x.dtype, device=x.device)
            y = self.rule.forward(self.net, x, eta)
            loss = self.task.loss(y, data)
        return np.atleast_1d(loss.double().cpu().numpy()).copy(), np.atleast_1d(self.task.accuracy(y, data)).astype(float)

    def _cosine(self, g: Any, g_ref: Any) -> np.ndarray:
        dims = tuple(range(g.ndim - 2, g.ndim))
        cos = (g * g_ref).sum(dims) / (g.norm(dim=dims) * g_ref.norm(dim=dims))
        return np.atleast_1d(cos.double().cpu().numpy())

    # ------------------------------------------------------------------------------ the run
    def run(self) -> xr.Dataset:
        import torch
        from tqdm.auto import tqdm

        cfg, net, task, S = self.cfg, self.net, self.task, self.S
        W0, U0 = net.W.detach().clone(), net.U.detach().clone()
        initial = network_weights(net)
        lam_before, sem_before = self._spectra()
        from biorules.optim import SGD, Adam

        opt = Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999)) if cfg.optimizer == "adam" else SGD(net.parameters(), lr=cfg.lr)
        dale = any(getattr(p, "init", None) == "dale" for p in self.members) and cfg.enforce_dale
        dale_sign = torch.sign(W0) if dale else None

        n_up = int(cfg.updates)
        eval_at = list(range(0, n_up, int(cfg.eval_every))) + [n_up]
        eval_data = self._batch(int(cfg.eval_batch), [s["eval"] for s in self.streams], self._noise_streams("eval"))
        train_rngs = [np.random.default_rng(s["train"]) for s in self.streams]
        noise_rngs = self._noise_streams("train")
        loss_curve, acc_curve = np.full((S, n_up), np.nan), np.full((S, n_up), np.nan)
        eval_loss, eval_acc = np.full((S, len(eval_at)), np.nan), np.full((S, len(eval_at)), np.nan)
        cos_at = list(range(0, n_up, int(cfg.cosine_every))) if cfg.cosine_every else []
        cosines = np.full((S, len(cos_at)), np.nan)
        reference = None
        if cos_at:
            from biorules.rules import get_rule

            form = getattr(self.rule, "form", "a")  # BPTT of the same network form as the rule's
            reference = get_rule("bptt", kind=cfg.model, **({"form": form} if form != "a" else {}))
        alive = np.ones(S, dtype=bool)
        status, message = ["done"] * S, [""] * S

        def diverge(bad: np.ndarray, why: str) -> None:
            """Mark members as diverged; from now on they get no gradient and record nothing."""
            for s in np.flatnonzero(bad & alive):
                status[s], message[s] = "diverged", why
            alive[:] &= ~bad

        def apply(grads: dict[str, Any]) -> None:
            """One optimiser step with ``grads`` (zero for diverged members), then Dale's signs."""
            opt.zero_grad(set_to_none=True)
            for name, p in net.named_parameters():
                g = grads[name].to(p.dtype)
                if not alive.all():
                    g = g.clone()
                    g[torch.as_tensor(~alive, device=g.device)] = 0.0
                p.grad = g
            opt.step()
            if dale_sign is not None:
                with torch.no_grad():
                    net.W.mul_((net.W * dale_sign >= 0).to(net.W.dtype))

        bar = tqdm(total=n_up, disable=not self.progress, desc=f"{cfg.task_name} {cfg.rule}", unit="update", leave=False)
        try:
            for u in range(n_up):
                if u in eval_at:
                    el, ea = self._evaluate(eval_data)
                    i = eval_at.index(u)
                    eval_loss[alive, i], eval_acc[alive, i] = el[alive], ea[alive]
                if self.hook is not None:
                    self.hook(u, net)
                if self.user_hook is not None:
                    self.user_hook(u, net)
                data = self._batch(int(cfg.batch), [int(r.integers(2**63 - 1)) for r in train_rngs], noise_rngs)
                if cfg.online and u in cos_at:  # the cosine compares gradients at this update's start
                    g_ref = reference.gradients(net, data, task).grads["W"]
                    cosines[alive, cos_at.index(u)] = self._cosine(self.rule.gradients(net, data, task).grads["W"],
                                                                   g_ref)[alive]
                res = self.rule.gradients(net, data, task, apply=apply) if cfg.online else self.rule.gradients(net, data, task)
                ok = _finite(res.loss, cfg.stacked)
                for g in res.grads.values():
                    ok &= _finite(g, cfg.stacked)
                if not ok[alive].all():
                    diverge(~ok, f"non-finite loss or gradient at update {u}")
                    if not alive.any():
                        break
                if u in cos_at and not cfg.online:
                    g_ref = reference.gradients(net, data, task).grads["W"]
                    cosines[alive, cos_at.index(u)] = self._cosine(res.grads["W"], g_ref)[alive]
                loss_curve[alive, u] = np.atleast_1d(res.loss.double().cpu().numpy())[alive]
                acc_curve[alive, u] = np.atleast_1d(task.accuracy(res.y, data))[alive]
                if not cfg.online:
                    apply(res.grads)
                ok = np.ones(S, dtype=bool)
                for p in net.parameters():
                    ok &= _finite(p, cfg.stacked)
                if not ok[alive].all():
                    diverge(~ok, f"non-finite weights after update {u}")
                    if not alive.any():
                        break
                if self.progress and (u % 10 == 0 or u == n_up - 1):
                    bar.set_postfix(loss=f"{np.nanmean(loss_curve[:, u]):.3f}", acc=f"{np.nanmean(acc_curve[:, u]):.2f}")
                bar.update(1)
        finally:
            bar.close()

        final_loss, final_acc = np.full(S, np.nan), np.full(S, np.nan)
        if alive.any():
            fl, fa = self._evaluate(eval_data)
            final_loss[alive], final_acc[alive] = fl[alive], fa[alive]
            eval_loss[alive, -1], eval_acc[alive, -1] = fl[alive], fa[alive]
            for s in np.flatnonzero(alive & ~np.isfinite(final_loss)):
                status[s], message[s] = "diverged", "non-finite evaluation loss after training"
        done = np.array([st == "done" for st in status])
        test_loss, test_acc = np.full(S, np.nan), np.full(S, np.nan)
        if done.any():
            tl, ta = self._evaluate(self._batch(int(cfg.test_batch), [s["test"] for s in self.streams],
                                                self._noise_streams("test")))
            test_loss[done], test_acc[done] = tl[done], ta[done]
        best_acc = np.where(done, np.nanmax(np.where(np.isfinite(eval_acc), eval_acc, -np.inf), axis=1), np.nan)
        last_acc = np.where(done, eval_acc[:, -1], np.nan)
        chance, ceiling = task_limits(task)
        reached = eval_acc >= CRITERION * ceiling
        to_criterion = np.where(done & reached.any(1), np.asarray(eval_at, float)[reached.argmax(1)], np.nan)
        lam_after, sem_after = self._spectra()
        lam_after[~done], sem_after[~done] = np.nan, np.nan
        W, U = net.W.detach(), net.U.detach()
        change = lambda a, b: np.atleast_1d(((a - b).flatten(-2).norm(dim=-1) / b.flatten(-2).norm(dim=-1)).double().cpu().numpy())  # noqa: E731
        weight_change = np.where(done, change(W, W0), np.nan)
        input_change = np.where(done, change(U, U0), np.nan)
        final = network_weights(net)
        wall = time.perf_counter() - self.t0
        return self._dataset(locals())

    # ------------------------------------------------------------------------------ result
    def _dataset(self, r: dict[str, Any]) -> xr.Dataset:
        from biorules.provenance import provenance_attrs
        from biorules.store import STATUS, status_variable

        cfg, S = self.cfg, self.S
        lead = ("member",) if cfg.stacked else ()
        take = (lambda a: a) if cfg.stacked else (lambda a: a[0])
        metric = "R^2" if cfg.task_name == "sine" else "fraction correct"
        status = status_variable(lead, (S,) if cfg.stacked else ())
        status.values[...] = take(np.array([STATUS[s] for s in r["status"]], dtype=np.int8))
        status.attrs["long_name"] = "run status"
        wall = np.full(S, r["wall"])

        def var(dims: tuple[str, ...], values: np.ndarray, units: str, long_name: str) -> tuple:
            return (lead + dims, take(values), {"units": units, "long_name": long_name})

        ds = xr.Dataset(
            {
                "loss": var(("update",), r["loss_curve"], "1", "task loss of the training batch"),
                "accuracy": var(("update",), r["acc_curve"], "1", f"task metric of the training batch ({metric})"),
                "eval_loss": var(("eval_update",), r["eval_loss"], "1", "task loss on the held-out batch"),
                "eval_accuracy": var(("eval_update",), r["eval_acc"], "1", f"task metric on the held-out batch ({metric})"),
                "lambda_before": var(("condition", "exponent"), r["lam_before"], "1/tau", "Lyapunov exponent before training"),
                "lambda_after": var(("condition", "exponent"), r["lam_after"], "1/tau", "Lyapunov exponent after training"),
                "lambda_before_sem": var(("condition", "exponent"), r["sem_before"], "1/tau",
                                         "standard error of lambda_before (segment means)"),
                "lambda_after_sem": var(("condition", "exponent"), r["sem_after"], "1/tau",
                                        "standard error of lambda_after (segment means)"),
                "grad_cosine": var(("cosine_update",), r["cosines"], "1",
                                   "cosine between the rule's and BPTT's recurrent-weight gradient on the same batch"),
                "weight_change": var((), r["weight_change"], "1", "||W - W0||_F / ||W0||_F"),
                "input_weight_change": var((), r["input_change"], "1", "||U - U0||_F / ||U0||_F"),
                "final_loss": var((), r["final_loss"], "1", "task loss on the held-out batch after training"),
                "final_accuracy": var((), r["final_acc"], "1", f"task metric on the held-out batch after training ({metric})"),
                "test_loss": var((), r["test_loss"], "1", f"task loss on {cfg.test_batch} fresh test trials after training"),
                "test_accuracy": var((), r["test_acc"], "1",
                                     f"task metric on {cfg.test_batch} fresh test trials after training ({metric})"),
                "eval_accuracy_best": var((), r["best_acc"], "1", "best task metric of the monitoring batch"),
                "eval_accuracy_last": var((), r["last_acc"], "1", "task metric of the monitoring batch after training"),
                "updates_to_criterion": var((), r["to_criterion"], "1",
                                            f"updates before the monitoring metric first reached {CRITERION:g} x the ceiling (NaN: never)"),
                "status": status,
                "wall_time": var((), wall, "s", "wall-clock time of the run (of the whole stack)"),
            },
            coords={
                "update": ("update", np.arange(int(cfg.updates)), {"long_name": "training update (0-based)"}),
                "eval_update": ("eval_update", np.array(r["eval_at"]), {"long_name": "updates done before the evaluation"}),
                "cosine_update": ("cosine_update", np.array(r["cos_at"], dtype=np.int64),
                                  {"long_name": "update at which the gradient cosine was taken"}),
                "exponent": ("exponent", np.arange(1, self.k + 1), {"long_name": "exponent index (1 = largest)"}),
                "condition": ("condition", np.array(cfg.conditions, dtype=object), {"long_name": CONDITION_LONG_NAME}),
            },
        )
        if cfg.stacked:
            ds = ds.assign_coords(
                gain=("member", np.asarray(cfg.gains, float), {"units": "1", "long_name": "initial gain g"}),
                seed=("member", np.asarray(cfg.seeds, np.int64), {"long_name": "master seed"}),
            )
        params = self.members[0]
        # the run's options live once, as JSON in ``config``; the records below describe its objects
        hook = "" if self.user_hook is None else getattr(self.user_hook, "__name__", type(self.user_hook).__name__)
        attrs: dict[str, Any] = {"config": cfg.to_json(), "on_update": hook}
        attrs.update({f"network_{k}": v for k, v in asdict(params).items() if not (cfg.stacked and k in ("gain", "seed"))})
        attrs.update(self.task.to_attrs())
        attrs.update({f"rule_{f.name}": _attr(getattr(self.rule, f.name)) for f in fields(self.rule)})
        if not cfg.stacked:
            attrs.update({f"seed_{k}": v for k, v in self.streams[0].items()})
        attrs.update({f"lyapunov_{k}": float(v) for k, v in self.settings.items()})
        attrs.update({
            "lyapunov_alpha": float(getattr(params, "alpha", float("nan"))),
            "lyapunov_condition": ", ".join(cfg.conditions) if self.k else "not measured",
            "chance": r["chance"], "ceiling": r["ceiling"], "criterion": CRITERION * r["ceiling"],
            "status_message": take(np.array(r["message"], dtype=object)) if not cfg.stacked else "; ".join(
                f"member {s}: {m}" for s, m in enumerate(r["message"]) if m),
            **({"status_messages": list(r["message"])} if cfg.stacked else {}),
            **provenance_attrs(),
        })
        ds = ds.assign(weights_dataset(r["initial"], r["final"], params).data_vars)
        if self.hook is not None:
            fl = self.hook.to_dataset(params.alpha, stacked=cfg.stacked)
            ds = ds.assign(fl.data_vars)
            attrs.update(fl.attrs)
        ds.attrs = {k: _attr(v) for k, v in attrs.items()}
        return ds


def _attr(v: Any) -> Any:
    """An attrs-friendly value: str, int, float or a list of those."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (tuple, list)):
        return [_attr(x) for x in v]
    if v is None:
        return ""
    if isinstance(v, (int, float, str, np.integer, np.floating)):
        return v
    return str(v)


class _CallableModule(types.ModuleType):
    """This module, callable: ``biorules.train(...)`` is :func:`train`, and its result records the
    call as its ``command`` attr (:func:`biorules.record_call`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> xr.Dataset:
        from biorules import call_text, record_call

        return record_call(train(*args, **kwargs), call_text("biorules.train", args, kwargs))


sys.modules[__name__].__class__ = _CallableModule
