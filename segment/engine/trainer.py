"""Training of RWKV-UNet (docs/rwkv-unet.md): a :class:`Trainer` whose ``fit`` reads as its outline.

Training minimises w_ce·CE + w_dice·soft-Dice (``segment.losses``) with AdamW and a per-iteration
learning rate, poly lr_t = lr·(1 − t/T)^0.9 or cosine lr_t = lr·½(1 + cos(πt/T)), t the
iteration and T = epochs × iterations per epoch. Gradients are clipped to a global norm; bf16
autocast is used on CUDA. Every epoch: validation Dice at original resolution, the epoch row of the
store, and a checkpoint written atomically (``segment.engine.checkpoint``); the best validation
epoch (mean foreground Dice; the last epoch without a validation set) is tested at the end.

Randomness (shuffling, augmentation draws, drop-path) is re-seeded from (seed, epoch) at the start
of every epoch, so a run resumed from an epoch checkpoint ends with the numbers of an uninterrupted
run on the same machine. Under ``torchrun`` the global batch is split across ranks
(``segment.engine.distributed``); rank 0 evaluates and writes. Batches have a static shape: the
last partial batch of an epoch is dropped (iterations per epoch = ⌊n / batch⌋).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from biorules.errors import DivergedError, InputError
from biorules.store import STATUS, check_replaceable, mark_checkpoints, replace_written
from segment import results as R
from segment.data import Dataset
from segment.data import augment as A
from segment.data.pipeline import TrainSet, eval_items, normalise
from segment.data.splits import Split, make_splits
from segment.engine.checkpoint import (
    build_model,
    check_kernels,
    checkpoint_dir,
    load_state_strict,
    model_meta,
    read_checkpoint,
    save_checkpoint,
    unwrap_state,
)
from segment.engine.config import TrainConfig, resolve_step
from segment.engine.distributed import (
    all_reduce_sum,
    autocast,
    init_distributed,
    joined,
    memory_format,
    resolve_device,
    wrap_ddp,
)
from segment.engine.evaluate import (
    evaluate_items,
    image_units,
    nanmean0,
    open_verified,
    select,
    write_test,
)
from segment.engine.inference import GraphForward
from segment.losses import LossWeights, ce_dice_loss


def lr_at(it: int, total: int, base: float, schedule: str) -> float:
    """Learning rate after ``it`` of ``total`` iterations (poly 0.9 or cosine, to 0)."""
    frac = min(it / max(total, 1), 1.0)
    if schedule == "poly":
        return base * (1.0 - frac) ** 0.9
    return base * 0.5 * (1.0 + math.cos(math.pi * frac))


# --------------------------------------------------------------------------------- the step


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (fused: one kernel per step) with its learning rate held in a tensor, so the schedule
    (:func:`set_lr`) reaches a captured step; capturable on CUDA (its step count lives on the device)."""
    cuda = device.type == "cuda"
    lr = torch.tensor(cfg.lr, dtype=torch.float32, device=device if cuda else "cpu")
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=True, capturable=cuda)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Write ``lr`` into every group's learning-rate tensor in place (no host synchronisation)."""
    for group in opt.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def prediction_stats(logits: torch.Tensor, y: torch.Tensor, fg: int) -> torch.Tensor:
    """(3, fg) float64 [Σ pred∧gt, Σ pred, Σ gt] per foreground class of thresholded predictions."""
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    rows = [torch.stack([((pred == c) & (y == c)).sum(), (pred == c).sum(), (y == c).sum()]) for c in range(1, fg + 1)]
    return torch.stack(rows, 1).double()


