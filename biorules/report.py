"""Claims with statistics, figures and a text summary drawn from gain-study stores (by label, never position).

Every claim is a mean over seeds of a per-seed difference d_s with a paired bootstrap 95 % CI:
resample the seeds with replacement (one draw for both arms, so whatever a seed shares across arms
cancels), take the mean of d over the draw, and read percentiles of 10 000 such means. The
percentiles are expanded for few seeds (:func:`bootstrap_mean`) so that the CI covers 95 % from
about 5 seeds on; below that no bootstrap CI can (it never reaches past the extreme seeds), and the
summary says so. Only cells with status done count; a seed missing in either arm drops out of the
pair; with fewer than two pairs the CI is NaN. A claim is ``supported`` when its CI excludes 0 in
the claimed direction, ``not supported`` when it excludes 0 the other way, ``inconclusive``
otherwise, ``n/a`` without data.

(a) per rule: d_s = A(g_min, s) − A(ĝ_−s, s), ĝ_−s the gain of highest mean accuracy on the *other*
    seeds (:func:`vs_best_bootstrap`). Picking the best gain on the seed it is compared on would make
    d negative when no gain differs; leaving the seed out removes that bias, and re-picking inside
    every resample keeps the CI honest. The same for updates to criterion, where a seed that never
    reaches the criterion counts as ``updates + 1`` (a lower bound: the difference is conservative).
(b) per condition and rule: the spread σ_s = std_g λ_max(g, s) after minus before (negative:
    training pulls λ_max together), and |Δλ_max|(g_min, s) − mean_{g > g_min} |Δλ_max|(g, s).
(c) per rule, flossing mode and gain: flossed minus unflossed accuracy, with the seeds hurt
    (d < −0.05) and helped (d > +0.05) counted.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zlib
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from biorules.errors import InputError

DONE = 1
"""``status`` code of a finished cell (``biorules.store.STATUS["done"]``)."""

FLOSS_MARGIN = 0.05
"""A flossed seed is hurt (helped) when its accuracy falls (rises) by more than this."""

CONDITIONS_DEFAULT = ("autonomous",)
"""The condition of stores whose spectra carry no ``condition`` dim (measured autonomously)."""


@dataclass(frozen=True)
class Claim:
    """One answered question: the effect (mean over seeds of a per-seed difference) with its CI."""

    id: str
    """Question letter: ``a`` (accuracy vs gain), ``b`` (λ_max), ``c`` (flossing)."""
    task: str
    measure: str
    """What is compared: test_accuracy, updates_to_criterion, lambda_spread, abs_delta_lambda, floss_effect."""
    question: str
    rule: str
    floss: str
    condition: str | None
    gains: tuple[float, ...]
    """The gains compared (first: the smallest gain, or the gain of a flossing claim)."""
    direction: int
    """Sign the claim expects of the effect (−1: below 0, +1: above 0)."""
    effect: float
    """Mean over seeds of the per-seed difference, in ``units``."""
    ci_low: float
    ci_high: float
    """Bounds of the paired bootstrap 95 % CI of ``effect`` (NaN with fewer than two pairs)."""
    n_pairs: int
    """Seeds present in both arms."""
    units: str = "1"
    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    """Numbers behind the effect (the two arms' means)."""
    note: str = ""

    @property
    def verdict(self) -> str:
        """``supported``, ``not supported``, ``inconclusive`` or ``n/a``, from the CI and direction.

        A comparison with the best gain (a) is ``not supported`` when the smallest gain is itself the
        best: the difference is then 0 by construction, and says the smallest gain is not worse.
        """
        if self.n_pairs == 0 or not math.isfinite(self.effect):
            return "n/a"
        if self.id == "a" and len(self.gains) == 2 and self.gains[0] == self.gains[1]:
            return "not supported"
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return "inconclusive"
        lo, hi = self.ci_low * self.direction, self.ci_high * self.direction
        lo, hi = min(lo, hi), max(lo, hi)
        if lo > 0:
            return "supported"
        if hi < 0:
            return "not supported"
        return "inconclusive"

    def to_dict(self) -> dict[str, Any]:
        """The claim as strict-JSON-ready values (NaN becomes None), its verdict included."""
        return _json_ready({**asdict(self), "verdict": self.verdict})


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def claims_frame(claims: Iterable[Claim]):
    """The claims as a pandas DataFrame, one row each (counts and values as columns)."""
    import pandas as pd

    rows = []
    for c in claims:
        row = {k: v for k, v in asdict(c).items() if k not in ("counts", "values")}
        row["gains"] = ", ".join(f"{g:g}" for g in c.gains)
        row["verdict"] = c.verdict
        rows.append({**row, **c.counts, **c.values})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- statistics

def bootstrap_mean(d: np.ndarray, rng: np.random.Generator, n_boot: int = 10000,
                   expand: bool = True) -> tuple[float, float, float, int]:
    """Mean of the finite entries of ``d`` and its percentile 95 % CI over ``n_boot`` resamples.

    With few seeds a plain percentile CI is too narrow (it covers about 85 % at n = 8, since it
    scales with the sample sd without n − 1 and uses z, not t). ``expand`` reads the percentiles at
    α' = 2 Φ(−√(n/(n−1)) t_{n−1, 0.975}) instead of α = 0.05 (Hesterberg's expanded percentile
    interval), which restores 95 % for normal data and tends to the plain CI as n grows.
    Returns (mean, low, high, n); low and high are NaN with fewer than two entries.
    """
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n < 2:
        return float(d.mean()), math.nan, math.nan, n
    alpha = _expanded_alpha(n) if expand else 0.05
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * alpha, 100 - 50 * alpha])
    return float(d.mean()), float(lo), float(hi), n


