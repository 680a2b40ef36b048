"""Dice, IoU, HD95 against medpy (float64, exact equality on non-empty masks); empty-mask
conventions; GlaS object metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric import binary as mb

from segment import metrics as M


def _pairs(seed: int, n: int, shape):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a = rng.random(shape) < rng.uniform(0.05, 0.6)
        g = rng.random(shape) < rng.uniform(0.05, 0.6)
        yield a, g


@pytest.mark.parametrize("shape", [(37, 41), (9, 16, 13)])
def test_equal_to_medpy_on_random_masks(shape) -> None:
    for a, g in _pairs(0, 25, shape):
        assert M.dice(a, g) == mb.dc(a, g)
        assert M.iou(a, g) == mb.jc(a, g)
        assert M.hd95(a, g) == mb.hd95(a, g)
    a, g = next(_pairs(1, 1, shape))
    sp = (0.7, 1.3, 2.0)[: len(shape)]
    assert M.hd95(a, g, spacing=sp) == mb.hd95(a, g, voxelspacing=sp)


def test_equal_to_medpy_on_blobs() -> None:
    yy, xx = np.mgrid[:64, :64]
    a = (yy - 30) ** 2 + (xx - 30) ** 2 < 15 ** 2
    g = (yy - 34) ** 2 + (xx - 27) ** 2 < 12 ** 2
    assert M.hd95(a, g) == mb.hd95(a, g)
    assert M.dice(a, g) == mb.dc(a, g)


def test_empty_masks_strict_and_transunet() -> None:
    e = np.zeros((8, 8), bool)
    f = e.copy()
    f[2:5, 2:5] = True
    # medpy: dc gives 0 when either mask is empty (also both), hd95 raises
    assert mb.dc(f, e) == 0.0 and mb.dc(e, f) == 0.0
    with pytest.raises(RuntimeError):
        mb.hd95(f, e)
    # strict (default): both empty -> 1, 1, 0; exactly one empty -> 0, 0, NaN
    assert M.pixel_metrics(e, e) == (1.0, 1.0, 0.0)
    for a, g in ((f, e), (e, f)):
        d, j, h = M.pixel_metrics(a, g)
        assert (d, j) == (mb.dc(a, g), 0.0) and math.isnan(h)
    # transunet: prediction non-empty and truth empty -> (1, 0); prediction empty -> (0, 0)
    assert M.dice(f, e, "transunet") == 1.0 and M.hd95(f, e, empty="transunet") == 0.0
    assert M.dice(e, f, "transunet") == 0.0 and M.hd95(e, f, empty="transunet") == 0.0
    assert M.dice(e, e, "transunet") == 0.0


def test_hd95_known_shift() -> None:
    a = np.zeros((30, 30), bool)
    a[5:15, 5:15] = True
    g = np.roll(a, 3, axis=1)
    assert M.hd95(a, g) == 3.0 == mb.hd95(a, g)


# ------------------------------------------------------------------------------ object metrics


def _square(lab: np.ndarray, y: int, x: int, s: int, v: int) -> None:
    lab[y:y + s, x:x + s] = v


def test_identical_objects() -> None:
    gt = np.zeros((40, 40), np.int32)
    _square(gt, 2, 2, 10, 1)
    _square(gt, 20, 20, 8, 2)
    r = M.object_metrics([(gt > 0, gt)])
    assert r == {"object_f1": 1.0, "object_dice": 1.0, "object_hausdorff": 0.0, "n_diagonal": 0.0}


def test_half_covered_object_and_false_positive() -> None:
    gt = np.zeros((40, 60), np.int32)
    _square(gt, 0, 0, 10, 1)                      # G1: 100 px
    pred = np.zeros_like(gt)
    pred[0:10, 0:5] = 1                           # S1: left half of G1, 50 px -> TP (>= 0.5|G1|)
    _square(pred, 30, 50, 4, 2)                   # S2: 16 px, overlaps nothing -> FP
    r = M.object_metrics([(pred, gt)])
    # TP 1, FP 1, FN 0 -> F1 = 2/3
    assert r["object_f1"] == pytest.approx(2 / 3, abs=0, rel=1e-15)
    # Dice(G1, S1) = 2*50/150; S side: (50*2/3 + 16*0)/66; G side: Dice(G1, S1) = 2/3
    assert r["object_dice"] == pytest.approx(0.5 * ((50 * 2 / 3) / 66 + 2 / 3), rel=1e-12)
    # H(S1, G1) = 5 (G1's right column to S1); S2 has no overlap: paired with G1 at its Hausdorff
    # distance: the G1 pixel (0,0) is hypot(30, 50) from S2's nearest pixel (30,50), more than
    # S2's far corner (33,53) is from G1's nearest pixel (9,9), hypot(24, 44)
    h_s2 = math.hypot(30, 50)
    assert r["object_hausdorff"] == pytest.approx(0.5 * ((50 * 5 + 16 * h_s2) / 66 + 5), rel=1e-12)


def test_missed_object_is_fn() -> None:
    gt = np.zeros((30, 30), np.int32)
    _square(gt, 0, 0, 10, 1)
    _square(gt, 20, 20, 6, 2)
    pred = np.zeros_like(gt)
    pred[0:4, 0:10] = 1                           # 40 % of G1 -> FP; G1 and G2 -> FN
    c = M.object_counts(pred, gt)
    assert (c.tp, c.fp, c.fn) == (0, 1, 2)
    assert M.object_metrics([(pred, gt)])["object_f1"] == 0.0


def test_pooled_over_images_and_empty_prediction() -> None:
    gt = np.zeros((20, 20), np.int32)
    _square(gt, 2, 2, 6, 1)
    empty = np.zeros_like(gt)
    r = M.object_metrics([(gt > 0, gt), (empty.astype(bool), gt)])
    assert r["object_f1"] == pytest.approx(2 / 3)            # TP 1, FN 1
    assert r["object_dice"] == pytest.approx(0.5 * (1.0 + 0.5))  # S side 1; G side (36*1 + 36*0)/72
    # second image: G has no segmented object at all -> the image diagonal, flagged
    assert r["n_diagonal"] == 1.0
    assert r["object_hausdorff"] == pytest.approx(0.5 * (0.0 + 0.5 * math.hypot(20, 20)))


def test_connected_components_8_connectivity_and_min_area() -> None:
    m = np.zeros((10, 10), bool)
    m[1, 1] = m[2, 2] = True                      # diagonal neighbours: one object
    m[6:9, 6:9] = True
    assert M.connected_components(m).max() == 2
    assert M.connected_components(m, min_area=3).max() == 1
