"""Segmentation metrics (docs/rwkv-unet.md): Dice, IoU, HD95 (medpy-compatible) and the GlaS object metrics.

Pixel metrics, for boolean masks A (prediction) and G (ground truth) of any dimension:

    Dice = 2|A∩G| / (|A| + |G|),   IoU = |A∩G| / |A∪G|

HD95: border(X) = X XOR erode(X) (connectivity-1 cross, one iteration, outside = background); the
directed distances are the Euclidean distance transform of the complement of border(G), sampled
with ``spacing``, read at border(A), and vice versa; HD95 is ``numpy.percentile(..., 95)`` (linear)
of the pooled union of both directed sets. Units: pixels (voxels) unless ``spacing`` is given;
with the voxel spacing of a NIfTI case (mm per voxel along each axis, anisotropic allowed) the
distances, and so HD95, are in mm (``distance_unit``), as medpy's ``hd95(..., voxelspacing=)``.

Empty masks (medpy raises or divides by zero there), two policies:

* ``strict`` (default): both empty -> Dice 1, IoU 1, HD95 0; exactly one empty -> 0, 0, NaN.
* ``transunet``: both non-empty -> computed; prediction non-empty and truth empty -> Dice 1,
  HD95 0 (IoU 1); prediction empty -> 0, 0 (IoU 0).

GlaS object metrics [Sirinukunwattana et al. 2017], pooled over a test part: object F1 (a
segmented object S is a TP if its most-overlapping truth object G has |S∩G| >= 0.5|G|), object Dice

    D_obj = ½[Σᵢ ωᵢ Dice(Gᵢ, Sᵢ) + Σⱼ ω̃ⱼ Dice(G̃ⱼ, S̃ⱼ)],  ωᵢ = |Sᵢ|/Σ|S|,  ω̃ⱼ = |G̃ⱼ|/Σ|G|

and object Hausdorff in the same form with H(X, Y) = max(sup_x inf_y, sup_y inf_x) ‖x−y‖. An
object that overlaps nothing is paired, for Hausdorff, with the other set's object of the same
image at minimum Hausdorff distance; with no object at all on the other side it gets the image
diagonal and is counted in ``n_diagonal``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

POLICIES = ("strict", "transunet")


def _bool(x: np.ndarray) -> np.ndarray:
    return np.atleast_1d(np.asarray(x).astype(bool))


def dice(pred: np.ndarray, gt: np.ndarray, empty: str = "strict") -> float:
    """Dice coefficient of two boolean masks (empty-mask policy in the module docstring)."""
    a, g = _bool(pred), _bool(gt)
    na, ng = int(a.sum()), int(g.sum())
    if na == 0 or ng == 0:
        return _empty(na, ng, empty)[0]
    return 2.0 * int(np.count_nonzero(a & g)) / float(na + ng)


def iou(pred: np.ndarray, gt: np.ndarray, empty: str = "strict") -> float:
    """Jaccard index (IoU) of two boolean masks."""
    a, g = _bool(pred), _bool(gt)
    na, ng = int(a.sum()), int(g.sum())
    if na == 0 or ng == 0:
        return _empty(na, ng, empty)[1]
    return int(np.count_nonzero(a & g)) / float(np.count_nonzero(a | g))


def _empty(na: int, ng: int, policy: str) -> tuple[float, float, float]:
    """(Dice, IoU, HD95) when at least one mask is empty."""
    if policy == "strict":
        return (1.0, 1.0, 0.0) if na == 0 and ng == 0 else (0.0, 0.0, float("nan"))
    if policy == "transunet":
        return (1.0, 1.0, 0.0) if na > 0 else (0.0, 0.0, 0.0)
    raise ValueError(f"unknown empty-mask policy {policy!r} (choose from {POLICIES})")


def border(x: np.ndarray) -> np.ndarray:
    """X XOR erode(X) with the connectivity-1 structuring element, outside = background."""
    x = _bool(x)
    st = ndimage.generate_binary_structure(x.ndim, 1)
    return x ^ ndimage.binary_erosion(x, structure=st, iterations=1, border_value=0)


def surface_distances(a: np.ndarray, g: np.ndarray, spacing=None) -> np.ndarray:
    """Distances from each border pixel of ``a`` to the nearest border pixel of ``g``."""
    ba, bg = border(a), border(g)
    dt = ndimage.distance_transform_edt(~bg, sampling=spacing)
    return dt[ba]


def distance_unit(spacing=None) -> str:
    """Unit of surface distances and HD95: ``"mm"`` with a voxel spacing, ``"px"`` without."""
    return "px" if spacing is None else "mm"


def hd95(pred: np.ndarray, gt: np.ndarray, spacing=None, empty: str = "strict") -> float:
    """95th percentile of the pooled symmetric border distances (medpy ``hd95`` semantics)."""
    a, g = _bool(pred), _bool(gt)
    na, ng = int(a.sum()), int(g.sum())
    if na == 0 or ng == 0:
        return _empty(na, ng, empty)[2]
    d = np.hstack((surface_distances(a, g, spacing), surface_distances(g, a, spacing)))
    return float(np.percentile(d, 95))


def pixel_metrics(pred: np.ndarray, gt: np.ndarray, spacing=None, empty: str = "strict",
                  with_hd95: bool = True) -> tuple[float, float, float]:
    """(Dice, IoU, HD95) of one boolean mask pair."""
    h = hd95(pred, gt, spacing, empty) if with_hd95 else float("nan")
    return dice(pred, gt, empty), iou(pred, gt, empty), h


# --------------------------------------------------------------------------- GlaS object metrics


def connected_components(mask: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Instance labels of a boolean 2-D mask (8-connectivity), dropping objects below ``min_area``."""
    lab, n = ndimage.label(np.asarray(mask).astype(bool), structure=np.ones((3, 3), bool))
    if min_area > 0 and n:
        areas = np.bincount(lab.ravel())
        small = np.flatnonzero(areas < min_area)
        small = small[small > 0]
        lab[np.isin(lab, small)] = 0
        lab, _ = ndimage.label(lab > 0, structure=np.ones((3, 3), bool))
    return lab.astype(np.int32)


