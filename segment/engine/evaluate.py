"""Evaluation: metrics of a model on evaluation items, written into the run store, and the summary.

Dice, IoU and HD95 per foreground class per image (per volume for 3-D data) at original
resolution, plus the GlaS object metrics per test part when the data has instance labels
(``segment.metrics``). Takes a model and data, never a trainer: ``biorules segment eval`` and the
trainer's validation and test both call :func:`evaluate_items`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from biorules.errors import InputError
from biorules.store import STATUS, check_replaceable, replace_written
from segment import metrics as M
from segment import results as R
from segment.data import Dataset, DatasetInfo, Record, open_dataset, verify
from segment.data.pipeline import EvalItem, eval_items
from segment.data.splits import Split, make_splits
from segment.engine.distributed import resolve_device
from segment.engine.inference import models_from_checkpoints, predict_items


@dataclass
class EvalResult:
    """Per-unit (image or volume) metrics, shape (units, classes), and object metrics per part."""

    ids: list[str]
    parts: list[str]
    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray
    objects: dict[str, dict[str, float]]


def open_verified(name: str, data_dir: str | None, progress: bool = False) -> Dataset:
    """Open and verify a dataset; its first problem (and how many more) is an InputError."""
    ds = open_dataset(name, data_dir)
    problems = verify(ds, progress=progress)
    if problems:
        more = f" (and {len(problems) - 1} more; `biorules segment verify` lists all)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)
    return ds


def select(records: Sequence[Record], ids: Sequence[str]) -> list[Record]:
    """The records of ``ids``, in that order."""
    by_id = {r.id: r for r in records}
    return [by_id[i] for i in ids]


def image_units(ds: Dataset, splits: Sequence[Split]) -> tuple[list[str], list[str]]:
    """The store's ``image`` coordinate: test images (volumes for 3-D data) over all splits, and their parts."""
    by_id = {r.id: r for r in ds.records}
    seen: dict[str, str] = {}
    for sp in splits:
        for i in sp.test:
            r = by_id[i]
            seen.setdefault(r.volume or r.id, r.part)
    order = [r.volume or r.id for r in ds.records if (r.volume or r.id) in seen]
    uniq = list(dict.fromkeys(order))
    return uniq, [seen[u] for u in uniq]


def evaluate_items(model: nn.Module, items: list[EvalItem], info: DatasetInfo, device: torch.device, *,
                   batch: int = 8, tta: bool = False, amp: str = "auto", empty: str = "strict",
                   with_hd95: bool = True, with_objects: bool = True, min_area: int = 0,
                   window: int | None = None) -> EvalResult:
    """Dice/IoU/HD95 per foreground class per image (per volume for 3-D data), plus GlaS object
    metrics per part when the data has instance labels."""
    preds = predict_items(model, items, info, device, batch, tta, amp, window)
    return score_predictions(items, preds, info, empty=empty, with_hd95=with_hd95, with_objects=with_objects,
                             min_area=min_area)


def score_predictions(items: list[EvalItem], preds: list[np.ndarray], info: DatasetInfo, *, empty: str = "strict",
                      with_hd95: bool = True, with_objects: bool = True, min_area: int = 0) -> EvalResult:
    """The metrics of label maps ``preds`` (one per item, original resolution) against the items."""
    units: dict[str, list[int]] = {}
    for k, it in enumerate(items):
        units.setdefault(it.record.volume or it.record.id, []).append(k)
    classes = range(1, info.num_classes)
    ids, parts, rows = [], [], []
    for uid, ks in units.items():
        if items[ks[0]].record.volume is not None:
            ks = sorted(ks, key=lambda k: items[k].record.key or 0)
            pred = np.stack([preds[k] for k in ks])
            gt = np.stack([items[k].mask for k in ks])
        else:
            pred, gt = preds[ks[0]], items[ks[0]].mask
        spacing = items[ks[0]].spacing  # mm for NIfTI volumes, else pixels
        rows.append([M.pixel_metrics(pred == c, gt == c, spacing=spacing, empty=empty, with_hd95=with_hd95)
                     for c in classes])
        ids.append(uid)
        parts.append(items[ks[0]].record.part)
    arr = np.asarray(rows, dtype=np.float64).reshape(len(ids), len(classes), 3)
    objects: dict[str, dict[str, float]] = {}
    if with_objects and info.instances:
        by_part: dict[str, list] = {}
        for it, p in zip(items, preds, strict=True):
            if it.instances is not None:
                by_part.setdefault(it.record.part, []).append((p > 0, it.instances))
        objects = {part: M.object_metrics(pairs, min_area) for part, pairs in by_part.items()}
    return EvalResult(ids, parts, arr[..., 0], arr[..., 1], arr[..., 2], objects)