class StepFunction:
    """One training iteration on given tensors: zero the gradients, forward (bf16 autocast on CUDA,
    no weight-cast cache), CE + Dice, backward, clip to the global norm, AdamW; returns the detached
    loss and :func:`prediction_stats`. The eager step calls it; the graph step captures this call."""

    def __init__(self, net: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, weights: LossWeights,
                 clip: float, amp: str, device: torch.device, fg: int, sync=None) -> None:
        self.net, self.params, self.opt, self.weights = net, [p for p in model.parameters()], opt, weights
        self.clip, self.amp, self.device, self.fg, self.sync = clip, amp, device, fg, sync

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp, cache=False):
            logits = self.net(x)
        loss = ce_dice_loss(logits.float(), y, self.weights, self.sync)
        loss.backward()
        if self.clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        with torch.no_grad():
            return loss.detach(), prediction_stats(logits.detach(), y, self.fg)


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> Callable[[], None]:
    """A function that puts the weights, buffers and optimiser state back as they are now, in place
    (the tensors a captured graph reads keep their addresses); state created later is zeroed, which
    is AdamW's fresh state. Warm-up steps run on real tensors and are undone by it."""
    tensors = [*model.parameters(), *model.buffers()]
    saved = [t.detach().clone() for t in tensors]
    state = {id(p): {k: v.detach().clone() for k, v in st.items() if torch.is_tensor(v)} for p, st in opt.state.items()}

    @torch.no_grad()
    def restore() -> None:
        for t, v in zip(tensors, saved, strict=True):
            t.copy_(v)
        for p, st in opt.state.items():
            old = state.get(id(p), {})
            for k, v in st.items():
                if torch.is_tensor(v):
                    v.copy_(old[k]) if k in old else v.zero_()

    return restore


