"""Training, evaluation and prediction loops for RWKV-UNet (docs/rwkv-unet.md).

Training minimises w_ce·CE + w_dice·soft-Dice (``segment.losses``) with AdamW and a per-iteration
learning rate, poly lr_t = lr·(1 − t/T)^0.9 or cosine lr_t = lr·½(1 + cos(πt/T)), t the
iteration and T = epochs × iterations per epoch. Gradients are clipped to a global norm; bf16
autocast is used on CUDA. Every epoch: validation Dice at original resolution, the epoch row of the
store, and a checkpoint written atomically (tmp file + ``os.replace``); the best validation epoch
(mean foreground Dice; the last epoch without a validation set) is tested at the end.

Randomness (shuffling, augmentation draws, drop-path) is re-seeded from (seed, epoch) at the start
of every epoch, so a run resumed from an epoch checkpoint ends with the numbers of an uninterrupted
run on the same machine. Under ``torchrun`` (``WORLD_SIZE`` > 1) the global batch is split across
ranks (gloo on CPU, NCCL on CUDA); loss statistics and BatchNorm statistics are summed over ranks,
so every rank computes the loss of the global batch; rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from biorules.errors import DivergedError, InputError
from biorules.store import STATUS, check_replaceable, mark_checkpoints, replace_written
from segment import metrics as M
from segment import results as R
from segment.data import Dataset, DatasetInfo, Record, open_dataset, verify
from segment.data import augment as A
from segment.data.pipeline import EvalItem, TrainSet, eval_items, normalise
from segment.data.splits import Split, make_splits
from segment.dwconv import BACKENDS as DW_BACKENDS
from segment.losses import LossWeights, ce_dice_loss

#: per-dataset (epochs, batch) defaults (docs/rwkv-unet.md); the demo is sized for a CPU
RECIPES: dict[str, tuple[int, int]] = {
    "demo": (40, 4), "glas": (300, 8), "busi": (300, 8), "kvasir": (300, 8), "cvc-clinicdb": (300, 8),
    "cvc-colondb": (300, 8), "isic2017": (100, 16), "synapse": (30, 24), "acdc": (150, 24),
}
SCHEDULES = ("poly", "cosine")
AMP_MODES = ("auto", "bf16", "off")


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; serialised into the store attrs and the checkpoints.

    ``lr`` and ``weight_decay`` are AdamW's (1/iteration scale, dimensionless); ``size`` in pixels;
    ``clip_grad`` is the max global gradient norm (0: off); ``epochs``/``batch`` None take the
    dataset recipe; ``batch`` is the global batch (split over DDP ranks); ``drop_path`` (None:
    the model's) sets the encoder and CCM drop-path rates; ``binary_softmax`` gives binary data two
    logits (softmax, CE + Dice over both classes) instead of one (sigmoid, BCE + Dice); ``encoder``
    is the path of an official ImageNet encoder to start from; ``dwconv`` picks the depthwise-conv
    backend (``segment.dwconv``).
    """

    dataset: str = "demo"
    data_dir: str | None = None
    model: str = "rwkv_unet_t"
    size: int = 128
    epochs: int | None = None
    batch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"
    ce_weight: float = 0.5
    dice_weight: float = 0.5
    augment: bool = True
    split: str = "auto"
    split_seed: int = 0
    splits: int = 1
    seed: int = 0
    clip_grad: float = 1.0
    amp: str = "auto"
    wkv: str = "auto"
    dwconv: str = "auto"
    encoder: str | None = None
    drop_path: float | None = None
    tta: bool = False
    binary_softmax: bool = False
    empty: str = "strict"
    min_area: int = 0
    device: str = "auto"

    def resolved(self) -> TrainConfig:
        """The config with the dataset recipe filled in and every value checked."""
        if self.dataset not in RECIPES:
            raise InputError(f"--dataset: unknown dataset {self.dataset!r} (choose from {', '.join(RECIPES)})")
        epochs, batch = RECIPES[self.dataset]
        cfg = replace(self, epochs=self.epochs or epochs, batch=self.batch or batch)
        checks = [
            (cfg.size >= 16 and cfg.size % 16 == 0, "--size must be a positive multiple of 16"),
            (cfg.epochs >= 1, "--epochs must be >= 1"),
            (cfg.batch >= 1, "--batch must be >= 1"),
            (cfg.lr > 0, "--lr must be > 0"),
            (cfg.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (cfg.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
            (cfg.dwconv in DW_BACKENDS, f"--dwconv must be one of {', '.join(DW_BACKENDS)}"),
            (cfg.empty in M.POLICIES, f"--empty must be one of {', '.join(M.POLICIES)}"),
            (cfg.splits >= 1, "--splits must be >= 1"),
            (cfg.ce_weight >= 0 and cfg.dice_weight >= 0 and cfg.ce_weight + cfg.dice_weight > 0,
             "--ce-weight/--dice-weight must be >= 0 and not both 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------- devices, DDP


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available")
    return torch.device(name)


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    rank, size = world()
    if size > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return rank, size, device


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in favour of a non-differentiable private API
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are summed over the process group (any device).

    mean = Σx/N, var = Σx²/N − mean² over all ranks (differentiable all-reduce); running
    statistics use the unbiased N/(N−1) variance, as ``nn.BatchNorm2d`` does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        n_local = torch.full((1,), x.numel() / c, dtype=torch.float32, device=x.device)
        stats = _all_reduce_sum(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n_local]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(float(n) - 1, 1.0))
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` by a :class:`GlobalBatchNorm2d` with the same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(next(child.buffers(), torch.zeros(())).device)
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


# --------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` with ``torch.save`` to a tmp file, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``; InputError naming the file if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--checkpoint {path}: file not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unpickling/zip error: the file is not a checkpoint
        raise InputError(f"--checkpoint {path}: not a readable checkpoint") from None
    if not isinstance(ck, dict):
        raise InputError(f"--checkpoint {path}: expected a dict, found {type(ck).__name__}")
    return ck


def unwrap_state(ck: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: unwrap ``model``/``state_dict``/``net``/``state_dict_ema``
    and strip a ``module.`` prefix."""
    state = ck
    for key in ("model", "state_dict", "net", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly; missing or unexpected keys (or shape mismatches) are an InputError naming them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label} keys: {shown}")
        raise InputError(f"checkpoint {source} does not fit {getattr(model, 'name', 'the model')}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of the store ``out`` go: ``run.zarr`` -> ``run.ckpt/``."""
    out = Path(out)
    return out.with_suffix(".ckpt") if out.suffix == ".zarr" else out.with_name(out.name + ".ckpt")


# --------------------------------------------------------------------------------- model, lr


def build_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The variant of ``cfg`` for the data's channels and classes; with ``cfg.encoder`` the encoder
    starts from that official ImageNet checkpoint (``net_{B,S,T}.pth``, docs/rwkv-unet.md, strict)."""
    from segment.model import create_model

    model = create_model(cfg.model, in_channels=info.in_channels, num_classes=n_logits(cfg, info), wkv=cfg.wkv,
                         dwconv=cfg.dwconv, drop_path_rate=cfg.drop_path, ccm_drop_path=cfg.drop_path)
    if cfg.encoder:
        from segment.pretrained import load_official_encoder

        load_official_encoder(model, cfg.encoder)
    return model


def _check_kernels(cfg: TrainConfig, device: torch.device) -> None:
    """--wkv / --dwconv triton need CUDA and Triton; say so before anything is written."""
    from segment import dwconv, wkv

    for option, value, available in (("--wkv", cfg.wkv, wkv.triton_available),
                                      ("--dwconv", cfg.dwconv, dwconv.triton_available)):
        if value == "triton" and not (device.type == "cuda" and available()):
            raise InputError(f"{option} triton needs a CUDA device and an importable Triton (device: {device})")


def n_logits(cfg: TrainConfig, info: DatasetInfo) -> int:
    """Output channels: 1 for binary data (2 with ``binary_softmax``), else one per class."""
    return 2 if info.binary and cfg.binary_softmax else info.model_classes


def lr_at(it: int, total: int, base: float, schedule: str) -> float:
    """Learning rate after ``it`` of ``total`` iterations (poly 0.9 or cosine, to 0)."""
    frac = min(it / max(total, 1), 1.0)
    if schedule == "poly":
        return base * (1.0 - frac) ** 0.9
    return base * 0.5 * (1.0 + math.cos(math.pi * frac))


def model_meta(cfg: TrainConfig, info: DatasetInfo) -> dict:
    """What predict/eval need to rebuild the model and its input pipeline from a checkpoint."""
    return {"model": cfg.model, "dataset": info.name, "in_channels": info.in_channels,
            "num_classes": info.num_classes, "logits": n_logits(cfg, info), "class_names": list(info.class_names),
            "size": cfg.size,
            "mean": list(info.mean), "std": list(info.std), "wkv": cfg.wkv}


def _memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where the depthwise kernels and cuDNN read NHWC natively; NCHW elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _autocast(device: torch.device, amp: str):
    use = device.type == "cuda" and amp in ("auto", "bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use)


# --------------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, tta: bool = False, amp: str = "auto") -> torch.Tensor:
    """Class probabilities (B, K, H, W) (K = 1: foreground probability) of normalised images;
    ``tta`` averages over the 4 flips (none, H, V, HV)."""
    flips: Sequence[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if tta else [()]
    acc = None
    for f in flips:
        x = images.flip(f) if f else images
        with _autocast(images.device, amp):
            logits = model(x).float()
        p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
        p = p.flip(f) if f else p
        acc = p if acc is None else acc + p
    return acc / len(flips)


#: sliding window (docs/rwkv-unet.md, as nnU-Net): tiles overlap by half, Gaussian weights σ = tile/8
WINDOW_OVERLAP = 0.5
WINDOW_SIGMA = 0.125


@torch.no_grad()
def predict_window(model: nn.Module, image: torch.Tensor, tile: int, *, tta: bool = False, amp: str = "auto",
                   batch: int = 4) -> torch.Tensor:
    """Class probabilities (1, K, H, W) of one normalised image (1, C, H, W) at its own resolution.

    Tiles of tile × tile (the training size) step by tile/2; each tile's probabilities
    (``predict_probs``, so flips too with ``tta``) are averaged with Gaussian weights of
    σ = tile/8 centred on the tile; images smaller than a tile are padded. MONAI's
    ``sliding_window_inference`` does the tiling and the weighting.
    """
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(image, roi_size=(tile, tile), sw_batch_size=batch,
                                   predictor=lambda t: predict_probs(model, t, tta, amp), overlap=WINDOW_OVERLAP,
                                   mode="gaussian", sigma_scale=WINDOW_SIGMA)
    return torch.as_tensor(out)


def probs_to_labels(p: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) probabilities -> (H, W) class ids at ``shape`` (bilinear, threshold 0.5 / argmax)."""
    if tuple(p.shape[-2:]) != tuple(shape):
        p = F.interpolate(p[None], size=shape, mode="bilinear", align_corners=False)[0]
    if p.shape[0] == 1:
        return (p[0] >= 0.5).cpu().numpy().astype(np.int64)
    return p.argmax(0).cpu().numpy().astype(np.int64)


def predict_items(model: nn.Module, items: list[EvalItem], info: DatasetInfo, device: torch.device, batch: int = 8,
                  tta: bool = False, amp: str = "auto", window: int | None = None) -> list[np.ndarray]:
    """Label maps at original resolution for evaluation items; with ``window`` (the tile side) the
    items hold images at their own resolution and each is predicted by sliding window."""
    model.eval()
    out: list[np.ndarray] = []
    if window:
        for it in items:
            x = normalise(it.image[None].to(device), info.mean, info.std)
            out.append(probs_to_labels(predict_window(model, x, window, tta=tta, amp=amp, batch=batch)[0],
                                       it.mask.shape))
        return out
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        x = normalise(torch.stack([it.image for it in chunk]).to(device), info.mean, info.std)
        probs = predict_probs(model, x, tta, amp)
        out += [probs_to_labels(probs[j], it.mask.shape) for j, it in enumerate(chunk)]
    return out


@dataclass
class EvalResult:
    """Per-unit (image or volume) metrics, shape (units, classes), and object metrics per part."""

    ids: list[str]
    parts: list[str]
    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray
    objects: dict[str, dict[str, float]]


def evaluate_items(model: nn.Module, items: list[EvalItem], info: DatasetInfo, device: torch.device, *,
                   batch: int = 8, tta: bool = False, amp: str = "auto", empty: str = "strict",
                   with_hd95: bool = True, with_objects: bool = True, min_area: int = 0,
                   window: int | None = None) -> EvalResult:
    """Dice/IoU/HD95 per foreground class per image (per volume for 3-D data), plus GlaS object
    metrics per part when the data has instance labels."""
    preds = predict_items(model, items, info, device, batch, tta, amp, window)
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
        rows.append([M.pixel_metrics(pred == c, gt == c, empty=empty, with_hd95=with_hd95) for c in classes])
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


# --------------------------------------------------------------------------------- training


@dataclass
class SplitOutcome:
    best_epoch: int
    test: EvalResult | None


def _select(records: Sequence[Record], ids: Sequence[str]) -> list[Record]:
    by_id = {r.id: r for r in records}
    return [by_id[i] for i in ids]


def prepare(cfg: TrainConfig, progress: bool = False) -> tuple[Dataset, list[Split]]:
    """Open and verify the dataset and build the splits; InputError on any problem."""
    ds = open_dataset(cfg.dataset, cfg.data_dir)
    problems = verify(ds, progress=progress)
    if problems:
        more = f" (and {len(problems) - 1} more; `biorules segment verify` lists all)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)
    return ds, make_splits(ds, cfg.split, cfg.split_seed, cfg.splits)


def _test_units(ds: Dataset, splits: list[Split]) -> tuple[list[str], list[str]]:
    by_id = {r.id: r for r in ds.records}
    seen: dict[str, str] = {}
    for sp in splits:
        for i in sp.test:
            r = by_id[i]
            seen.setdefault(r.volume or r.id, r.part)
    order = [r.volume or r.id for r in ds.records if (r.volume or r.id) in seen]
    uniq = list(dict.fromkeys(order))
    return uniq, [seen[u] for u in uniq]


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = False, echo: Callable[[str], None] | None = None, command: Sequence[str] | None = None,
          on_epoch_end: Callable[[int, int], None] | None = None):
    """Train, select on validation and test, for every split; results into the zarr store ``out``.

    Returns the store opened with xarray. ``resume`` continues from the checkpoints next to the
    store (``checkpoint_dir(out)``); ``on_epoch_end(split, epoch)`` is called after each epoch's
    checkpoint is written.
    """
    cfg = config.resolved()
    say = echo or (lambda _m: None)
    device = resolve_device(cfg.device)
    own_group = not (dist.is_available() and dist.is_initialized())
    rank, size, device = init_distributed(device)
    try:
        return _train(cfg, out, resume, overwrite, progress, say, command, on_epoch_end, device, rank, size)
    finally:
        if own_group and size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, out, resume: bool, overwrite: bool, progress: bool, say, command, on_epoch_end,
           device: torch.device, rank: int, size: int):
    import xarray as xr

    if cfg.batch % size:
        raise InputError(f"--batch {cfg.batch} is not divisible by the {size} DDP processes")
    out = Path(out)
    ckdir = checkpoint_dir(out)
    if out.exists() and not (resume or overwrite):
        raise InputError(f"--out {out} exists; pass --resume to continue it or --overwrite to replace it")
    if overwrite and not resume:  # refused before any work: --overwrite replaces only our own outputs
        check_replaceable(out, "--out")
        check_replaceable(ckdir, "--out's checkpoint folder")
    ds, splits = prepare(cfg, progress=progress and rank == 0)
    info = ds.info
    if info.name == "cvc-clinicdb" and splits[0].seed >= 0:
        from segment.data.cvc import LEAK_WARNING

        say(f"warning: {LEAK_WARNING}")
    build_model(cfg, info)  # an unknown model name or an unfit --encoder fails here, before anything is written
    _check_kernels(cfg, device)
    images, image_parts = _test_units(ds, splits)
    test_parts = sorted({p for p in image_parts}) if info.instances else None
    attrs = R.run_attrs(cfg.to_dict(), [s.to_json() for s in splits], command, device)
    tmpl = R.template(split_names=[s.name for s in splits], split_seeds=[s.seed for s in splits], epochs=cfg.epochs,
                      classes=list(info.class_names), images=images, image_parts=image_parts, parts=test_parts,
                      attrs=attrs)
    if rank == 0:
        if out.exists() and resume:
            old = R.open_results(out)
            if old.attrs.get("config") != attrs["config"]:
                a, b = json.loads(old.attrs.get("config", "{}")), cfg.to_dict()
                defaults = TrainConfig().to_dict()  # options added since the store was made: their default
                diff = sorted(k for k in b if a.get(k, defaults.get(k)) != b[k])
                if diff or not a:
                    raise InputError(f"--out {out} holds a run with other options ({', '.join(diff) or 'unknown'}); "
                                     "repeat them to resume it, pass --overwrite to replace it, or choose another --out")
        else:
            replace_written(out, "--out")
            replace_written(ckdir, "--out's checkpoint folder")
            out.parent.mkdir(parents=True, exist_ok=True)
            R.create(out, tmpl)
        mark_checkpoints(ckdir)
    if size > 1:
        dist.barrier()
    dims = R.all_dims(tmpl)
    status = R.open_results(out)["status"].values
    for k, sp in enumerate(splits):
        if int(status[k]) == STATUS["done"]:
            say(f"split {sp.name}: done, skipped")
            continue
        try:
            _train_split(cfg, ds, sp, k, out, ckdir, dims, images, device, rank, size, progress, say, on_epoch_end)
        except Exception as e:  # never leave the split marked running: it diverged or failed
            if rank == 0 and not isinstance(e, InputError):
                code = STATUS["diverged"] if isinstance(e, DivergedError) else STATUS["failed"]
                R.write_region(out, {"status": np.array([code], np.int8)}, {"split": slice(k, k + 1)}, dims)
            raise
    if size > 1:
        dist.barrier()
    return R.open_results(out) if rank == 0 else xr.Dataset()


def _train_split(cfg: TrainConfig, ds: Dataset, sp: Split, k: int, out: Path, ckdir: Path, dims, images: list[str],
                 device: torch.device, rank: int, size: int, progress: bool, say, on_epoch_end) -> None:
    from tqdm.auto import tqdm

    info = ds.info
    last_path, best_path = ckdir / f"split{k}_last.pt", ckdir / f"split{k}_best.pt"
    torch.manual_seed(cfg.seed)
    fmt = _memory_format(device)
    model = build_model(cfg, info).to(device, memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best_epoch, best_score = 1, -1, -math.inf
    if last_path.is_file():
        ck = read_checkpoint(last_path)
        load_state_strict(model, unwrap_state(ck), str(last_path))
        opt.load_state_dict(ck["optimizer"])
        start, best_epoch, best_score = int(ck["epoch"]) + 1, int(ck["best_epoch"]), float(ck["best_score"])
        say(f"split {sp.name}: resuming after epoch {start - 1}")
    train_set = TrainSet.build(ds, _select(ds.records, sp.train), cfg.size)
    val_items = eval_items(ds, _select(ds.records, sp.val), cfg.size) if rank == 0 else []
    n = len(train_set)
    gbatch = min(cfg.batch, n - n % size) if n >= size else 0
    if gbatch < size:
        raise InputError(f"split {sp.name}: {n} training images, too few for {size} processes")
    gbatch -= gbatch % size
    local = gbatch // size
    iters = n // gbatch
    total = cfg.epochs * iters
    ddp_model: nn.Module = model
    sync = None
    if size > 1:
        model = convert_batchnorm(model) if device.type != "cuda" else nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        sync = _all_reduce_sum
    weights = LossWeights(cfg.ce_weight, cfg.dice_weight)
    fg = info.num_classes - 1
    for epoch in range(start, cfg.epochs + 1):
        if rank == 0:
            R.write_region(out, {"status": np.array([STATUS["running"]], np.int8)}, {"split": slice(k, k + 1)}, dims)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + 7)
        perm = torch.randperm(n, generator=gen)
        params = A.sample_params(iters * gbatch, gen) if cfg.augment else None
        ddp_model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # read once per epoch: no
        dstats = torch.zeros(3, fg, dtype=torch.float64, device=device)  # per-step host sync
        bar = tqdm(range(iters), desc=f"{sp.name} epoch {epoch}/{cfg.epochs}", disable=not (progress and rank == 0),
                   leave=False, unit="it")
        try:
            for i in bar:
                lo = i * gbatch + rank * local
                idx = perm[lo:lo + local]
                x, y = train_set.batch(idx)
                x, y = x.to(device), y.to(device)
                if params is not None:
                    x, y = A.apply(x, y, A.slice_params(params, slice(lo, lo + local)))
                x = normalise(x, info.mean, info.std).contiguous(memory_format=fmt)
                lr = lr_at((epoch - 1) * iters + i, total, cfg.lr, cfg.schedule)
                for group in opt.param_groups:
                    group["lr"] = lr
                with _autocast(device, cfg.amp):
                    logits = ddp_model(x)
                loss = ce_dice_loss(logits.float(), y, weights, sync)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
                loss_sum += loss.detach().double()
                with torch.no_grad():
                    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
                    for c in range(1, fg + 1):
                        pc, gc = pred == c, y == c
                        dstats[:, c - 1] += torch.stack([(pc & gc).sum(), pc.sum(), gc.sum()]).double()
                if not bar.disable and (i % 10 == 9 or i == iters - 1):
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        except (RuntimeError, ValueError) as e:  # a forward pass on weights that are no longer finite
            if not _finite_parameters(model):
                raise _diverged(sp, epoch, cfg) from e
            raise
        bar.close()
        if size > 1:
            dist.all_reduce(dstats)
        dstats = dstats.cpu()
        loss_sum = float(loss_sum)
        if not math.isfinite(loss_sum):
            raise _diverged(sp, epoch, cfg)
        elapsed = time.perf_counter() - t0
        if rank == 0:
            row = {
                "train_loss": np.array([[loss_sum / iters]]),
                "lr": np.array([[lr]]),
                "epoch_time": np.array([[elapsed]]),
                "train_images_per_second": np.array([[iters * gbatch / elapsed]]),
                "train_dice": (2 * dstats[0] / (dstats[1] + dstats[2]).clamp_min(1e-12)).numpy()[None, None],
            }
            score = math.nan
            if val_items:
                ev = evaluate_items(model, val_items, info, device, batch=max(local, 1), amp=cfg.amp, empty=cfg.empty,
                                    with_hd95=False, with_objects=False)
                vd, vi = _nanmean0(ev.dice), _nanmean0(ev.iou)
                row["val_dice"], row["val_iou"] = vd[None, None], vi[None, None]
                score = float(np.nanmean(vd)) if np.isfinite(vd).any() else -math.inf
            if not val_items or best_epoch < 0 or score > best_score:
                best_epoch, best_score = epoch, (score if val_items else best_score)
                save_checkpoint(best_path, {"model": model.state_dict(), "epoch": epoch, "meta": model_meta(cfg, info),
                                            "config": json.dumps(cfg.to_dict(), sort_keys=True)})
            R.write_region(out, row, {"split": slice(k, k + 1), "epoch": slice(epoch - 1, epoch)}, dims)
            save_checkpoint(last_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "best_epoch": best_epoch, "best_score": best_score, "meta": model_meta(cfg, info),
                "config": json.dumps(cfg.to_dict(), sort_keys=True),
            })
            vtxt = f", val Dice {np.nanmean(row['val_dice']):.4f}" if "val_dice" in row else ""
            say(f"{sp.name} epoch {epoch}/{cfg.epochs}: loss {loss_sum / iters:.4f}{vtxt}, {elapsed:.1f} s")
        if size > 1:
            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(k, epoch)
    if rank == 0:
        if last_path.is_file():
            best_epoch = int(read_checkpoint(last_path)["best_epoch"])
        load_state_strict(model, unwrap_state(read_checkpoint(best_path)), str(best_path))
        test_items = eval_items(ds, _select(ds.records, sp.test), cfg.size)
        ev = evaluate_items(model, test_items, info, device, batch=max(local, 1), tta=cfg.tta, amp=cfg.amp,
                            empty=cfg.empty, min_area=cfg.min_area)
        write_test(out, k, ev, images, dims, best_epoch)
        say(f"{sp.name}: tested epoch {best_epoch}, test Dice {np.nanmean(ev.dice):.4f}")


def _finite_parameters(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _diverged(sp: Split, epoch: int, cfg: TrainConfig) -> DivergedError:
    return DivergedError(f"split {sp.name} diverged in epoch {epoch}: the loss or the weights are no longer finite; "
                         f"lower --lr (now {cfg.lr:g})")


def _nanmean0(a: np.ndarray) -> np.ndarray:
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
    R.write_region(out, vals, {"split": slice(k, k + 1)}, dims)


# --------------------------------------------------------------------------------- summary


def summarize(ds) -> dict:
    """Test Dice/IoU/HD95 per class (mean over images, then mean ± sd over splits, ddof 1), the
    object metrics per part, and the count of NaN HD95 values (one mask empty)."""
    done = ds["status"].values == STATUS["done"]
    out: dict = {"splits_done": int(done.sum()), "classes": {}, "objects": {}}
    if not done.any():
        return out
    sub = ds.isel(split=np.flatnonzero(done))
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


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    return (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan)


def config_from_dict(d: dict) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------------- predict, eval

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PALETTE = np.array([[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255], [255, 200, 0], [200, 64, 255],
                    [0, 200, 200], [255, 128, 0], [128, 128, 255]], np.uint8)


def model_from_checkpoint(path: str | Path, device: torch.device, wkv: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model recorded in a checkpoint's ``meta`` and load its weights strictly."""
    from segment.model import create_model

    ck = read_checkpoint(path)
    meta = ck.get("meta")
    if not isinstance(meta, dict) or "model" not in meta:
        raise InputError(f"--checkpoint {path}: no model description (not written by biorules segment)")
    k = int(meta.get("logits", 1 if int(meta["num_classes"]) == 2 else meta["num_classes"]))
    model = create_model(str(meta["model"]), in_channels=int(meta["in_channels"]), num_classes=k,
                         wkv=wkv or str(meta.get("wkv", "auto")))
    load_state_strict(model, unwrap_state(ck), str(path))
    return model.to(device, memory_format=_memory_format(device)).eval(), meta


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 blend of an image in [0, 1] (H, W, C) with class colours where labels > 0."""
    rgb = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
    rgb = (np.clip(rgb, 0, 1) * 255).astype(np.float32)
    col = PALETTE[np.clip(labels, 0, len(PALETTE) - 1)].astype(np.float32)
    fg = (labels > 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * col, rgb).round().astype(np.uint8)


def predict_folder(checkpoint: str | Path, input_dir: str | Path, out_dir: str | Path, *, tta: bool = False,
                   device: str = "auto", batch: int = 4, progress: bool = False, window: bool | None = None,
                   echo: Callable[[str], None] | None = None) -> list[Path]:
    """Segment every image in ``input_dir``; write ``NAME_mask.png`` (0/255 for binary, class ids
    otherwise) and ``NAME_overlay.png`` into ``out_dir``. Returns the written paths. ``window``:
    sliding window at each image's own resolution (``predict_window``) instead of resizing; None
    (the default) takes the window for images larger than the training size (resizing them whole
    merges small objects) and says so through ``echo``."""
    from PIL import Image
    from tqdm.auto import tqdm

    from segment.data.base import read_image
    from segment.data.pipeline import image_tensor, resize_image

    dev = resolve_device(device)
    model, meta = model_from_checkpoint(checkpoint, dev)
    src = Path(input_dir)
    if not src.is_dir():
        raise InputError(f"--input {src}: folder not found")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"--input {src}: no images ({', '.join(IMAGE_EXTS)})")
    channels, size = int(meta["in_channels"]), int(meta["size"])
    images = [read_image(p, channels) for p in files]  # decode all before writing anything
    dst = Path(out_dir)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--out {dst} exists and is not a folder")
    dst.mkdir(parents=True, exist_ok=True)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    windowed = [bool(window) if window is not None else max(im.shape[:2]) > size for im in images]
    if window is None and any(windowed) and echo is not None:
        echo(f"{sum(windowed)} of {len(images)} image(s) are larger than the training size {size}: predicted by "
             "sliding window at their own resolution (--resize resizes them whole instead)")
    rest = [i for i, w in enumerate(windowed) if not w]
    jobs = [[i] for i, w in enumerate(windowed) if w] + [rest[j:j + batch] for j in range(0, len(rest), batch)]
    written = []
    for idx in tqdm(jobs, desc="predict", disable=not progress, leave=False):
        chunk = [images[i] for i in idx]
        if windowed[idx[0]]:
            x = normalise(image_tensor(chunk[0])[None].to(dev), mean, std)
            probs = predict_window(model, x, size, tta=tta, batch=batch)
        else:
            x = normalise(torch.stack([resize_image(im, size) for im in chunk]).to(dev), mean, std)
            probs = predict_probs(model, x, tta)
        for j, im in enumerate(chunk):
            lab = probs_to_labels(probs[j], im.shape[:2])
            stem = files[idx[j]].stem
            mask = (lab * 255).astype(np.uint8) if int(meta["num_classes"]) == 2 else lab.astype(np.uint8)
            for name, arr in ((f"{stem}_mask.png", mask), (f"{stem}_overlay.png", overlay(im, lab))):
                Image.fromarray(arr).save(dst / name)
                written.append(dst / name)
    return written


def evaluate_checkpoint(checkpoint: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                        split: str = "auto", split_seed: int = 0, tta: bool = False, empty: str = "strict",
                        min_area: int = 0, device: str = "auto", batch: int = 8, out: str | Path | None = None,
                        overwrite: bool = False, progress: bool = False, command: Sequence[str] | None = None,
                        window: bool = False):
    """Test a checkpoint on a dataset's test split; per-image metrics as an xarray Dataset
    (written to ``out`` when given). ``window``: sliding window at each image's own resolution
    (``predict_window``) instead of the whole image resized to the training size."""
    if empty not in M.POLICIES:
        raise InputError(f"--empty must be one of {', '.join(M.POLICIES)}")
    if out is not None and Path(out).exists() and not overwrite:
        raise InputError(f"--out {out} exists; pass --overwrite to replace it")
    if out is not None:
        check_replaceable(out, "--out")
    dev = resolve_device(device)
    model, meta = model_from_checkpoint(checkpoint, dev)
    name = dataset or str(meta["dataset"])
    ds = open_dataset(name, data_dir)
    problems = verify(ds, progress=progress)
    if problems:
        more = f" (and {len(problems) - 1} more; `biorules segment verify` lists all)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)
    if ds.info.in_channels != int(meta["in_channels"]) or ds.info.num_classes != int(meta["num_classes"]):
        raise InputError(f"--checkpoint {checkpoint}: trained on {meta['dataset']} "
                         f"({meta['in_channels']} channels, {meta['num_classes']} classes), does not fit {name}")
    sp = make_splits(ds, split, split_seed, 1)[0]
    size = int(meta["size"])
    items = eval_items(ds, _select(ds.records, sp.test), size, native=window)
    ev = evaluate_items(model, items, ds.info, dev, batch=batch, tta=tta, empty=empty, min_area=min_area,
                        window=size if window else None)
    images, parts = _test_units(ds, [sp])
    cfg = {"checkpoint": str(checkpoint), "dataset": name, "data_dir": data_dir, "split": split,
           "split_seed": split_seed, "tta": tta, "window": window, "empty": empty, "min_area": min_area, "size": size,
           "model": str(meta["model"])}
    tparts = sorted(set(parts)) if ds.info.instances else None
    tmpl = R.template(split_names=[sp.name], split_seeds=[sp.seed], epochs=0, classes=list(ds.info.class_names),
                      images=images, image_parts=parts, parts=tparts, attrs=R.run_attrs(cfg, [sp.to_json()], command, dev))
    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "eval.zarr"
            R.create(path, tmpl)
            write_test(path, 0, ev, images, R.all_dims(tmpl), -1)
            return R.open_results(path).load()
    out = Path(out)
    replace_written(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    R.create(out, tmpl)
    write_test(out, 0, ev, images, R.all_dims(tmpl), -1)
    return R.open_results(out)
