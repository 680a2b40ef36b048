"""Official and seeded random 8:1:1 splits (docs/datasets.md).

Random: val = test = floor(n/10), the rest train, from ``numpy.random.default_rng(seed).permutation``
of the sorted ids. Official: the dataset's parts; GlaS trains on its 85 training images with a
seeded 10 % held out for validation and tests on testA + testB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from biorules.errors import InputError
from segment.data import Dataset


@dataclass(frozen=True)
class Split:
    """Image ids of one split; ``seed`` is the permutation seed (-1 for the official split)."""

    name: str
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def random_split(ids: list[str], seed: int) -> Split:
    ids = sorted(ids)
    n = len(ids)
    k = n // 10
    if k < 1:
        raise InputError(f"--split random needs at least 10 images, found {n}")
    perm = np.random.default_rng(seed).permutation(n)
    order = [ids[i] for i in perm]
    return Split(f"random-{seed}", seed, tuple(sorted(order[2 * k:])), tuple(sorted(order[:k])),
                 tuple(sorted(order[k:2 * k])))


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


def make_splits(ds: Dataset, kind: str = "auto", seed: int = 0, n_splits: int = 1) -> list[Split]:
    """``n_splits`` splits of kind ``official``, ``random`` or ``auto`` (official where it exists)."""
    if kind == "auto":
        kind = "official" if ds.info.official_split else "random"
    if kind == "official":
        if n_splits != 1:
            raise InputError("--splits: the official split is a single split; use --split random for several")
        return [official_split(ds, seed)]
    if kind != "random":
        raise InputError(f"--split: unknown kind {kind!r}")
    if ds.info.volumetric:
        raise InputError(f"--split random: {ds.info.name} is volumetric; use its official split")
    ids = [r.id for r in ds.records]
    return [random_split(ids, seed + i) for i in range(n_splits)]