def _expanded_alpha(n: int, level: float = 0.95) -> float:
    """α' = 2 Φ(−√(n/(n−1)) t_{n−1, (1+level)/2}): the tail mass that makes a percentile CI as wide as t's."""
    from scipy.special import ndtr, stdtrit

    return float(2 * ndtr(-math.sqrt(n / (n - 1)) * stdtrit(n - 1, (1 + level) / 2)))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 10000,
                     expand: bool = True) -> tuple[float, float, float, int]:
    """Mean of a − b over the seeds present in both arms, CI from resampling those seeds.

    One draw of seed indices serves both arms: mean(a[i]) − mean(b[i]) = mean((a − b)[i]).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bootstrap_mean(np.where(np.isfinite(a) & np.isfinite(b), a - b, np.nan), rng, n_boot, expand)


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator of its own per claim, so adding a claim never changes another's CI."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


# ----------------------------------------------------------------------------------------- the store

@dataclass(frozen=True)
class StudyInfo:
    """What the report says about a store: its configuration, reference levels and cell counts."""

    task: str
    n: int | None
    updates: int | None
    seeds: int
    chance: float
    ceiling: float
    criterion: float
    metric: str
    """The accuracy variable used: ``test_accuracy`` (final test) or ``final_accuracy`` (older stores)."""
    cells: dict[str, int]
    notes: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        n = "?" if self.n is None else self.n
        updates = "?" if self.updates is None else self.updates
        return f"{self.task}, N = {n}, {updates} updates, {self.seeds} seeds"


def _config(ds: xr.Dataset) -> dict[str, Any]:
    try:
        config = json.loads(ds.attrs.get("config", "{}"))
    except (TypeError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def _float_attr(ds: xr.Dataset, name: str) -> float | None:
    """A per-task scalar variable ``name`` (stores with a ``task`` dim), else the root attr, else None."""
    try:
        if name in ds.data_vars and ds[name].ndim == 0:
            return float(ds[name].values)
        return float(ds.attrs[name])
    except (KeyError, TypeError, ValueError):
        return None


def tasks(ds: xr.Dataset) -> list[str]:
    """The tasks of a sweep store: its ``task`` coordinate, else the one task of its configuration."""
    if "task" in ds.dims:
        return [str(t) for t in ds["task"].values]
    config = _config(ds)
    task = config.get("task") or (config.get("tasks") or [None])[0]
    return [str(task or str(ds.attrs.get("title", "?")).removeprefix("gain study: "))]


def select_task(ds: xr.Dataset, task: str | None = None) -> xr.Dataset:
    """The part of ``ds`` for one task, without a ``task`` dim (a store of one task needs no name)."""
    if "task" not in ds.dims:
        return ds
    names = tasks(ds)
    if task is None:
        if len(names) > 1:
            raise InputError(f"the store holds tasks {', '.join(names)}; choose one")
        task = names[0]
    if task not in names:
        raise InputError(f"no task {task!r} in the store (it holds {', '.join(names)})")
    return ds.sel(task=task)


def study_info(ds: xr.Dataset, task: str | None = None) -> StudyInfo:
    """Task, N, updates, seeds, chance, ceiling and criterion of a sweep, with what had to be assumed."""
    _check(ds)
    ds = select_task(ds, task)
    config, notes = _config(ds), []
    task = str(ds["task"].values) if "task" in ds.coords else tasks(ds)[0]
    chance = _float_attr(ds, "chance")
    if chance is None:
        chance = 0.5
        notes.append("no chance level in the store; 0.5 assumed")
    ceiling = _float_attr(ds, "ceiling")
    if ceiling is None:
        ceiling = math.nan
        notes.append("no ceiling in the store")
    criterion = _float_attr(ds, "criterion")
    if criterion is None:
        criterion = 0.9 * ceiling
        if math.isnan(criterion):
            notes.append("no criterion in the store: seeds that learned are not counted")
    metric = "test_accuracy" if "test_accuracy" in ds else "final_accuracy"
    if metric == "final_accuracy":
        notes.append("no final test in the store: accuracy is final_accuracy (monitoring batch)")
    if "status" in ds:
        status = ds["status"].values
        cells = {name: int((status == code).sum()) for name, code in
                 (("done", 1), ("diverged", 2), ("failed", 3), ("pending", 0))}
    else:
        cells = {"done": int(np.prod([ds.sizes[d] for d in _cell_dims(ds)]))}
        notes.append("no status in the store: every cell counted as done")
    n, updates = config.get("n"), config.get("updates")
    return StudyInfo(task=str(task), n=None if n is None else int(n), updates=None if updates is None else int(updates),
                     seeds=int(ds.sizes["seed"]), chance=chance, ceiling=ceiling, criterion=criterion, metric=metric,
                     cells=cells, notes=tuple(notes))


def _cell_dims(ds: xr.Dataset) -> tuple[str, ...]:
    return tuple(d for d in ("gain", "rule", "floss", "seed") if d in ds.dims)


def _check(ds: xr.Dataset) -> None:
    """Refuse anything that is not a sweep store, with one line naming what is missing."""
    missing = [d for d in ("gain", "rule", "seed") if d not in ds.dims]
    if missing:
        raise InputError(f"not a sweep store: no {', '.join(missing)} dimension")
    if "test_accuracy" not in ds and "final_accuracy" not in ds:
        raise InputError("not a sweep store: neither test_accuracy nor final_accuracy")


def prepare(ds: xr.Dataset, task: str | None = None) -> xr.Dataset:
    """One task of the store in the one shape the report reads, loaded, every cell not done NaN.

    Adds a ``floss`` dim ("none") and a ``condition`` dim ("autonomous") where older stores lack
    them, and names the accuracy ``acc`` (test_accuracy, or final_accuracy).
    """
    _check(ds)
    ds = select_task(ds, task)
    metric = "test_accuracy" if "test_accuracy" in ds else "final_accuracy"
    keep = [v for v in (metric, "updates_to_criterion", "lambda_before", "lambda_after", "eval_accuracy",
                        "accuracy", "status") if v in ds]
    out = ds[keep].rename({metric: "acc"}).load()
    if "floss" not in out.dims:
        out = out.expand_dims(floss=["none"])
    for name in ("lambda_before", "lambda_after"):
        if name in out and "condition" not in out[name].dims:
            out[name] = out[name].expand_dims(condition=list(CONDITIONS_DEFAULT))
    done = out["status"] == DONE if "status" in out else xr.ones_like(out["acc"], dtype=bool)
    for name in list(out.data_vars):
        if name != "status":
            out[name] = out[name].astype(float).where(done)
    return out


def _seeds(da: xr.DataArray) -> np.ndarray:
    """Values of a per-seed DataArray as a plain float vector over ``seed``."""
    return da.transpose("seed").values.astype(float)


def _base_floss(ds: xr.Dataset) -> list[str]:
    values = [str(f) for f in ds["floss"].values]
    return ["none"] if "none" in values else values


def _gains(ds: xr.Dataset) -> list[float]:
    return sorted(float(g) for g in ds["gain"].values)


# ----------------------------------------------------------------------------------------- claims

@contextmanager
def _quiet_nanmean():
    """Silence numpy's 'mean of empty slice' warning: an all-NaN row is simply NaN here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _picks(score: np.ndarray, c: np.ndarray) -> np.ndarray:
    """For seed weights ``c`` (B, S), the gain index best for each seed s on the *other* seeds.

    ``score`` (G, S) is the accuracy; the mean at gain g without seed s is
    (Σ_t c_t x_gt − c_s x_gs) / (Σ_t c_t − c_s) over finite entries. Where no other seed has data
    (all draws of one seed) the mean over all seeds decides. Returns (B, S) gain indices.
    """
    fin = np.isfinite(score)
    x = np.where(fin, score, 0.0)
    total, count = c @ x.T, c @ fin.T.astype(float)  # (B, G)
    num = total[..., None] - c[:, None, :] * x[None]
    den = count[..., None] - c[:, None, :] * fin[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(den > 0, num / den, -np.inf)
        full = np.where(count > 0, total / count, -np.inf)
    lonely = ~np.isfinite(mean).any(axis=1)  # (B, S)
    mean = np.where(lonely[:, None, :], full[..., None], mean)
    return mean.argmax(axis=1)


def _vs_best(score: np.ndarray, c: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted mean over seeds of d_s = values(g_min, s) − values(ĝ_−s, s), one per row of ``c``."""
    picks = _picks(score, c)
    d = values[0][None, :] - values[picks, np.arange(values.shape[1])[None, :]]
    w = np.where(np.isfinite(d), c, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * np.where(np.isfinite(d), d, 0.0)).sum(axis=1) / w.sum(axis=1)


def vs_best_bootstrap(score: np.ndarray, values: np.ndarray, rng: np.random.Generator, n_boot: int = 10000,
                      expand: bool = True) -> tuple[float, float, float, int]:
    """Mean over seeds of values(g_min, s) − values(ĝ_−s, s), ĝ_−s the gain best on the other seeds.

    ``score`` and ``values`` are (gain, seed) arrays, the smallest gain first. The best gain is
    picked again inside every bootstrap resample (on the resampled seeds other than s), so the CI
    carries the uncertainty of the pick and the dependence it creates between seeds; a percentile
    CI of the d_s alone would be too narrow. Percentiles expanded as in :func:`bootstrap_mean`.
    """
    score, values = np.asarray(score, float), np.asarray(values, float)
    n_seeds = score.shape[1]
    eff = float(_vs_best(score, np.ones((1, n_seeds)), values)[0])
    n = int(np.isfinite(values[0] - values[_picks(score, np.ones((1, n_seeds)))[0], np.arange(n_seeds)]).sum())
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n < 2:
        return eff, math.nan, math.nan, n
    present = np.flatnonzero(np.isfinite(score).any(axis=0))
    draws = present[rng.integers(0, present.size, size=(n_boot, present.size))]
    c = np.zeros((n_boot, n_seeds))
    np.add.at(c, (np.arange(n_boot)[:, None], draws), 1.0)
    alpha = _expanded_alpha(n) if expand else 0.05
    boot = _vs_best(score, c, values)
    lo, hi = np.nanpercentile(boot, [50 * alpha, 100 - 50 * alpha])
    return eff, float(lo), float(hi), n


def _best_gain(score: np.ndarray, gains: list[float]) -> float:
    """The gain with the highest mean accuracy over all seeds."""
    with _quiet_nanmean():
        means = np.nanmean(score, axis=1)
    return gains[int(np.argmax(np.where(np.isfinite(means), means, -np.inf)))]


def _table(da: xr.DataArray, gains: list[float]) -> np.ndarray:
    return da.transpose("gain", "seed").sel(gain=gains).values.astype(float)


def _claims_a(ds: xr.Dataset, info: StudyInfo, n_boot: int, seed: int) -> list[Claim]:
    task = info.task
    gains, out = _gains(ds), []
    g0 = gains[0]
    for rule in ds["rule"].values:
        for floss in _base_floss(ds):
            rule, floss = str(rule), str(floss)
            acc = ds["acc"].sel(rule=rule, floss=floss)
            score = _table(acc, gains)
            best = _best_gain(score, gains)
            note = "the smallest gain is the best gain (highest mean accuracy)" if best == g0 else ""
            if len(gains) < 2:
                note = "one gain only"
            small = _seeds(acc.sel(gain=g0))
            eff, lo, hi, n = vs_best_bootstrap(score, score, _rng(seed, f"{task}/a/acc/{rule}/{floss}"), n_boot)
            if len(gains) < 2:
                eff, lo, hi, n = math.nan, math.nan, math.nan, 0
            at_best = _seeds(acc.sel(gain=best))
            counts = {"seeds_small": int(np.isfinite(small).sum()), "seeds_best": int(np.isfinite(at_best).sum())}
            if math.isfinite(info.criterion):
                counts |= {"learned_small": int((small >= info.criterion).sum()),
                           "learned_best": int((at_best >= info.criterion).sum())}
            out.append(Claim(
                id="a", task=task, measure="test_accuracy", rule=rule, floss=floss, condition=None, gains=(g0, best),
                question=f"Is {rule}'s test accuracy lower at the smallest gain than at the best gain?",
                direction=-1, effect=eff, ci_low=lo, ci_high=hi, n_pairs=n, counts=counts,
                values={"small": _nanmean(small), "best": _nanmean(at_best)}, note=note))
            out.append(_claim_updates(ds, info, rule, floss, gains, score, best, note, n_boot, seed))
    return out


def _claim_updates(ds, info, rule, floss, gains, score, best, note, n_boot, seed) -> Claim:
    g0 = gains[0]
    question = f"Does {rule} need more updates to reach the criterion at the smallest gain than at the best gain?"
    base = dict(id="a", task=info.task, measure="updates_to_criterion", rule=rule, floss=floss, condition=None, gains=(g0, best),
                question=question, direction=+1, units="updates")
    if "updates_to_criterion" not in ds or info.updates is None:
        return Claim(**base, effect=math.nan, ci_low=math.nan, ci_high=math.nan, n_pairs=0,
                     note="no updates_to_criterion in the store")
    acc = ds["acc"].sel(rule=rule, floss=floss)
    raw = ds["updates_to_criterion"].sel(rule=rule, floss=floss)
    # a done cell that never reached the criterion: NaN updates but a finite accuracy -> updates + 1
    upd = xr.where(np.isfinite(acc) & ~np.isfinite(raw), info.updates + 1.0, raw)
    small, at_best = _seeds(upd.sel(gain=g0)), _seeds(upd.sel(gain=best))
    eff, lo, hi, n = vs_best_bootstrap(score, _table(upd, gains), _rng(seed, f"{info.task}/a/upd/{rule}/{floss}"), n_boot)
    if len(gains) < 2:
        eff, lo, hi, n = math.nan, math.nan, math.nan, 0
    never = info.updates + 1.0
    counts = {"never_small": int((small == never).sum()), "never_best": int((at_best == never).sum()),
              "seeds_small": int(np.isfinite(small).sum()), "seeds_best": int(np.isfinite(at_best).sum())}
    return Claim(**base, effect=eff, ci_low=lo, ci_high=hi, n_pairs=n, counts=counts,
                 values={"small": _nanmean(small), "best": _nanmean(at_best)}, note=note)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _claims_b(ds: xr.Dataset, task: str, n_boot: int, seed: int) -> list[Claim]:
    if "lambda_before" not in ds or "lambda_after" not in ds:
        return []
    gains, out = _gains(ds), []
    for cond in ds["lambda_before"]["condition"].values:
        cond = str(cond)
        for rule in ds["rule"].values:
            for floss in _base_floss(ds):
                rule, floss = str(rule), str(floss)
                sel = dict(rule=rule, floss=floss, condition=cond, exponent=1)
                before = ds["lambda_before"].sel(sel).transpose("gain", "seed").sel(gain=gains).values
                after = ds["lambda_after"].sel(sel).transpose("gain", "seed").sel(gain=gains).values
                both = np.isfinite(before) & np.isfinite(after)
                before, after = np.where(both, before, np.nan), np.where(both, after, np.nan)
                enough = both.sum(axis=0) >= 2  # a spread needs two gains of the seed
                with _quiet_nanmean():
                    sd_b = np.where(enough, np.nanstd(before, axis=0), np.nan)
                    sd_a = np.where(enough, np.nanstd(after, axis=0), np.nan)
                eff, lo, hi, n = paired_bootstrap(sd_a, sd_b, _rng(seed, f"{task}/b/spread/{cond}/{rule}/{floss}"), n_boot)
                out.append(Claim(
                    id="b", task=task, measure="lambda_spread", rule=rule, floss=floss, condition=cond, gains=tuple(gains),
                    question=f"Does training with {rule} pull λ_max of the gains together ({cond})?",
                    direction=-1, effect=eff, ci_low=lo, ci_high=hi, n_pairs=n, units="1/tau",
                    counts={"seeds": n}, values={"before": _nanmean(sd_b), "after": _nanmean(sd_a)},
                    note="one gain only" if len(gains) < 2 else ""))
                delta = np.abs(after - before)
                with _quiet_nanmean():
                    rest = np.nanmean(delta[1:], axis=0) if len(gains) > 1 else np.full(delta.shape[1], np.nan)
                eff, lo, hi, n = paired_bootstrap(delta[0], rest, _rng(seed, f"{task}/b/delta/{cond}/{rule}/{floss}"), n_boot)
                out.append(Claim(
                    id="b", task=task, measure="abs_delta_lambda", rule=rule, floss=floss, condition=cond, gains=tuple(gains),
                    question=f"Does training with {rule} move λ_max more at the smallest gain than at the others ({cond})?",
                    direction=+1, effect=eff, ci_low=lo, ci_high=hi, n_pairs=n, units="1/tau",
                    counts={"seeds": n}, values={"small": _nanmean(delta[0]), "rest": _nanmean(rest)},
                    note="one gain only" if len(gains) < 2 else ""))
    return out


def _claims_c(ds: xr.Dataset, task: str, n_boot: int, seed: int) -> list[Claim]:
    modes = [str(f) for f in ds["floss"].values]
    if "none" not in modes:
        return []
    out = []
    for rule in ds["rule"].values:
        rule = str(rule)
        for mode in (m for m in modes if m != "none"):
            for g in _gains(ds):
                flossed = _seeds(ds["acc"].sel(rule=rule, floss=mode, gain=g))
                plain = _seeds(ds["acc"].sel(rule=rule, floss="none", gain=g))
                eff, lo, hi, n = paired_bootstrap(flossed, plain, _rng(seed, f"{task}/c/{rule}/{mode}/{g!r}"), n_boot)
                d = flossed - plain
                out.append(Claim(
                    id="c", task=task, measure="floss_effect", rule=rule, floss=mode, condition=None, gains=(g,),
                    question=f"Does {mode} flossing raise {rule}'s test accuracy at g = {g:g}?",
                    direction=+1, effect=eff, ci_low=lo, ci_high=hi, n_pairs=n,
                    counts={"hurt": int((d < -FLOSS_MARGIN).sum()), "helped": int((d > FLOSS_MARGIN).sum())},
                    values={"flossed": _nanmean(flossed), "unflossed": _nanmean(plain)}))
    return out


def claims(ds: xr.Dataset, *, n_boot: int = 10000, seed: int = 0) -> list[Claim]:
    """The three questions of the gain study, each effect with a paired bootstrap 95 % CI over seeds.

    (a) per rule: accuracy and updates to criterion, smallest gain vs best gain; (b) per condition
    and rule: spread of λ_max across gains after vs before, and |Δλ_max| at the smallest gain vs the
    others; (c) per rule, flossing mode and gain: flossed minus unflossed accuracy. Every task of
    the store in turn. Deterministic in ``seed`` (each claim draws from its own generator).
    """
    out = []
    for task in tasks(ds):
        info, data = study_info(ds, task), prepare(ds, task)
        out += _claims_a(data, info, n_boot, seed) + _claims_b(data, task, n_boot, seed)
        out += _claims_c(data, task, n_boot, seed)
    return out


# ----------------------------------------------------------------------------------------- text

def _num(x: float, fmt: str = "+.3f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _ci(c: Claim, fmt: str = "+.3f") -> str:
    return f"[{_num(c.ci_low, fmt)}, {_num(c.ci_high, fmt)}]"


def describe(c: Claim) -> str:
    """One line for a claim: what was compared, the effect with its CI, the counts and the verdict."""
    fmt = "+.1f" if c.units == "updates" else "+.3f"
    seeds = f"{c.n_pairs} seed pair{'s' if c.n_pairs != 1 else ''}"
    head = f"{c.rule}" + (f" + {c.floss} flossing" if c.floss != "none" and c.id != "c" else "")
    if c.measure == "test_accuracy":
        g0, gb = c.gains
        learned = (f"; learned {c.counts['learned_small']}/{c.counts['seeds_small']} at g = {g0:g}, "
                   f"{c.counts['learned_best']}/{c.counts['seeds_best']} at g = {gb:g}") if "learned_small" in c.counts else ""
        body = (f"g = {g0:g} vs best g = {gb:g}: accuracy {_num(c.values['small'], '.3f')} vs "
                f"{_num(c.values['best'], '.3f')}, difference {_num(c.effect, fmt)} {_ci(c, fmt)}, {seeds}{learned}")
    elif c.measure == "updates_to_criterion":
        if not c.counts:
            body = "updates to criterion not in the store"
        else:
            g0, gb = c.gains
            body = (f"updates to criterion g = {g0:g} vs g = {gb:g}: difference {_num(c.effect, fmt)} {_ci(c, fmt)}, "
                    f"{seeds}; never reached {c.counts['never_small']}/{c.counts['seeds_small']} at g = {g0:g}, "
                    f"{c.counts['never_best']}/{c.counts['seeds_best']} at g = {gb:g} (counted as updates + 1)")
    elif c.measure == "lambda_spread":
        body = (f"std of λ_max over gains {_num(c.values['before'], '.3f')} before -> {_num(c.values['after'], '.3f')} "
                f"after [1/τ], change {_num(c.effect, fmt)} {_ci(c, fmt)}, {seeds}")
    elif c.measure == "abs_delta_lambda":
        body = (f"|Δλ_max| at g = {c.gains[0]:g} {_num(c.values['small'], '.3f')} vs other gains "
                f"{_num(c.values['rest'], '.3f')} [1/τ], difference {_num(c.effect, fmt)} {_ci(c, fmt)}, {seeds}")
    else:
        body = (f"{c.floss} flossing at g = {c.gains[0]:g}: accuracy {_num(c.values['unflossed'], '.3f')} -> "
                f"{_num(c.values['flossed'], '.3f')}, difference {_num(c.effect, fmt)} {_ci(c, fmt)}, {seeds}; "
                f"hurt {c.counts['hurt']}, helped {c.counts['helped']} (|d| > {FLOSS_MARGIN:g})")
    note = f" ({c.note})" if c.note and c.note not in body else ""
    return f"  {head}: {body} -> {c.verdict}{note}"


_HEADINGS = {
    "test_accuracy": "(a) Is test accuracy lower at the smallest gain than at the best gain? (claimed: difference < 0)",
    "updates_to_criterion": "(a) Are more updates needed to reach the criterion at the smallest gain? (claimed: > 0)",
    "lambda_spread": "(b) Does training pull λ_max of the gains together? (claimed: change in spread < 0)",
    "abs_delta_lambda": "(b) Does training move λ_max most at the smallest gain? (claimed: difference > 0)",
    "floss_effect": "(c) Does flossing raise test accuracy? (claimed: flossed − unflossed > 0)",
}


def summary(ds: xr.Dataset, found: list[Claim] | None = None, **kwargs: Any) -> str:
    """A plain-text summary per task: a header (task, N, updates, seeds, cells) and each claim's
    verdict with its numbers. ``kwargs`` (n_boot, seed) go to :func:`claims` when ``found`` is None."""
    found = claims(ds, **kwargs) if found is None else found
    return "\n\n".join(_task_summary(study_info(ds, t), _gains(ds), [c for c in found if c.task == t])
                        for t in tasks(ds))


def _task_summary(info: StudyInfo, gains: list[float], found: list[Claim]) -> str:
    cells = ", ".join(f"{v} {k}" for k, v in info.cells.items())
    lines = [f"gain study: {info.title}; gains {', '.join(f'{g:g}' for g in gains)}; cells: {cells}",
             f"accuracy: {info.metric}; chance {_num(info.chance, '.3f')}, ceiling {_num(info.ceiling, '.3f')}, "
             f"criterion {_num(info.criterion, '.3f')}; effects: mean over seeds, paired bootstrap 95 % CI"]
    lines += [f"note: {n}" for n in info.notes]
    if info.seeds < 5:
        lines.append(f"note: with {info.seeds} seeds the bootstrap CIs cover less than 95 % (they cannot reach "
                     "past the extreme seeds); read the verdicts as indications")
    for measure, heading in _HEADINGS.items():
        group = [c for c in found if c.measure == measure]
        if not group:
            continue
        lines.append(heading)
        condition = None
        for c in group:
            if c.condition is not None and c.condition != condition:
                condition = c.condition
                lines.append(f" condition {condition}:")
            lines.append(describe(c))
    if not any(c.measure == "floss_effect" for c in found):
        lines.append("(c) no flossing modes besides none in this sweep")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- figures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=120)
        paths.append(path)
    _pyplot().close(fig)
    return paths


def _mean_sem(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over ``seed`` of the finite entries (SEM NaN with one seed)."""
    n = np.isfinite(da).sum("seed")
    mean = da.mean("seed", skipna=True)
    sd = da.std("seed", ddof=1, skipna=True).where(n > 1)
    return mean.values, (sd / np.sqrt(n.where(n > 0))).values


def _lines(ds: xr.Dataset, base_only: bool) -> list[tuple[str, str, str, str]]:
    """(rule, floss, label, linestyle) of the lines to draw: no flossing solid, flossing dashed."""
    modes = _base_floss(ds) if base_only else [str(f) for f in ds["floss"].values]
    return [(str(r), f, str(r) if f == "none" else f"{r} + {f} flossing", "-" if f == "none" else "--")
            for r in ds["rule"].values for f in modes]


def _colors(ds: xr.Dataset) -> dict[str, Any]:
    cycle = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return {str(r): cycle[i % len(cycle)] for i, r in enumerate(ds["rule"].values)}


def figures(ds: xr.Dataset, out_dir: str | Path, *, gain: float | None = None,
            found: list[Claim] | None = None, **kwargs: Any) -> list[Path]:
    """Draw the figure set into ``out_dir`` as PNG and PDF; return the files.

    accuracy_vs_gain (test accuracy, seeds that learned, updates to criterion, per rule),
    lambda_vs_gain (λ_max before and after, one panel per condition), flossing_effect (flossed −
    unflossed accuracy with its CI, per rule × mode) and learning_curves (monitoring accuracy
    against updates at ``gain``, default the smallest). Means ± SEM over done seeds. A store of
    several tasks gets one set per task, the task's name appended to each file name.
    """
    gains = _gains(ds)
    gain = gains[0] if gain is None else _grid_gain(gains, gain)
    found = claims(ds, **kwargs) if found is None else found
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, files = tasks(ds), []
    for task in names:
        info, data = study_info(ds, task), prepare(ds, task)
        suffix = f"_{task}" if len(names) > 1 else ""
        mine = [c for c in found if c.task == task]
        files += _fig_accuracy(data, info, out_dir, suffix) + _fig_lambda(data, info, out_dir, suffix)
        files += _fig_floss(data, info, mine, out_dir, suffix) + _fig_curves(data, info, gain, out_dir, suffix)
    return files


def _grid_gain(gains: list[float], gain: float) -> float:
    for g in gains:
        if math.isclose(g, gain, rel_tol=1e-9, abs_tol=1e-9):
            return g
    raise InputError(f"--gain {gain:g} is not a gain of the sweep ({', '.join(f'{g:g}' for g in gains)})")


def _fig_accuracy(ds: xr.Dataset, info: StudyInfo, out_dir: Path, suffix: str) -> list[Path]:
    plt = _pyplot()
    fig, (ax_acc, ax_learn, ax_upd) = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True, sharex=True)
    colors = _colors(ds)
    g = ds["gain"].values
    for rule, floss, label, ls in _lines(ds, base_only=True):
        acc = ds["acc"].sel(rule=rule, floss=floss)
        mean, sem = _mean_sem(acc)
        ax_acc.errorbar(g, mean, yerr=sem, marker="o", capsize=3, ls=ls, color=colors[rule], label=label)
        if math.isfinite(info.criterion):
            n = np.isfinite(acc).sum("seed")
            frac = ((acc >= info.criterion).sum("seed") / n.where(n > 0)).values
            ax_learn.plot(g, frac, marker="o", ls=ls, color=colors[rule], label=label)
        if "updates_to_criterion" in ds:
            mean, sem = _mean_sem(ds["updates_to_criterion"].sel(rule=rule, floss=floss))
            ax_upd.errorbar(g, mean, yerr=sem, marker="o", capsize=3, ls=ls, color=colors[rule], label=label)
    for level, name, style in ((info.chance, "chance", ":"), (info.ceiling, "ceiling", "--"),
                               (info.criterion, "criterion", "-.")):
        if math.isfinite(level):
            ax_acc.axhline(level, color="0.5", lw=0.8, ls=style, label=name)
    ax_acc.set(xlabel="initial gain g", ylabel=f"{info.metric.replace('_', ' ')} (mean ± SEM)")
    ax_learn.set(xlabel="initial gain g", ylabel="fraction of seeds that learned", ylim=(-0.05, 1.05))
    ax_upd.set(xlabel="initial gain g", ylabel="updates to criterion (mean ± SEM of seeds reaching it)")
    if not math.isfinite(info.criterion):
        ax_learn.text(0.5, 0.5, "no criterion in the store", ha="center", transform=ax_learn.transAxes)
    if "updates_to_criterion" not in ds:
        ax_upd.text(0.5, 0.5, "no updates_to_criterion in the store", ha="center", transform=ax_upd.transAxes)
    ax_acc.legend(fontsize=7)
    fig.suptitle(f"accuracy vs initial gain: {info.title}", fontsize=10)
    return _save(fig, out_dir, "accuracy_vs_gain" + suffix)


def _fig_lambda(ds: xr.Dataset, info: StudyInfo, out_dir: Path, suffix: str) -> list[Path]:
    plt = _pyplot()
    conds = [str(c) for c in ds["lambda_before"]["condition"].values] if "lambda_before" in ds else ["autonomous"]
    fig, axes = plt.subplots(1, len(conds), figsize=(4.5 * len(conds), 3.8), constrained_layout=True, squeeze=False)
    colors = _colors(ds)
    g = ds["gain"].values
    for ax, cond in zip(axes[0], conds, strict=True):
        ax.axhline(0.0, color="0.7", lw=0.8)
        if "lambda_before" not in ds:
            ax.text(0.5, 0.5, "no spectra in the store", ha="center", transform=ax.transAxes)
            continue
        before = ds["lambda_before"].sel(condition=cond, exponent=1)
        mean, sem = _mean_sem(before.sel(floss=_base_floss(ds)[0]).mean("rule", skipna=True))
        ax.errorbar(g, mean, yerr=sem, marker="s", capsize=3, color="k", ls=":", label="before training")
        for rule, floss, label, ls in _lines(ds, base_only=False):
            mean, sem = _mean_sem(ds["lambda_after"].sel(condition=cond, exponent=1, rule=rule, floss=floss))
            ax.errorbar(g, mean, yerr=sem, marker="o", capsize=3, ls=ls, color=colors[rule], label=f"{label}, after")
        ax.set(xlabel="initial gain g", ylabel="λ_max [1/τ] (mean ± SEM)", title=cond)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"largest Lyapunov exponent before and after training: {info.title}", fontsize=10)
    return _save(fig, out_dir, "lambda_vs_gain" + suffix)