class EagerStep:
    """The step function called from Python every iteration (``--step eager``, the CPU path)."""

    name = "eager"

    def __init__(self, fn: StepFunction) -> None:
        self.fn = fn

    def prepare(self, x: torch.Tensor, y: torch.Tensor, warmup: int = 1) -> None:
        """Run ``warmup`` steps so that kernels are compiled and autotuned before the clock starts."""
        for _ in range(warmup):
            self.fn(x, y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fn(x, y)


class CompiledStep(EagerStep):
    """The step function with the model run through ``torch.compile`` (``--step compile``)."""

    name = "compile"

    def __init__(self, fn: StepFunction) -> None:
        fn.net = torch.compile(fn.net)
        super().__init__(fn)

    def prepare(self, x: torch.Tensor, y: torch.Tensor, warmup: int = 2) -> None:
        super().prepare(x, y, warmup)


DDP_WARMUP = 11
"""Eager DDP iterations before a capture: DDP rebuilds its buckets after the first iteration and
does bookkeeping of its own in the first ones; PyTorch's notes on CUDA graphs with DDP ask for at
least 11 before the whole backward pass is captured."""


def warmup_iterations(net: nn.Module) -> int:
    """Warm-up iterations before :class:`GraphStep` captures: :data:`DDP_WARMUP` under DDP, else 3
    (kernel compilation, autotuning and AdamW's state need one; the rest is margin)."""
    return DDP_WARMUP if isinstance(net, nn.parallel.DistributedDataParallel) else 3


class GraphStep:
    """The whole step captured once in a CUDA graph and replayed (``--step graph``).

    ``prepare`` warms the step up on a side stream (kernel compilation, cuDNN and Triton
    autotuning, AdamW's state; DDP's bucket rebuild), then captures one call of the step function
    on static input tensors; every iteration copies its batch into them and replays. Under DDP the
    graph holds the gradient all-reduces (NCCL) and SyncBatchNorm's gathers, so a replay is the
    whole distributed step. Shapes are static, so every batch has the same size (the trainer drops
    the last partial batch)."""

    name = "graph"

    def __init__(self, fn: StepFunction) -> None:
        self.fn = fn

    def prepare(self, x: torch.Tensor, y: torch.Tensor, warmup: int | None = None) -> None:
        warmup = warmup_iterations(self.fn.net) if warmup is None else warmup
        self.x, self.y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self.fn(self.x, self.y)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.fn.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.out = self.fn(self.x, self.y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out


STEP_KINDS = {"eager": EagerStep, "compile": CompiledStep, "graph": GraphStep}


def prepare(cfg: TrainConfig, progress: bool = False) -> tuple[Dataset, list[Split]]:
    """Open and verify the dataset and build the splits; InputError on any problem."""
    ds = open_verified(cfg.dataset, cfg.data_dir, progress)
    return ds, make_splits(ds, cfg.split, cfg.split_seed, cfg.splits, folds=cfg.folds, fold=cfg.fold)


@dataclass
class RunStore:
    """Where a run writes: the zarr store, its checkpoint folder and the dims of its variables
    (taken from the store, so its split dimension is the one it was created with)."""

    path: Path
    ckdir: Path
    dims: dict[str, tuple[str, ...]]
    images: list[str]

    def write(self, values: dict, k: int, epoch: int | None = None) -> None:
        """Values of split ``k`` (and one epoch row when ``epoch`` is given) into their region."""
        values = {name: v for name, v in values.items() if name in self.dims}  # a store from before a variable
        region = {R.split_dim(self.dims): slice(k, k + 1)}
        if epoch is not None:
            region["epoch"] = slice(epoch - 1, epoch)
        R.write_region(self.path, values, region, self.dims)


class Trainer:
    """Train one split: ``fit`` is the epoch loop, every other method one of its steps.

    ``train_step`` runs one iteration of the step function (forward, loss, backward, clip,
    AdamW, training statistics); ``validate`` scores the validation images; ``on_epoch_end``
    writes the epoch row and the checkpoints; ``save``/``load`` are those checkpoints; ``test``
    evaluates the best epoch. No method knows which dataset it trains on.
    """

    def __init__(self, cfg: TrainConfig, ds: Dataset, split: Split, k: int, store: RunStore, device: torch.device,
                 rank: int = 0, size: int = 1, progress: bool = False, say: Callable[[str], None] = lambda _m: None,
                 hook: Callable[[int, int], None] | None = None) -> None:
        self.cfg, self.ds, self.info, self.split, self.k, self.store = cfg, ds, ds.info, split, k, store
        self.device, self.rank, self.size, self.progress, self.say, self.hook = device, rank, size, progress, say, hook
        self.last_path, self.best_path = store.ckdir / f"split{k}_last.pt", store.ckdir / f"split{k}_best.pt"
        self.fmt = memory_format(device)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.info).to(device, memory_format=self.fmt)
        self.opt = make_optimizer(self.model, cfg, device)
        self.start, self.best_epoch, self.best_score = 1, -1, -math.inf
        self.load()
        built = TrainSet.build(ds, select(ds.records, split.train), cfg.size)
        self.train_set = TrainSet(built.images.to(device), built.masks.to(device))  # resized once, kept on the device
        self.val_items = eval_items(ds, select(ds.records, split.val), cfg.size) if rank == 0 else []
        n = len(self.train_set)
        gbatch = min(cfg.batch, n - n % size) if n >= size else 0
        if gbatch < size:
            raise InputError(f"split {split.name}: {n} training images, too few for {size} processes")
        self.gbatch = gbatch - gbatch % size
        self.local = self.gbatch // size
        self.iters = n // self.gbatch  # the last partial batch is dropped: every step has the same shape
        self.total = cfg.epochs * self.iters
        self.model, self.net = wrap_ddp(self.model, device, joined())
        self.sync = all_reduce_sum if size > 1 else None
        self.weights = LossWeights(cfg.ce_weight, cfg.dice_weight)
        self.fg = self.info.num_classes - 1
        self.step_kind = resolve_step(cfg.step, device.type)
        fn = StepFunction(self.net, self.model, self.opt, self.weights, cfg.clip_grad, cfg.amp, device, self.fg, self.sync)
        self.step = STEP_KINDS[self.step_kind](fn)
        self.infer: nn.Module = GraphForward(self.model, max(self.local, 1), cfg.amp) if self.step_kind == "graph" \
            else self.model
        self.compile_time = 0.0

    # ------------------------------------------------------------------------------ the outline

    def fit(self) -> None:
        """The epoch loop: train, validate, write and checkpoint every epoch; test the best epoch."""
        self.on_train_start()
        for epoch in range(self.start, self.cfg.epochs + 1):
            self.on_epoch_start(epoch)
            for i in self.iterations(epoch):
                self.train_step(i)
            self.on_train_epoch_end(epoch)
            score = self.validate()
            self.on_epoch_end(epoch, score)
        self.test()

    # ------------------------------------------------------------------------------ the steps

    def on_train_start(self) -> None:
        """Warm the step up (and capture it) on CUDA, timed apart from training; the state is put back after.

        Kernel compilation, autotuning and the graph capture happen here, on a copy of the first
        training images, so that epoch times are training alone; the weights, buffers and AdamW
        state are restored in place, so the run's numbers do not depend on the warm-up."""
        if self.device.type != "cuda" or self.start > self.cfg.epochs:
            return
        t0 = time.perf_counter()
        idx = torch.arange(self.local, device=self.device) % len(self.train_set)
        x, y = self.train_set.batch(idx)
        x = normalise(x, self.info.mean, self.info.std).contiguous(memory_format=self.fmt)
        restore = snapshot(self.model, self.opt)
        self.net.train()
        self.step.prepare(x, y)
        restore()
        torch.cuda.synchronize(self.device)
        self.compile_time = time.perf_counter() - t0
        if self.rank == 0:
            self.store.write({"compile_time": np.array([self.compile_time])}, self.k)
            self.say(f"{self.split.name}: {self.step_kind} step ready in {self.compile_time:.1f} s")

    def on_epoch_start(self, epoch: int) -> None:
        """Mark the split running; re-seed shuffling, augmentation and drop-path from (seed, epoch)."""
        if self.rank == 0:
            self.store.write({"status": np.array([STATUS["running"]], np.int8)}, self.k)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(self.cfg.seed * 1_000_003 + epoch + 7)
        self.epoch = epoch
        self.perm = torch.randperm(len(self.train_set), generator=gen).to(self.device)
        aug = A.sample_params(self.iters * self.gbatch, gen) if self.cfg.augment else None
        self.aug = {k: v.to(self.device) for k, v in aug.items()} if aug is not None else None  # one copy per epoch
        self.net.train()
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # read once per epoch:
        self.dstats = torch.zeros(3, self.fg, dtype=torch.float64, device=self.device)  # no per-step sync
        self.t0 = time.perf_counter()

    def iterations(self, epoch: int):
        """The iteration indices of an epoch, with a progress bar on a terminal (rank 0)."""
        from tqdm.auto import tqdm

        self.bar = tqdm(range(self.iters), desc=f"{self.split.name} epoch {epoch}/{self.cfg.epochs}",
                        disable=not (self.progress and self.rank == 0), leave=False, unit="it")
        return self.bar

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of global batch ``i``: augmented, normalised images and masks on the device."""
        lo = i * self.gbatch + self.rank * self.local
        x, y = self.train_set.batch(self.perm[lo:lo + self.local])
        if self.aug is not None:
            x, y = A.apply(x, y, A.slice_params(self.aug, slice(lo, lo + self.local)))
        return normalise(x, self.info.mean, self.info.std).contiguous(memory_format=self.fmt), y

    def train_step(self, i: int) -> None:
        """One iteration: the schedule's learning rate into AdamW's tensor, then the step (eager,
        compiled or a graph replay); loss and statistics are summed on the device (no host sync)."""
        cfg = self.cfg
        x, y = self.batch(i)
        self.lr = lr_at((self.epoch - 1) * self.iters + i, self.total, cfg.lr, cfg.schedule)
        set_lr(self.opt, self.lr)
        try:
            loss, stats = self.step(x, y)
        except (RuntimeError, ValueError) as e:  # an eager forward pass on weights that are no longer finite
            if not self.finite():
                raise self.diverged() from e
            raise
        self.loss_sum += loss.double()
        self.dstats += stats
        if not self.bar.disable and (i % 10 == 9 or i == self.iters - 1):
            self.bar.set_postfix(loss=f"{float(loss):.4f}")

    def on_train_epoch_end(self, epoch: int) -> None:
        """Sum the epoch's statistics over ranks, read them once, and stop a diverged run."""
        self.bar.close()
        if self.size > 1:
            dist.all_reduce(self.dstats)
        self.epoch_time = time.perf_counter() - self.t0
        self.epoch_loss = float(self.loss_sum) / self.iters
        if not math.isfinite(self.epoch_loss):
            raise self.diverged()

    def validate(self) -> float:
        """Mean foreground validation Dice (rank 0; NaN without validation images); the epoch row's val columns."""
        self.val_row: dict = {}
        if not self.val_items:
            return math.nan
        t0 = time.perf_counter()
        ev = evaluate_items(self.infer, self.val_items, self.info, self.device, batch=max(self.local, 1),
                            amp=self.cfg.amp, empty=self.cfg.empty, with_hd95=False, with_objects=False)
        vd, vi = nanmean0(ev.dice), nanmean0(ev.iou)
        self.val_row = {"val_dice": vd[None, None], "val_iou": vi[None, None],
                        "val_time": np.array([[time.perf_counter() - t0]])}
        return float(np.nanmean(vd)) if np.isfinite(vd).any() else -math.inf

    def on_epoch_end(self, epoch: int, score: float) -> None:
        """Write the epoch row, keep the best checkpoint, write the last one; then the caller's hook."""
        if self.rank == 0:
            dstats = self.dstats.cpu()
            row = {
                "train_loss": np.array([[self.epoch_loss]]),
                "lr": np.array([[self.lr]]),
                "epoch_time": np.array([[self.epoch_time]]),
                "train_images_per_second": np.array([[self.iters * self.gbatch / self.epoch_time]]),
                "train_dice": (2 * dstats[0] / (dstats[1] + dstats[2]).clamp_min(1e-12)).numpy()[None, None],
                **self.val_row,
            }
            validated = bool(self.val_items)
            if not validated or self.best_epoch < 0 or score > self.best_score:
                self.best_epoch, self.best_score = epoch, (score if validated else self.best_score)
                self.save(self.best_path, epoch, full=False)
            self.store.write(row, self.k, epoch)
            self.save(self.last_path, epoch, full=True)
            vtxt = f", val Dice {np.nanmean(row['val_dice']):.4f}" if "val_dice" in row else ""
            self.say(f"{self.split.name} epoch {epoch}/{self.cfg.epochs}: loss {self.epoch_loss:.4f}{vtxt}, "
                     f"{self.epoch_time:.1f} s")
        if self.size > 1:
            dist.barrier()
        if self.hook is not None:
            self.hook(self.k, epoch)

    def save(self, path: Path, epoch: int, full: bool) -> None:
        """A checkpoint of the model (``full``: with the optimiser and the selection state, to resume)."""
        payload = {"model": self.model.state_dict(), "epoch": epoch, "meta": model_meta(self.cfg, self.info),
                   "config": json.dumps(self.cfg.to_dict(), sort_keys=True)}
        if full:
            payload |= {"optimizer": self.opt.state_dict(), "best_epoch": self.best_epoch,
                        "best_score": self.best_score}
        save_checkpoint(path, payload)

    def load(self) -> None:
        """Resume from the split's last checkpoint when there is one (model, optimiser, selection)."""
        if not self.last_path.is_file():
            return
        ck = read_checkpoint(self.last_path)
        load_state_strict(self.model, unwrap_state(ck), str(self.last_path))
        lrs = [g["lr"] for g in self.opt.param_groups]
        self.opt.load_state_dict(ck["optimizer"])
        for g, lr in zip(self.opt.param_groups, lrs, strict=True):  # keep AdamW's own lr tensors
            g["lr"] = lr
        self.start, self.best_epoch, self.best_score = int(ck["epoch"]) + 1, int(ck["best_epoch"]), float(ck["best_score"])
        self.say(f"split {self.split.name}: resuming after epoch {self.start - 1}")

    def test(self) -> None:
        """Evaluate the best epoch on the test images (rank 0) and mark the split done."""
        if self.rank != 0:
            return
        if self.last_path.is_file():
            self.best_epoch = int(read_checkpoint(self.last_path)["best_epoch"])
        load_state_strict(self.model, unwrap_state(read_checkpoint(self.best_path)), str(self.best_path))
        cfg = self.cfg
        t0 = time.perf_counter()
        items = eval_items(self.ds, select(self.ds.records, self.split.test), cfg.size)
        ev = evaluate_items(self.infer, items, self.info, self.device, batch=max(self.local, 1), tta=cfg.tta,
                            amp=cfg.amp, empty=cfg.empty, min_area=cfg.min_area)
        self.store.write({"test_time": np.array([time.perf_counter() - t0])}, self.k)
        write_test(self.store.path, self.k, ev, self.store.images, self.store.dims, self.best_epoch)
        self.say(f"{self.split.name}: tested epoch {self.best_epoch}, test Dice {np.nanmean(ev.dice):.4f}")

    # ------------------------------------------------------------------------------ divergence

    def finite(self) -> bool:
        """Whether every weight is still finite."""
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def diverged(self) -> DivergedError:
        """The one-line error of a run whose loss or weights are no longer finite."""
        return DivergedError(f"split {self.split.name} diverged in epoch {self.epoch}: the loss or the weights are "
                             f"no longer finite; lower --lr (now {self.cfg.lr:g})")


# --------------------------------------------------------------------------------- the run


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = False, echo: Callable[[str], None] | None = None, command: Sequence[str] | None = None,
          on_epoch_end: Callable[[int, int], None] | None = None):
    """Train, select on validation and test, for every split; results into the zarr store ``out``.

    Returns the store opened with xarray; a split whose loss or weights stop being finite is marked
    ``diverged`` there (its status) and the other splits still run. ``resume`` continues from the checkpoints next to the
    store (``checkpoint_dir(out)``); ``on_epoch_end(split, epoch)`` is called after each epoch's
    checkpoint is written.
    """
    cfg = config.resolved()
    say = echo or (lambda _m: None)
    device = resolve_device(cfg.device)
    own_group = not (dist.is_available() and dist.is_initialized())
    rank, size, device = init_distributed(device)
    try:
        return _train(cfg, Path(out), resume, overwrite, progress, say, command, on_epoch_end, device, rank, size)
    finally:
        if own_group and joined():
            dist.destroy_process_group()


