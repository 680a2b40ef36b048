"""HD95 in mm: our spacing-aware HD95 equals medpy's ``hd95(..., voxelspacing=)`` (float64, to
1e-12) on a hand-made anisotropic pair, in file order and with the slices stacked on axis 0."""

from __future__ import annotations

import numpy as np
from medpy.metric import binary as mb

from segment import metrics as M
from segment.data.volume import VolumeGeometry

SPACING = (0.8, 0.7, 3.0)  # mm; the third axis is the coarse one


def _pair() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((14, 12, 6), bool)
    gt[3:10, 2:9, 1:5] = True
    pred = np.zeros_like(gt)
    pred[4:12, 3:9, 2:6] = True  # shifted one voxel in x, y and z, one row longer
    pred[1, 1, 0] = True  # a stray voxel
    return pred, gt


def test_hd95_mm_equals_medpy_voxelspacing() -> None:
    pred, gt = _pair()
    ours = M.hd95(pred, gt, spacing=SPACING)
    ref = mb.hd95(pred, gt, voxelspacing=SPACING)
    assert abs(ours - ref) <= 1e-12
    assert abs(ours - 3.104834939252005) < 1e-12  # pinned: above the 3 mm of one step along the coarse axis
    assert abs(M.hd95(pred, gt) - mb.hd95(pred, gt)) <= 1e-12 and M.hd95(pred, gt) < ours  # voxels differ
    assert M.distance_unit(SPACING) == "mm" and M.distance_unit(None) == "px"


def test_hd95_of_slices_stacked_on_axis_0_uses_stacked_spacing() -> None:
    pred, gt = _pair()
    geo = VolumeGeometry("x.nii.gz", gt.shape, tuple(map(tuple, np.eye(4))), SPACING, axis=2)
    stack_p = np.stack([geo.take(pred, z) for z in range(geo.depth)])
    stack_g = np.stack([geo.take(gt, z) for z in range(geo.depth)])
    assert geo.stacked_spacing == (3.0, 0.8, 0.7)
    assert abs(M.hd95(stack_p, stack_g, spacing=geo.stacked_spacing)
               - mb.hd95(pred, gt, voxelspacing=SPACING)) <= 1e-12
