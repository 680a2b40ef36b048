"""Official and seeded random 8:1:1 splits, and grouped K-fold cross-validation (docs/datasets.md).

Random: val = test = floor(n/10) units, the rest train, from
``numpy.random.default_rng(seed).permutation`` of the sorted units, a unit being what must stay
together (``Record.unit``: a patient, a video, a volume, else the image). Official: the dataset's
parts; GlaS trains on its 85 training images with a seeded 10 % held out for validation and tests
on testA + testB.

Folds: the units in seeded random order, then stably sorted by size (images per unit, largest
first), each given to the fold holding the fewest images so far (the lowest-numbered on a tie).
So the K folds are disjoint, cover every unit, never split one, and hold about n/K images each.
Fold k tests its own units; of the other units floor(m/10) (m of them, seeded) validate and the
rest train. Official test parts stay out of the folds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from biorules.errors import InputError
from segment.data import Dataset


@dataclass(frozen=True)
class Split:
    """Image ids of one split; ``seed`` is the permutation seed (-1 for the official split);
    ``fold`` the fold number k of a K-fold split (-1 otherwise)."""

    name: str
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    fold: int = -1

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def random_split(ids: list[str], seed: int, units: Sequence[str] | None = None) -> Split:
    """A seeded 8:1:1 split of ``ids``; with ``units`` (one per id) whole units go to one part."""
    units = list(ids) if units is None else list(units)
    members: dict[str, list[str]] = {}
    for i, u in zip(ids, units, strict=True):
        members.setdefault(u, []).append(i)
    names = sorted(members)
    n = len(names)
    k = n // 10
    if k < 1:
        what = "images" if n == len(ids) else "patients/volumes/videos"
        raise InputError(f"--split random needs at least 10 {what}, found {n}")
    perm = np.random.default_rng(seed).permutation(n)
    order = [names[i] for i in perm]

    def ids_of(us: list[str]) -> tuple[str, ...]:
        return tuple(sorted(i for u in us for i in members[u]))

    return Split(f"random-{seed}", seed, ids_of(order[2 * k:]), ids_of(order[:k]), ids_of(order[k:2 * k]))


def make_folds(k: int, groups: Sequence[str], seed: int = 0) -> list[tuple[int, ...]]:
    """K disjoint folds covering ``range(len(groups))``, never splitting a group (module docstring).

    Returns the item indices of each fold, ascending."""
    if k < 2:
        raise InputError(f"--folds must be at least 2, got {k}")
    sizes = Counter(groups)
    names = sorted(sizes)
    if len(names) < k:
        raise InputError(f"--folds {k}: the data has only {len(names)} patients/volumes/videos/images to divide")
    perm = np.random.default_rng(seed).permutation(len(names))
    order = sorted((names[i] for i in perm), key=lambda g: -sizes[g])
    load = [0] * k
    fold_of: dict[str, int] = {}
    for g in order:
        f = min(range(k), key=lambda j: (load[j], j))
        fold_of[g] = f
        load[f] += sizes[g]
    return [tuple(i for i, g in enumerate(groups) if fold_of[g] == f) for f in range(k)]


TEST_PARTS = ("test", "testA", "testB")


def fold_splits(ds: Dataset, folds: int, seed: int = 0) -> list[Split]:
    """The K folds of ``ds`` as splits ``fold0`` .. ``fold{K-1}`` (module docstring)."""
    pool = [r for r in ds.records if not (ds.info.official_split and r.part in TEST_PARTS)]
    units = [r.unit for r in pool]
    out = []
    for f, idx in enumerate(make_folds(folds, units, seed)):
        test_units = {units[i] for i in idx}
        rest = sorted({u for u in units if u not in test_units})
        perm = np.random.default_rng([seed, f]).permutation(len(rest))
        val_units = {rest[i] for i in perm[: len(rest) // 10]}
        parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for r, u in zip(pool, units, strict=True):
            parts["test" if u in test_units else "val" if u in val_units else "train"].append(r.id)
        out.append(Split(f"fold{f}", seed, tuple(parts["train"]), tuple(parts["val"]), tuple(parts["test"]), f))
    return out


def official_split(ds: Dataset, seed: int = 0) -> Split:
    if not ds.info.official_split:
        raise InputError(f"--split official: {ds.info.name} has no official split; use --split random")
    by_part: dict[str, list[str]] = {}
    for r in ds.records:
        by_part.setdefault(r.part, []).append(r.id)
    train = by_part.get("train", [])
    val = by_part.get("val", [])
    test = by_part.get("test", []) + by_part.get("testA", []) + by_part.get("testB", [])
    if ds.info.name == "glas" and train and not val:
        k = max(1, len(train) // 10)
        perm = np.random.default_rng(seed).permutation(len(train))
        held = {train[i] for i in perm[:k]}
        val = [t for t in train if t in held]
        train = [t for t in train if t not in held]
    if not train or not test:
        raise InputError(f"--data-dir {ds.root}: the official {ds.info.name} split needs training and test images")
    return Split("official", -1, tuple(train), tuple(val), tuple(test))


def make_splits(ds: Dataset, kind: str = "auto", seed: int = 0, n_splits: int = 1, folds: int = 0,
                fold: int | None = None) -> list[Split]:
    """``n_splits`` splits of kind ``official``, ``random`` or ``auto`` (official where it exists);
    with ``folds`` K > 0 the K cross-validation folds instead (seeded by ``seed``), or only fold
    ``fold``."""
    if folds:
        if fold is not None and not 0 <= fold < folds:
            raise InputError(f"--fold {fold}: must be in 0..{folds - 1} for --folds {folds}")
        out = fold_splits(ds, folds, seed)
        return out if fold is None else [out[fold]]
    if fold is not None:
        raise InputError("--fold needs --folds K")
    if kind == "auto":
        kind = "official" if ds.info.official_split else "random"
    if kind == "official":
        if n_splits != 1:
            raise InputError("--splits: the official split is a single split; use --split random for several")
        return [official_split(ds, seed)]
    if kind != "random":
        raise InputError(f"--split: unknown kind {kind!r}")
    ids = [r.id for r in ds.records]
    units = [r.unit for r in ds.records]
    return [random_split(ids, seed + i, units) for i in range(n_splits)]