def hausdorff(x: np.ndarray, y: np.ndarray, dt_x: np.ndarray | None = None,
              dt_y: np.ndarray | None = None) -> float:
    """Hausdorff distance between two non-empty pixel sets (boolean masks of one image)."""
    dt_y = ndimage.distance_transform_edt(~y) if dt_y is None else dt_y
    dt_x = ndimage.distance_transform_edt(~x) if dt_x is None else dt_x
    return float(max(dt_y[x].max(), dt_x[y].max()))


@dataclass
class ObjectCounts:
    """Running sums of the object metrics over the images of one test part."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    dice_s: float = 0.0  # Σ |S_i| Dice(G_i, S_i)
    dice_g: float = 0.0  # Σ |G_j| Dice(G_j, S_j)
    haus_s: float = 0.0
    haus_g: float = 0.0
    area_s: int = 0
    area_g: int = 0
    n_diagonal: int = 0

    def add(self, other: ObjectCounts) -> ObjectCounts:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        return self

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2.0 * self.tp / d if d else float("nan")

    @property
    def object_dice(self) -> float:
        return _half_sum(self.dice_s, self.area_s, self.dice_g, self.area_g)

    @property
    def object_hausdorff(self) -> float:
        return _half_sum(self.haus_s, self.area_s, self.haus_g, self.area_g)


def _half_sum(s: float, ws: int, g: float, wg: int) -> float:
    if ws == 0 and wg == 0:
        return float("nan")
    return 0.5 * ((s / ws if ws else 0.0) + (g / wg if wg else 0.0))


def _objects(labels: np.ndarray) -> dict[int, np.ndarray]:
    ids = np.unique(labels)
    return {int(i): labels == i for i in ids if i != 0}


def object_counts(pred_labels: np.ndarray, gt_labels: np.ndarray) -> ObjectCounts:
    """Object-metric sums of one image from instance label maps (0 = background)."""
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    S, G = _objects(pred_labels), _objects(gt_labels)
    c = ObjectCounts(area_s=sum(int(m.sum()) for m in S.values()), area_g=sum(int(m.sum()) for m in G.values()))
    diag = float(np.hypot(*pred_labels.shape))
    dts: dict[tuple[str, int], np.ndarray] = {}

    def dt(side: str, i: int, m: np.ndarray) -> np.ndarray:
        if (side, i) not in dts:
            dts[side, i] = ndimage.distance_transform_edt(~m)
        return dts[side, i]

    def best_overlap(m: np.ndarray, other: np.ndarray) -> tuple[int, int]:
        ids, counts = np.unique(other[m], return_counts=True)
        keep = ids != 0
        ids, counts = ids[keep], counts[keep]
        if ids.size == 0:
            return 0, 0
        k = int(np.argmax(counts))
        return int(ids[k]), int(counts[k])

    def sums(A: dict[int, np.ndarray], B: dict[int, np.ndarray], b_labels: np.ndarray, sa: str, sb: str):
        dsum = hsum = 0.0
        ndiag = 0
        for i, m in A.items():
            area = int(m.sum())
            j, inter = best_overlap(m, b_labels)
            if j:
                dsum += area * 2.0 * inter / (area + int(B[j].sum()))
                hsum += area * hausdorff(m, B[j], dt(sa, i, m), dt(sb, j, B[j]))
            elif B:
                hsum += area * min(hausdorff(m, mb, dt(sa, i, m), dt(sb, jb, mb)) for jb, mb in B.items())
            else:
                hsum += area * diag
                ndiag += 1
        return dsum, hsum, ndiag

    detected = set()
    for m in S.values():
        j, inter = best_overlap(m, gt_labels)
        if j and inter >= 0.5 * int(G[j].sum()):
            c.tp += 1
            detected.add(j)
        else:
            c.fp += 1
    c.fn = len(set(G) - detected)
    c.dice_s, c.haus_s, n1 = sums(S, G, gt_labels, "s", "g")
    c.dice_g, c.haus_g, n2 = sums(G, S, pred_labels, "g", "s")
    c.n_diagonal = n1 + n2
    return c


def object_metrics(pairs, min_area: int = 0) -> dict[str, float]:
    """Pooled object F1, object Dice and object Hausdorff over (prediction, truth) instance maps.

    A boolean prediction is split into connected components (8-connectivity) first.
    """
    total = ObjectCounts()
    for pred, gt in pairs:
        pred = np.asarray(pred)
        if pred.dtype == bool:
            pred = connected_components(pred, min_area)
        total.add(object_counts(pred, gt))
    return {"object_f1": total.f1, "object_dice": total.object_dice,
            "object_hausdorff": total.object_hausdorff, "n_diagonal": float(total.n_diagonal)}