STATIC_BATCHES = "static: iterations per epoch = floor(n / batch), the last partial batch is dropped"
"""The store attr ``batches``: every training step has the same shape (what a captured step needs)."""


def _open_store(cfg: TrainConfig, out: Path, resume: bool, tmpl, attrs: dict) -> None:
    """Create the store, or check that the one being resumed holds a run with the same options."""
    if out.exists() and resume:
        old = R.open_results(out)
        if old.attrs.get("config") != attrs["config"]:
            a, b = json.loads(old.attrs.get("config", "{}")), cfg.to_dict()
            defaults = TrainConfig().to_dict()  # options added since the store was made: their default
            diff = sorted(k for k in b if a.get(k, defaults.get(k)) != b[k])
            if diff or not a:
                raise InputError(f"--out {out} holds a run with other options ({', '.join(diff) or 'unknown'}); "
                                 "repeat them to resume it, pass --overwrite to replace it, or choose another --out")
        return
    replace_written(out, "--out")
    replace_written(checkpoint_dir(out), "--out's checkpoint folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    R.create(out, tmpl)


def _train(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool, progress: bool, say, command, on_epoch_end,
           device: torch.device, rank: int, size: int):
    import xarray as xr

    if cfg.batch % size:
        raise InputError(f"--batch {cfg.batch} is not divisible by the {size} DDP processes")
    ckdir = checkpoint_dir(out)
    if out.exists() and not (resume or overwrite):
        raise InputError(f"--out {out} exists; pass --resume to continue it or --overwrite to replace it")
    if overwrite and not resume:  # refused before any work: --overwrite replaces only our own outputs
        check_replaceable(out, "--out")
        check_replaceable(ckdir, "--out's checkpoint folder")
    ds, splits = prepare(cfg, progress=progress and rank == 0)
    info = ds.info
    if info.random_split_warning and splits[0].seed >= 0:
        say(f"warning: {info.random_split_warning}")
    build_model(cfg, info)  # an unknown model name or an unfit --encoder fails here, before anything is written
    check_kernels(cfg, device)
    step = resolve_step(cfg.step, device.type)
    images, image_parts = image_units(ds, splits)
    test_parts = sorted(set(image_parts)) if info.instances else None
    attrs = R.run_attrs(cfg.to_dict(), [s.to_json() for s in splits], command, device)
    attrs |= {"train_step": step, "batches": STATIC_BATCHES}
    tmpl = R.template(split_names=[s.name for s in splits], split_seeds=[s.seed for s in splits], epochs=cfg.epochs,
                      classes=list(info.class_names), images=images, image_parts=image_parts, parts=test_parts,
                      attrs=attrs, split_folds=[s.fold for s in splits], hd95_units=ds.hd95_units)
    if rank == 0:
        _open_store(cfg, out, resume, tmpl, attrs)
        mark_checkpoints(ckdir)
    if size > 1:
        dist.barrier()
    store = RunStore(out, ckdir, R.all_dims(R.open_results(out)), images)
    status = R.open_results(out)["status"].values
    for k, sp in enumerate(splits):
        if int(status[k]) == STATUS["done"]:
            say(f"split {sp.name}: done, skipped")
            continue
        try:
            Trainer(cfg, ds, sp, k, store, device, rank, size, progress, say, on_epoch_end).fit()
        except DivergedError as e:  # the split is diverged; the other splits still run
            if rank == 0:
                store.write({"status": np.array([STATUS["diverged"]], np.int8)}, k)
            say(str(e))
        except Exception as e:  # never leave the split marked running: it failed
            if rank == 0 and not isinstance(e, InputError):
                store.write({"status": np.array([STATUS["failed"]], np.int8)}, k)
            raise
    if size > 1:
        dist.barrier()
    return R.open_results(out) if rank == 0 else xr.Dataset()