def _fig_floss(ds: xr.Dataset, info: StudyInfo, found: list[Claim], out_dir: Path, suffix: str) -> list[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    ax.axhline(0.0, color="0.7", lw=0.8)
    floss = [c for c in found if c.measure == "floss_effect"]
    colors = _colors(ds)
    styles = ["--", "-.", ":", (0, (5, 1))]
    modes = sorted({c.floss for c in floss})
    for rule in (str(r) for r in ds["rule"].values):
        for i, mode in enumerate(modes):
            cs = sorted((c for c in floss if c.rule == rule and c.floss == mode), key=lambda c: c.gains[0])
            if not cs:
                continue
            x = np.array([c.gains[0] for c in cs])
            y = np.array([c.effect for c in cs])
            err = np.array([[c.effect - c.ci_low, c.ci_high - c.effect] for c in cs]).T
            ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0.0), marker="o", capsize=3,
                        ls=styles[i % len(styles)], color=colors[rule], label=f"{rule} + {mode} flossing")
    if floss:
        for m in (-FLOSS_MARGIN, FLOSS_MARGIN):
            ax.axhline(m, color="0.85", lw=0.6, ls=":")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no flossing modes besides none", ha="center", transform=ax.transAxes)
    ax.set(xlabel="initial gain g", ylabel="flossed − unflossed accuracy (95 % CI)")
    fig.suptitle(f"flossing effect: {info.title}", fontsize=10)
    return _save(fig, out_dir, "flossing_effect" + suffix)


