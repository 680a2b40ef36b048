"""Train one network on one task with one learning rule; the result is an xarray Dataset (spec §3, §6).

Per update u = 0..n−1: ``on_update(u, model)`` (optional hook, e.g. flossing steps before the
update), draw a training batch, let the rule compute gradients (summed over the trial, averaged
over the batch), and take one optimiser step (Adam, lr 10⁻³, β = (0.9, 0.999) by default, no
clipping). Recorded:

- ``loss``, ``accuracy`` (update): the task loss and metric of each training batch;
- ``eval_loss``, ``eval_accuracy`` (eval_update): on a fixed held-out batch every ``eval_every``;
- ``final_loss``, ``final_accuracy``: on that held-out batch after training;
- ``lambda_before``, ``lambda_after`` (exponent): the top-k autonomous Lyapunov spectrum per τ of
  the rate network before and after training (x = 0, b kept; :func:`biorules.lyapunov.spectrum`);
- ``grad_cosine`` (cosine_update): cos(∇W_rule, ∇W_BPTT) on the same batch every ``cosine_every``;
- ``weight_change`` = ‖W − W₀‖_F/‖W₀‖_F, ``input_weight_change`` likewise for U;
- ``status`` (CF flags of :data:`biorules.store.STATUS`): ``done``, or ``diverged`` when a loss, gradient or weight becomes NaN/inf; the run then
  stops and its curves are NaN-padded, never an exception;
- ``wall_time`` [s].

Seeds: one master seed spawns independent streams for the network, the feedback matrix B, the
training batches, the evaluation batch and the Lyapunov Q₀/initial state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import xarray as xr

from biorules.errors import InputError
from biorules.network import NetworkParams
from biorules.tasks import TASKS, make_task

MODELS = ("rate", "lif")
OPTIMIZERS = ("adam", "sgd")
DEFAULT_LYAPUNOV = {"transient_tau": 50.0, "ons_transient_tau": 10.0, "steps_tau": 200.0}
"""Quick spectrum settings (in τ) for before/after training: transient, Q warm-up, accumulation."""


def seeds(seed: int) -> dict[str, int]:
    """Independent integer seeds for ``network``, ``feedback``, ``train``, ``eval``, ``lyapunov``."""
    names = ("network", "feedback", "train", "eval", "lyapunov")
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {n: int(c.generate_state(1, dtype=np.uint32)[0]) for n, c in zip(names, children, strict=True)}


def rules_for(model: str) -> tuple[str, ...]:
    """Names of the rules defined for ``model`` (``rate`` or ``lif``)."""
    if model == "rate":
        from biorules.rules import RULE_NAMES

        return RULE_NAMES
    if model == "lif":
        from biorules.spiking_rules import LIF_RULES

        return tuple(LIF_RULES)
    raise InputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def check_choice(task: str, rule: str, model: str = "rate") -> None:
    """Raise InputError (one line) for an unknown task, model, or a rule not defined for ``model``."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    names = rules_for(model)
    if rule not in names:
        from biorules.rules import RULE_NAMES

        if rule in RULE_NAMES:
            raise InputError(f"rule {rule!r} is not defined for model {model!r}; it has {', '.join(names)}")
        raise InputError(f"unknown rule {rule!r}; choose one of {', '.join(RULE_NAMES)}")


def _build(model: str, params: Any, task: Any, rule: str, rule_options: dict[str, Any], net_seed: int,
           fb_seed: int, dtype: Any) -> tuple[Any, Any, Any]:
    """The network module, its (completed) params, and the rule object."""
    if model == "rate":
        from biorules.network import RateRNN
        from biorules.rules import get_rule

        params = replace(params or NetworkParams(), n_in=task.n_in, n_out=task.n_out, seed=net_seed)
        net = RateRNN(params, dtype=dtype)
        opts = dict(rule_options)
        if rule in ("eprop-random", "rflo"):
            opts.setdefault("feedback_seed", fb_seed)
        return net, params, get_rule(rule, **opts)
    from biorules.spiking import LIFNetwork, LIFParams
    from biorules.spiking_rules import LIF_RULES

    if params is None:
        params = LIFParams()
    elif isinstance(params, NetworkParams):  # shared options: size and gain
        params = LIFParams(n=params.n, gain=params.gain)
    params = replace(params, n_in=task.n_in, n_out=task.n_out, seed=net_seed, dt=task.dt)
    opts = dict(rule_options)
    if rule == "eprop-random":
        opts.setdefault("feedback_seed", fb_seed)
    return LIFNetwork(params, dtype=dtype), params, LIF_RULES[rule](**opts)


