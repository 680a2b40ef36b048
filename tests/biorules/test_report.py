"""Claims on synthetic sweep stores with planted effects, the paired bootstrap, and the figure set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from biorules import report
from biorules.errors import InputError
from biorules.store import STORE_VERSION

GAINS = (0.5, 1.0, 1.5, 2.0)
CONDITIONS = ("autonomous", "fixation", "task")


def synthetic(acc=None, seeds=8, rules=("bptt", "eprop"), floss=("none", "eprop"), updates=20, rng=0,
              lam_before=None, lam_after=None, attrs=True, task="dms") -> xr.Dataset:
    """A sweep store of the real schema (one ``task``); ``acc(gain, rule, floss, seed, rng)`` plants the
    test accuracy. ``task=None`` and ``attrs=False`` give the older schema (no task dim, no levels)."""
    rng = np.random.default_rng(rng)
    shape = (len(GAINS), len(rules), len(floss), seeds)
    cell = ("gain", "rule", "floss", "seed")
    grid = np.meshgrid(np.array(GAINS), np.arange(len(rules)), np.arange(len(floss)), np.arange(seeds), indexing="ij")
    g = grid[0]
    test = np.full(shape, 0.95) + rng.normal(0, 0.01, shape) if acc is None else acc(*grid, rng)
    before = (-0.5 + 0.3 * g)[..., None, None] + rng.normal(0, 0.01, shape + (3, 2)) if lam_before is None else lam_before
    after = np.full(shape + (3, 2), -0.02) + rng.normal(0, 0.01, shape + (3, 2)) if lam_after is None else lam_after
    n_eval = updates // 10 + 1
    curve = test[..., None] * np.linspace(0.5, 1, n_eval) / 1.0
    upd = np.where(test >= 0.9 * 0.95, 5 + 10 * (1 - g / 2), np.nan)
    ds = xr.Dataset(
        {
            "loss": (cell + ("update",), np.ones(shape + (updates,))),
            "accuracy": (cell + ("update",), np.full(shape + (updates,), 0.8)),
            "eval_loss": (cell + ("eval_update",), 1 - curve),
            "eval_accuracy": (cell + ("eval_update",), curve),
            "eval_accuracy_best": (cell, curve.max(-1)),
            "eval_accuracy_last": (cell, curve[..., -1]),
            "test_accuracy": (cell, test),
            "test_loss": (cell, 1 - test),
            "updates_to_criterion": (cell, upd),
            "lambda_before": (cell + ("condition", "exponent"), before, {"units": "1/tau"}),
            "lambda_after": (cell + ("condition", "exponent"), after, {"units": "1/tau"}),
            "lambda_before_sem": (cell + ("condition", "exponent"), np.full(shape + (3, 2), 0.01)),
            "lambda_after_sem": (cell + ("condition", "exponent"), np.full(shape + (3, 2), 0.01)),
            "grad_cosine": (cell + ("cosine_update",), np.full(shape + (2,), 0.5)),
            "weight_change": (cell, np.full(shape, 0.1)),
            "wall_time": (cell, np.ones(shape)),
            "status": (cell, np.ones(shape, dtype=np.int8)),
        },
        coords={"gain": list(GAINS), "rule": np.array(rules, dtype=object), "floss": np.array(floss, dtype=object),
                "seed": np.arange(seeds),
                "update": np.arange(updates), "eval_update": np.arange(n_eval) * 10, "condition": np.array(CONDITIONS, dtype=object),
                "exponent": [1, 2], "cosine_update": [0, 10]},
        attrs={"store_version": STORE_VERSION, "title": f"gain study: {task or 'dms'}",
               "config": json.dumps({"tasks": [task or "dms"], "n": 32, "updates": updates,
                                     "seeds": list(range(seeds))})},
    )
    if attrs:
        ds.attrs.update(chance=0.5, ceiling=0.95, criterion=0.9 * 0.95)
    if task is not None:
        ds = ds.expand_dims(task=np.array([task], dtype=object))
        if attrs:
            ds = ds.assign(chance=("task", [0.5]), ceiling=("task", [0.95]), criterion=("task", [0.9 * 0.95]))
    return ds


def planted(gain, rule, floss, seed, rng):
    """Accuracy 0.93 with a per-seed offset and noise, lowered by 0.2 at g = 0.5."""
    offset = rng.normal(0, 0.02, seed.shape[-1])[seed]
    return 0.93 + offset + rng.normal(0, 0.01, gain.shape) - 0.2 * (gain == 0.5)


def one(found, **match):
    hits = [c for c in found if all(getattr(c, k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return hits[0]


def test_planted_accuracy_effect_is_recovered():
    found = report.claims(synthetic(planted))
    for rule in ("bptt", "eprop"):
        c = one(found, measure="test_accuracy", rule=rule)
        assert c.gains[0] == 0.5 and c.gains[1] != 0.5 and c.n_pairs == 8
        assert c.effect == pytest.approx(-0.2, abs=0.02)
        assert c.ci_low <= -0.2 <= c.ci_high and c.ci_high - c.ci_low < 0.05
        assert c.verdict == "supported"
        assert c.counts["learned_small"] == 0 and c.counts["learned_best"] == 8
        u = one(found, measure="updates_to_criterion", rule=rule)
        assert u.counts["never_small"] == 8 and u.counts["never_best"] == 0
        assert u.effect > 0 and u.verdict == "supported"  # never -> updates + 1 = 21 against about 5..12


def test_reversed_effect_is_not_supported():
    def better_small(gain, rule, floss, seed, rng):
        return planted(gain, rule, floss, seed, rng) + 0.3 * (gain == 0.5)  # g = 0.5 now 0.1 above the rest

    c = one(report.claims(synthetic(better_small), n_boot=2000), measure="test_accuracy", rule="bptt")
    assert c.gains == (0.5, 0.5) and c.effect == 0.0 and c.verdict == "not supported"


def test_no_effect_ci_covers_zero():
    def flat(gain, rule, floss, seed, rng):
        return 0.9 + rng.normal(0, 0.02, gain.shape)

    for rng in range(5):
        c = one(report.claims(synthetic(flat, rng=rng)), measure="test_accuracy", rule="bptt")
        assert c.ci_low <= 0 <= c.ci_high or c.verdict != "supported", c
        assert c.verdict != "supported"


def test_bootstrap_is_paired_and_deterministic():
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 0.3, 10)  # shared by both arms: cancels in a paired difference
    a, b = offset + 0.1, offset
    eff, lo, hi, n = report.paired_bootstrap(a, b, np.random.default_rng(0))
    assert n == 10 and eff == pytest.approx(0.1) and hi - lo < 1e-12
    b[3] = np.nan  # a seed missing in one arm drops out of the pair
    assert report.paired_bootstrap(a, b, np.random.default_rng(0))[3] == 9
    assert np.isnan(report.paired_bootstrap(a[:1], b[:1], np.random.default_rng(0))[1])  # one pair: no CI
    # the percentile CI of the mean of N(0.5, 1) draws against its textbook width 2 * 1.96 / sqrt(n)
    d = np.random.default_rng(2).normal(0.5, 1.0, 400)
    eff, lo, hi, n = report.paired_bootstrap(d, np.zeros(400), np.random.default_rng(3))
    assert hi - lo == pytest.approx(2 * 1.96 * d.std() / 20, rel=0.08)
    ds = synthetic(planted)
    assert report.claims(ds, n_boot=500, seed=4) == report.claims(ds, n_boot=500, seed=4)


def test_flossing_claim_counts_hurt_and_helped():
    diff = np.array([-0.3, -0.3, -0.1, -0.06, -0.04, 0.0, 0.06, 0.2])

    def flossed(gain, rule, floss, seed, rng):
        base = 0.9 + rng.normal(0, 0.05, seed.shape[-1])[seed]  # per-seed level, shared by both arms
        return base + np.where(floss == 1, diff[seed], 0.0)

    found = report.claims(synthetic(flossed))
    cs = [c for c in found if c.measure == "floss_effect"]
    assert len(cs) == 2 * len(GAINS) and {c.floss for c in cs} == {"eprop"}
    for c in cs:
        assert c.counts == {"hurt": 4, "helped": 2} and c.n_pairs == 8
        assert c.effect == pytest.approx(diff.mean()) and c.ci_low < diff.mean() < c.ci_high


def test_lambda_claims():
    found = report.claims(synthetic())
    assert {c.condition for c in found if c.id == "b"} == set(CONDITIONS)
    spread = one(found, measure="lambda_spread", rule="eprop", condition="task")
    # before: λ = −0.5 + 0.3 g over g = 0.5..2, population sd 0.3 · sd(g) = 0.168; after: noise only
    assert spread.values["before"] == pytest.approx(0.3 * np.std(GAINS), abs=0.01)
    assert spread.effect < -0.1 and spread.verdict == "supported"
    delta = one(found, measure="abs_delta_lambda", rule="eprop", condition="task")
    # |Δλ| at g = 0.5: |−0.02 − (−0.35)| = 0.33; at 1, 1.5, 2: 0.18, 0.03, 0.12 (mean 0.11)
    assert delta.effect == pytest.approx(0.33 - 0.11, abs=0.02) and delta.verdict == "supported"


def test_diverged_and_nan_cells_are_excluded():
    ds = synthetic(planted)
    ds["status"].loc[dict(task="dms", gain=0.5, rule="bptt", floss="none", seed=0)] = 2  # diverged, nonsense
    ds["test_accuracy"].loc[dict(task="dms", gain=0.5, rule="bptt", floss="none", seed=0)] = -100.0
    ds["test_accuracy"].loc[dict(task="dms", gain=1.5, rule="bptt", floss="none", seed=1)] = np.nan
    c = one(report.claims(ds), measure="test_accuracy", rule="bptt")
    assert c.n_pairs in (6, 7) and c.effect == pytest.approx(-0.2, abs=0.03)
    assert c.counts["seeds_small"] == 7


def test_older_store_without_new_variables():
    ds = synthetic(planted, attrs=False, task=None)
    ds = ds.drop_vars(["test_accuracy", "updates_to_criterion", "eval_accuracy"]).assign(
        final_accuracy=synthetic(planted, task=None)["test_accuracy"])
    ds["lambda_before"] = ds["lambda_before"].sel(condition="autonomous", drop=True)
    ds["lambda_after"] = ds["lambda_after"].sel(condition="autonomous", drop=True)
    ds = ds.drop_vars(["lambda_before_sem", "lambda_after_sem"]).drop_dims("condition", errors="ignore")
    found = report.claims(ds, n_boot=500)
    assert {c.condition for c in found if c.id == "b"} == {"autonomous"}
    assert one(found, measure="updates_to_criterion", rule="bptt").verdict == "n/a"
    text = report.summary(ds, found)
    assert "no ceiling in the store" in text and "0.5 assumed" in text and "final_accuracy" in text
    assert "n/a" in text


def test_summary_states_verdicts_and_header():
    ds = synthetic(planted)
    ds["status"].loc[dict(task="dms", gain=2.0, rule="eprop", floss="eprop", seed=7)] = 2
    text = report.summary(ds, n_boot=500)
    assert text.splitlines()[0].startswith("gain study: dms, N = 32, 20 updates, 8 seeds")
    assert "127 done, 1 diverged, 0 failed" in text
    assert "-> supported" in text and "hurt" in text and "nan" not in text


def test_figures_and_report_files(tmp_path):
    ds = synthetic(planted, seeds=3, rules=("bptt",))
    result = report.write_report(ds, tmp_path / "rep", n_boot=200)
    names = {p.name for p in result.files}
    for stem in ("accuracy_vs_gain", "lambda_vs_gain", "flossing_effect", "learning_curves"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    for p in result.files:
        assert p.is_file() and p.stat().st_size > 0
    assert (tmp_path / "rep" / "summary.txt").read_text().strip() == result.summary
    json.loads((tmp_path / "rep" / "claims.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    with pytest.raises(InputError, match="--gain 0.7"):
        report.write_report(ds, tmp_path / "other", gain=0.7)
    assert not (tmp_path / "other").exists()


def test_stores_of_several_tasks(tmp_path):
    """Each task is answered on its own: the planted effect shows in dms only, files get the task's name."""

    def flat(gain, rule, floss, seed, rng):
        return 0.93 + rng.normal(0, 0.01, gain.shape)

    ds = xr.concat([synthetic(planted, seeds=4, rules=("bptt",), floss=("none",)),
                    synthetic(flat, seeds=4, rules=("bptt",), floss=("none",), task="2af")], dim="task")
    assert report.tasks(ds) == ["dms", "2af"]
    found = report.claims(ds, n_boot=500)
    assert one(found, task="dms", measure="test_accuracy").verdict == "supported"
    assert one(found, task="2af", measure="test_accuracy").verdict != "supported"
    text = report.summary(ds, found)
    assert text.count("gain study: ") == 2 and "gain study: 2af, N = 32" in text
    files = report.figures(ds, tmp_path, found=found)
    assert {p.name for p in files} >= {"accuracy_vs_gain_dms.png", "learning_curves_2af.pdf"}
    with pytest.raises(InputError, match="holds tasks dms, 2af"):
        report.prepare(ds)


def test_one_gain_answers_nothing_about_gain():
    found = report.claims(synthetic(planted, seeds=3).sel(gain=[1.0]), n_boot=200)
    assert {c.verdict for c in found if c.id in "ab"} == {"n/a"}
    assert {c.measure for c in found if c.id == "c"} == {"floss_effect"}


def test_not_a_sweep_store():
    with pytest.raises(InputError, match="not a sweep store"):
        report.claims(xr.Dataset({"lambda_max": (("gain", "seed"), np.zeros((2, 2)))}))


def test_old_plots_still_draw(tmp_path):
    assert report.plot_sweep(synthetic(seeds=2), tmp_path / "s.png").is_file()
    scan = xr.Dataset({"lambda_max": (("gain", "seed"), np.zeros((2, 3)), {"units": "1/tau"})},
                      coords={"gain": [0.5, 1.0]})
    assert report.plot_lambda_max(scan, tmp_path / "l.png").is_file()