def nanmean0(a: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN where a column has no finite value (no warning)."""
    with np.errstate(all="ignore"):
        cnt = np.isfinite(a).sum(0)
        return np.where(cnt > 0, np.nansum(a, 0) / np.maximum(cnt, 1), np.nan)


def write_test(out: Path, k: int, ev: EvalResult, images: list[str], dims, best_epoch: int) -> None:
    """Write a split's per-image test metrics, object metrics, best epoch and status ``done``."""
    pos = {u: i for i, u in enumerate(images)}
    shape = (1, len(images), ev.dice.shape[1])
    vals = {name: np.full(shape, np.nan) for name in ("test_dice", "test_iou", "test_hd95")}
    for j, uid in enumerate(ev.ids):
        vals["test_dice"][0, pos[uid]] = ev.dice[j]
        vals["test_iou"][0, pos[uid]] = ev.iou[j]
        vals["test_hd95"][0, pos[uid]] = ev.hd95[j]
    if "test_object_f1" in dims:
        parts = list(R.open_results(out)["part"].values)
        for name, key in (("test_object_f1", "object_f1"), ("test_object_dice", "object_dice"),
                          ("test_object_hausdorff", "object_hausdorff")):
            vals[name] = np.array([[ev.objects.get(p, {}).get(key, np.nan) for p in parts]])
    vals["best_epoch"] = np.array([best_epoch], np.int64)
    vals["status"] = np.array([STATUS["done"]], np.int8)
    R.write_region(out, vals, {R.split_dim(dims): slice(k, k + 1)}, dims)


def summarize(ds) -> dict:
    """Test Dice/IoU/HD95 per class (mean over images, then mean ± sd over splits, ddof 1), the
    object metrics per part, and the count of NaN HD95 values (one mask empty)."""
    status = ds["status"].values
    done = status == STATUS["done"]
    out: dict = {"splits_done": int(done.sum()), "splits_diverged": int((status == STATUS["diverged"]).sum()),
                 "splits_failed": int((status == STATUS["failed"]).sum()), "classes": {}, "objects": {}}
    if "epoch_time" in ds:
        out["time"] = timing(ds)
    if not done.any():
        return out
    sub = ds.isel({R.split_dim(ds): np.flatnonzero(done)})
    for c in [str(v) for v in ds["class"].values]:
        entry = {}
        for var in ("test_dice", "test_iou", "test_hd95"):
            per_split = sub[var].sel({"class": c}).mean("image", skipna=True).values
            entry[var.removeprefix("test_")] = _mean_sd(per_split)
        entry["hd95_nan"] = int(np.isnan(sub["test_hd95"].sel({"class": c}).values).sum()
                                - np.isnan(sub["test_dice"].sel({"class": c}).values).sum())
        out["classes"][c] = entry
        img_parts = [str(v) for v in ds["image_part"].values]
        if len(set(img_parts)) > 1:
            for p in sorted(set(img_parts)):
                sel = sub["test_dice"].sel({"class": c}).isel(image=[i for i, q in enumerate(img_parts) if q == p])
                entry.setdefault("dice_by_part", {})[p] = _mean_sd(sel.mean("image", skipna=True).values)
    if "part" in ds.dims:
        for p in [str(v) for v in ds["part"].values]:
            out["objects"][p] = {var.removeprefix("test_"): _mean_sd(sub[var].sel(part=p).values)
                                 for var in ("test_object_f1", "test_object_dice", "test_object_hausdorff")}
    out["best_epoch"] = [int(v) for v in sub["best_epoch"].values]
    return out


def diverged_splits(ds) -> list[str]:
    """``NAME (epoch E)`` for every diverged split of a training store, E the first epoch without a finite loss."""
    names = [str(v) for v in ds["split_name"].values]
    out = []
    for k in np.flatnonzero(ds["status"].values == STATUS["diverged"]):
        done = int(np.isfinite(ds["train_loss"].values[k]).sum()) if "train_loss" in ds else 0
        out.append(f"{names[k]} (epoch {done + 1})")
    return out


def timing(ds) -> dict:
    """Wall-time parts of a training store, summed over splits (s): warm-up/compilation, training
    epochs, validation, test; the median training throughput (img/s) and the step implementation."""
    total = lambda name: float(np.nansum(ds[name].values)) if name in ds else math.nan  # noqa: E731
    ips = ds["train_images_per_second"].values
    return {"step": str(ds.attrs.get("train_step", "eager")), "compile_s": total("compile_time"),
            "train_s": total("epoch_time"), "val_s": total("val_time"), "test_s": total("test_time"),
            "train_images_per_second": float(np.nanmedian(ips)) if np.isfinite(ips).any() else math.nan}


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    return (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan)


def evaluate_checkpoint(checkpoint: str | Path | Sequence[str | Path], *, dataset: str | None = None,
                        data_dir: str | None = None, split: str = "auto", split_seed: int = 0, tta: bool = False,
                        empty: str = "strict", min_area: int = 0, device: str = "auto", batch: int = 8,
                        out: str | Path | None = None, overwrite: bool = False, progress: bool = False,
                        command: Sequence[str] | None = None, window: bool = False, folds: int = 0,
                        fold: int | None = None):
    """Test a checkpoint (several: their ensemble, the mean of their softmax) on a dataset's test
    split, or on fold ``fold`` of ``folds``; per-image metrics as an xarray Dataset (written to
    ``out`` when given), HD95 in mm for NIfTI volumes. ``window``: sliding window at each image's
    own resolution (``predict_window``) instead of the whole image resized to the training size."""
    if empty not in M.POLICIES:
        raise InputError(f"--empty must be one of {', '.join(M.POLICIES)}")
    if folds and fold is None:
        raise InputError(f"--folds {folds} needs --fold k: the fold whose test part the checkpoint did not see")
    if out is not None:
        check_replaceable(out, "--out")  # an existing --out is ours (a store); its options are compared below
    dev = resolve_device(device)
    model, meta = models_from_checkpoints(checkpoint, dev)
    name = dataset or str(meta["dataset"])
    ds = open_verified(name, data_dir, progress)
    if ds.info.in_channels != int(meta["in_channels"]) or ds.info.num_classes != int(meta["num_classes"]):
        raise InputError(f"--checkpoint {checkpoint}: trained on {meta['dataset']} "
                         f"({meta['in_channels']} channels, {meta['num_classes']} classes), does not fit {name}")
    sp = make_splits(ds, split, split_seed, 1, folds=folds, fold=fold)[0]
    size = int(meta["size"])
    items = eval_items(ds, select(ds.records, sp.test), size, native=window)
    ev = evaluate_items(model, items, ds.info, dev, batch=batch, tta=tta, empty=empty, min_area=min_area,
                        window=size if window else None)
    images, parts = image_units(ds, [sp])
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    cfg = {"checkpoint": ",".join(str(p) for p in paths), "dataset": name, "data_dir": data_dir, "split": split,
           "split_seed": split_seed, "tta": tta, "window": window, "empty": empty, "min_area": min_area, "size": size,
           "model": str(meta["model"]), "folds": folds, "fold": fold}
    tparts = sorted(set(parts)) if ds.info.instances else None
    tmpl = R.template(split_names=[sp.name], split_seeds=[sp.seed], epochs=0, classes=list(ds.info.class_names),
                      images=images, image_parts=parts, parts=tparts, attrs=R.run_attrs(cfg, [sp.to_json()], command, dev),
                      split_folds=[sp.fold], hd95_units=ds.hd95_units)
    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "eval.zarr"
            R.create(path, tmpl)
            write_test(path, 0, ev, images, R.all_dims(tmpl), -1)
            return R.open_results(path).load()
    out = Path(out)
    if out.exists() and not overwrite:
        _check_same_evaluation(out, tmpl.attrs["config"])
    replace_written(out, "--out")  # the same evaluation again (or --overwrite): recomputed into it
    out.parent.mkdir(parents=True, exist_ok=True)
    R.create(out, tmpl)
    write_test(out, 0, ev, images, R.all_dims(tmpl), -1)
    return R.open_results(out)


def _check_same_evaluation(out: Path, config: str) -> None:
    """An existing evaluation store is recomputed only for the same options; else one line naming them."""
    import json

    from biorules.store import config_diff

    old = str(R.open_results(out).attrs.get("config", "{}"))
    if json.loads(old) != json.loads(config):
        raise InputError(f"--out {out} holds an evaluation with other options ({config_diff(old, config)}); "
                         "pass --overwrite to replace it or choose another --out")