def _finite(*tensors: Any) -> bool:
    import torch

    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _outputs(rule: Any, net: Any, x: Any) -> Any:
    """Outputs of the network a rule trains (its own form when it has one)."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(x, dtype=net.W.dtype)
        return rule.forward(net, x) if hasattr(rule, "forward") else net(x)[0]


def _spectrum(W: np.ndarray, b: np.ndarray, params: NetworkParams, k: int, seed: int, settings: dict) -> np.ndarray:
    from biorules.lyapunov import spectrum

    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        return np.full(k, np.nan)
    a = params.alpha
    lam = spectrum(W, alpha=a, nonlinearity=params.nonlinearity, n_exponents=k, b=b, seed=seed, unit="tau",
                   steps=int(round(settings["steps_tau"] / a)), transient=int(round(settings["transient_tau"] / a)),
                   ons_transient=int(round(settings["ons_transient_tau"] / a)))
    return np.asarray(lam.values, dtype=np.float64)


def _enforce_dale(net: Any, sign: Any) -> None:
    """Set to 0 every W entry whose sign flipped away from its column's (spec §1, ``dale``)."""
    import torch

    with torch.no_grad():
        net.W.mul_((net.W * sign >= 0).to(net.W.dtype))


def train(
    task: str = "2af",
    rule: str = "eprop",
    params: Any = None,
    *,
    model: str = "rate",
    optimizer: str = "adam",
    lr: float = 1e-3,
    batch: int = 32,
    updates: int = 2000,
    seed: int = 0,
    n_exponents: int = 10,
    eval_every: int = 50,
    eval_batch: int = 512,
    cosine_every: int = 100,
    task_options: dict[str, Any] | None = None,
    rule_options: dict[str, Any] | None = None,
    lyapunov: dict[str, float] | None = None,
    enforce_dale: bool = True,
    dtype: str = "float32",
    on_update: Callable[[int, Any], None] | None = None,
    floss: Any = None,
    floss_schedule: Any = None,
    floss_driven: bool = True,
    progress: bool = False,
) -> xr.Dataset:
    """Train ``rule`` on ``task`` and return the run as a Dataset (see the module docstring).

    Parameters
    ----------
    task, rule : names from :data:`biorules.tasks.TASKS` and the rules of ``model``.
    params : :class:`biorules.network.NetworkParams` (rate) or ``LIFParams`` (lif); n_in, n_out
        come from the task and the seed from the master ``seed``'s network stream.
    model : ``rate`` or ``lif`` (spiking: the LIF step is the task's dt, 1 ms unless
        ``task_options["dt"]`` says otherwise; no Lyapunov spectrum, ``exponent`` is empty).
    optimizer, lr : ``adam`` (β = (0.9, 0.999)) or ``sgd``, and its learning rate.
    batch, updates : trials per update and number of updates.
    n_exponents : k, top exponents before/after training (capped at N; 0 skips the spectra).
    eval_every, eval_batch : held-out evaluation period [updates] and size [trials].
    cosine_every : every this many updates, the cosine between the rule's ∇W and BPTT's on the
        same batch (rate model; 0 disables; spec §6).
    task_options, rule_options : passed to ``make_task`` and the rule (e.g. ``{"window": 10}``).
    lyapunov : spectrum settings in τ, overriding :data:`DEFAULT_LYAPUNOV`.
    enforce_dale : with the ``dale`` init, zero entries whose sign flips after each update.
    dtype : ``float32`` or ``float64``.
    on_update : ``on_update(u, model)`` is called before update u (u = 0..updates−1), e.g. to run
        flossing steps with their own optimiser; it may change the parameters in place.
    floss, floss_schedule, floss_driven : a :class:`biorules.flossing.FlossConfig` flosses the
        rate network around training on a :class:`~biorules.flossing.FlossSchedule` (default
        E_p = 50, E_f = 10, E_i = 50, N_i = 2), its windows driven by the task's trials (or
        autonomous); the record lands in ``floss_loss``/``floss_lambda_hat`` along ``floss_step``.
    progress : draw a tqdm bar.
    """
    import torch

    from biorules.provenance import provenance_attrs

    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    check_choice(task, rule, model)
    if int(updates) < 1:
        raise InputError(f"updates must be a positive number, got {updates}")
    if int(batch) < 1 or int(eval_batch) < 1 or int(eval_every) < 1 or int(cosine_every) < 0:
        raise InputError("batch, eval_batch and eval_every must be positive, cosine_every non-negative")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"lr must be a positive number, got {lr}")
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    hook = None
    if floss is not None:
        if model != "rate":
            raise InputError("flossing is defined for rate networks only; use --model rate")
        from biorules.flossing import FlossHook, FlossSchedule

        hook = FlossHook(floss, floss_schedule or FlossSchedule(), driven=floss_driven)
        user_hook = on_update

        def on_update(u: int, net: Any) -> None:
            hook(u, net)
            if user_hook is not None:
                user_hook(u, net)

        on_update.__name__ = hook.__name__
    settings = {**DEFAULT_LYAPUNOV, **(lyapunov or {})}
    task_options = {k: v for k, v in (task_options or {}).items() if v is not None}
    rule_options = {k: v for k, v in (rule_options or {}).items() if v is not None}
    s = seeds(seed)

    t0 = time.perf_counter()
    if model == "lif":
        from biorules.spiking import LIFParams

        lif_dt = params.dt if isinstance(params, LIFParams) else LIFParams.dt
        task_options.setdefault("dt", lif_dt)
    the_task = make_task(task, **task_options)
    if hook is not None:
        hook.task = the_task if hook.driven else None
    torch_dtype = getattr(torch, dtype)
    net, params, the_rule = _build(model, params, the_task, rule, rule_options, s["network"], s["feedback"], torch_dtype)
    n = params.n
    k = min(int(n_exponents), n) if model == "rate" else 0

    W0 = net.W.detach().clone()
    U0 = net.U.detach().clone()
    lam_before = (_spectrum(W0.double().numpy(), net.b.detach().double().numpy(), params, k, s["lyapunov"], settings)
                  if k else np.zeros(0))
    if net.W.dtype != torch_dtype:
        raise InputError("internal: network dtype mismatch")
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt_kwargs = {"betas": (0.9, 0.999)} if optimizer == "adam" else {}
    opt = opt_cls(net.parameters(), lr=lr, **opt_kwargs)
    dale_sign = torch.sign(W0) if (model == "rate" and params.init == "dale" and enforce_dale) else None

    n_up = int(updates)
    eval_at = list(range(0, n_up, int(eval_every))) + [n_up]
    eval_data = the_task.batch(int(eval_batch), s["eval"])
    train_rng = np.random.default_rng(s["train"])
    loss_curve = np.full(n_up, np.nan)
    acc_curve = np.full(n_up, np.nan)
    eval_loss = np.full(len(eval_at), np.nan)
    eval_acc = np.full(len(eval_at), np.nan)
    status, message = "done", ""
    cos_at = list(range(0, n_up, int(cosine_every))) if (cosine_every and model == "rate") else []
    cosines = np.full(len(cos_at), np.nan)
    reference = None
    if cos_at:
        from biorules.rules import get_rule

        reference = get_rule("bptt", form=getattr(the_rule, "form", "a"))

    def evaluate() -> tuple[float, float]:
        y = _outputs(the_rule, net, eval_data.x)
        return float(the_task.loss(y, eval_data)), float(the_task.accuracy(y, eval_data))

    from tqdm.auto import tqdm

    bar = tqdm(total=n_up, disable=not progress, desc=f"{task} {rule}", unit="update", leave=False)
    try:
        for u in range(n_up):
            if u in eval_at:
                eval_loss[eval_at.index(u)], eval_acc[eval_at.index(u)] = evaluate()
            if on_update is not None:
                on_update(u, net)
            data = the_task.batch(int(batch), int(train_rng.integers(2**63 - 1)))
            res = the_rule.gradients(net, data, the_task)
            if not (_finite(res.loss, *res.grads.values())):
                status, message = "diverged", f"non-finite loss or gradient at update {u}"
                break
            if u in cos_at:
                g, g_ref = res.grads["W"], reference.gradients(net, data, the_task).grads["W"]
                cosines[cos_at.index(u)] = float((g * g_ref).sum() / (g.norm() * g_ref.norm()))
            loss_curve[u] = float(res.loss)
            acc_curve[u] = float(the_task.accuracy(res.y, data))
            opt.zero_grad(set_to_none=True)
            for name, p in net.named_parameters():
                p.grad = res.grads[name].to(p.dtype)
            opt.step()
            if dale_sign is not None:
                _enforce_dale(net, dale_sign)
            if not _finite(*net.parameters()):
                status, message = "diverged", f"non-finite weights after update {u}"
                break
            if progress and (u % 10 == 0 or u == n_up - 1):
                bar.set_postfix(loss=f"{loss_curve[u]:.3f}", acc=f"{acc_curve[u]:.2f}")
            bar.update(1)
    finally:
        bar.close()

    if status == "done":
        final_loss, final_acc = evaluate()
        eval_loss[-1], eval_acc[-1] = final_loss, final_acc
        if not math.isfinite(final_loss):
            status, message = "diverged", "non-finite evaluation loss after training"
    else:
        final_loss = final_acc = float("nan")
    W, U = net.W.detach(), net.U.detach()
    lam_after = (_spectrum(W.double().numpy(), net.b.detach().double().numpy(), params, k, s["lyapunov"], settings)
                 if k else np.zeros(0))
    weight_change = float((W - W0).norm() / W0.norm()) if status == "done" else float("nan")
    input_change = float((U - U0).norm() / U0.norm()) if status == "done" else float("nan")
    wall = time.perf_counter() - t0

    metric = "R^2" if task == "sine" else "fraction correct"
    ds = xr.Dataset(
        {
            "loss": ("update", loss_curve, {"units": "1", "long_name": "task loss of the training batch"}),
            "accuracy": ("update", acc_curve, {"units": "1", "long_name": f"task metric of the training batch ({metric})"}),
            "eval_loss": ("eval_update", eval_loss, {"units": "1", "long_name": "task loss on the held-out batch"}),
            "eval_accuracy": ("eval_update", eval_acc, {"units": "1", "long_name": f"task metric on the held-out batch ({metric})"}),
            "lambda_before": ("exponent", lam_before, {"units": "1/tau", "long_name": "Lyapunov exponent before training (autonomous)"}),
            "lambda_after": ("exponent", lam_after, {"units": "1/tau", "long_name": "Lyapunov exponent after training (autonomous)"}),
            "grad_cosine": ("cosine_update", cosines, {"units": "1", "long_name": "cosine between the rule's and BPTT's recurrent-weight gradient on the same batch"}),
            "weight_change": ((), weight_change, {"units": "1", "long_name": "||W - W0||_F / ||W0||_F"}),
            "input_weight_change": ((), input_change, {"units": "1", "long_name": "||U - U0||_F / ||U0||_F"}),
            "final_loss": ((), final_loss, {"units": "1", "long_name": "task loss on the held-out batch after training"}),
            "final_accuracy": ((), final_acc, {"units": "1", "long_name": f"task metric on the held-out batch after training ({metric})"}),
            "status": _status(status),
            "wall_time": ((), wall, {"units": "s", "long_name": "wall-clock time of the run"}),
        },
        coords={
            "update": ("update", np.arange(n_up), {"long_name": "training update (0-based)"}),
            "eval_update": ("eval_update", np.array(eval_at), {"long_name": "updates done before the evaluation"}),
            "cosine_update": ("cosine_update", np.array(cos_at, dtype=np.int64), {"long_name": "update at which the gradient cosine was taken"}),
            "exponent": ("exponent", np.arange(1, k + 1), {"long_name": "exponent index (1 = largest)"}),
        },
    )
    config = {
        "task": task, "rule": rule, "model": model, "optimizer": optimizer, "lr": float(lr),
        "batch": int(batch), "updates": n_up, "seed": int(seed), "n_exponents": k,
        "eval_every": int(eval_every), "eval_batch": int(eval_batch), "cosine_every": int(cosine_every), "enforce_dale": int(enforce_dale),
        "dtype": dtype, "on_update": "" if on_update is None else getattr(on_update, "__name__", type(on_update).__name__),
    }
    attrs: dict[str, Any] = {f"config_{k_}": v for k_, v in config.items()}
    attrs.update({f"network_{k_}": v for k_, v in asdict(params).items()})
    attrs.update(the_task.to_attrs())
    attrs.update({f"rule_{f}": _attr(getattr(the_rule, f)) for f in _rule_fields(the_rule)})
    attrs.update({f"seed_{k_}": v for k_, v in s.items()})
    attrs.update({f"lyapunov_{k_}": float(v) for k_, v in settings.items()})
    attrs.update({
        "lyapunov_alpha": float(getattr(params, "alpha", float("nan"))),
        "lyapunov_condition": "autonomous (x = 0, b kept)" if model == "rate" else "not defined for lif",
        "status_message": message,
        **provenance_attrs(),
    })
    if hook is not None:
        fl = hook.to_dataset(params.alpha)
        ds = ds.assign(fl.data_vars)
        attrs.update(fl.attrs)
    ds.attrs = {k_: _attr(v) for k_, v in attrs.items()}
    return ds


def _status(status: str) -> xr.Variable:
    """The run's ``status`` as the stores' CF flag code (0 pending, 1 done, 2 diverged, 3 failed)."""
    from biorules.store import STATUS, status_variable

    var = status_variable((), ())
    var.values[()] = STATUS[status]
    var.attrs["long_name"] = "run status"
    return var


def _rule_fields(rule: Any) -> list[str]:
    import dataclasses

    if dataclasses.is_dataclass(rule):
        return [f.name for f in dataclasses.fields(rule)]
    return [k for k in ("name", "models", "feedback", "feedback_seed") if hasattr(rule, k)]


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