def _fig_curves(ds: xr.Dataset, info: StudyInfo, gain: float, out_dir: Path, suffix: str) -> list[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    name, x_dim = ("eval_accuracy", "eval_update") if "eval_accuracy" in ds else ("accuracy", "update")
    colors = _colors(ds)
    if name in ds:
        for rule, floss, label, ls in _lines(ds, base_only=False):
            curve = ds[name].sel(rule=rule, floss=floss, gain=gain)
            x = ds[x_dim].values
            for s in range(curve.sizes["seed"]):
                ax.plot(x, curve.isel(seed=s).values, ls=ls, color=colors[rule], lw=0.5, alpha=0.4)  # seeds
            mean, sem = _mean_sem(curve)
            ax.plot(x, mean, ls=ls, color=colors[rule], lw=1.8, label=label)
            ax.fill_between(x, mean - sem, mean + sem, color=colors[rule], alpha=0.15, lw=0)
    if math.isfinite(info.chance):
        ax.axhline(info.chance, color="0.5", lw=0.8, ls=":", label="chance")
    if math.isfinite(info.criterion):
        ax.axhline(info.criterion, color="0.5", lw=0.8, ls="-.", label="criterion")
    ax.legend(fontsize=7, title="thin: seeds; band: mean ± SEM", title_fontsize=7)
    where = "monitoring batch" if name == "eval_accuracy" else "training batch"
    ax.set(xlabel="updates", ylabel=f"accuracy ({where})")
    fig.suptitle(f"learning curves at g = {gain:g}: {info.title}", fontsize=10)
    return _save(fig, out_dir, "learning_curves" + suffix)


# ----------------------------------------------------------------------------------------- report

@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote: the claims, the summary text and the files."""

    claims: list[Claim]
    summary: str
    files: list[Path]
    studies: list[StudyInfo]

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready: the studies (one per task), the claims and the files written."""
        return {"studies": [_json_ready(asdict(i)) for i in self.studies],
                "claims": [c.to_dict() for c in self.claims], "files": [str(p) for p in self.files]}


def check_out_dir(out_dir: str | Path) -> Path:
    """Raise InputError unless ``out_dir`` is a folder (or can become one) this process may write."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, not a folder")
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out_dir} cannot be written (no write permission on {parent})")
    return out_dir


def write_report(store_or_ds: xr.Dataset | str | Path, out_dir: str | Path, *, gain: float | None = None,
                 n_boot: int = 10000, seed: int = 0) -> Report:
    """Claims, figures, ``summary.txt`` and ``claims.json`` (strict JSON) of a sweep into ``out_dir``.

    Everything is checked before anything is written (the store, the folder, the gain).
    """
    if isinstance(store_or_ds, xr.Dataset):
        ds = store_or_ds
    else:
        from biorules.store import open_store

        ds = open_store(store_or_ds)
        store = Path(store_or_ds).resolve()
        if Path(out_dir).resolve() == store or store in Path(out_dir).resolve().parents:
            raise InputError(f"--out {out_dir} lies inside the store {store_or_ds}; choose a folder outside it")
    infos = [study_info(ds, t) for t in tasks(ds)]
    out_dir = check_out_dir(out_dir)
    if gain is not None:
        _grid_gain(_gains(ds), gain)
    found = claims(ds, n_boot=n_boot, seed=seed)
    text = summary(ds, found)
    files = figures(ds, out_dir, gain=gain, found=found)
    (out_dir / "summary.txt").write_text(text + "\n")
    payload = {"studies": [_json_ready(asdict(i)) for i in infos], "claims": [c.to_dict() for c in found]}
    (out_dir / "claims.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return Report(claims=found, summary=text, files=[*files, out_dir / "summary.txt", out_dir / "claims.json"],
                  studies=infos)


# ----------------------------------------------------------------------------------------- older plots

def plot_lambda_max(ds: xr.Dataset, path: str | Path) -> Path:
    """λ_max (mean ± sd over seeds) against the initial gain g, saved to ``path`` (PNG, PDF, ...)."""
    plt = _pyplot()
    lam = ds["lambda_max"]
    mean, sd = lam.mean("seed"), lam.std("seed")
    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.errorbar(ds["gain"], mean, yerr=sd, marker="o", capsize=3)
    ax.set_xlabel("initial gain g")
    ax.set_ylabel(f"λ_max [{lam.attrs.get('units', '')}]")
    ax.set_title(f"largest Lyapunov exponent, {ds.sizes['seed']} seeds", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(ds: xr.Dataset, path: str | Path, task: str | None = None) -> Path:
    """Accuracy and λ_max after training against g, one line per rule × floss (± sd), in one file.

    ``task`` defaults to the store's first; λ_max is read in the first condition of the store
    (autonomous in stores without conditions).
    """
    plt = _pyplot()
    task = tasks(ds)[0] if task is None else task
    info, data = study_info(ds, task), prepare(ds, task)
    cond = str(data["lambda_after"]["condition"].values[0]) if "lambda_after" in data else None
    fig, (ax_acc, ax_lam) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    g = data["gain"].values
    for rule, floss, label, ls in _lines(data, base_only=False):
        acc = data["acc"].sel(rule=rule, floss=floss)
        ax_acc.errorbar(g, acc.mean("seed"), yerr=acc.std("seed"), marker="o", capsize=3, ls=ls, label=label)
        if cond is not None:
            lam = data["lambda_after"].sel(rule=rule, floss=floss, condition=cond, exponent=1)
            ax_lam.errorbar(g, lam.mean("seed"), yerr=lam.std("seed"), marker="o", capsize=3, ls=ls, label=label)
    if cond is not None:
        before = data["lambda_before"].sel(condition=cond, exponent=1).isel(rule=0, floss=0).mean("seed")
        ax_lam.plot(g, before, "k--", label="before training")
    ax_acc.set(xlabel="initial gain g", ylabel=info.metric.replace("_", " "))
    ax_lam.set(xlabel="initial gain g", ylabel=f"λ_max after training [1/τ] ({cond})")
    ax_lam.axhline(0, color="0.7", lw=0.8)
    ax_acc.legend(fontsize=7)
    fig.suptitle(info.title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
