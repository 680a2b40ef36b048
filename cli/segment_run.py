"""``biorules segment`` training entry and its ``predict``, ``eval`` and ``verify`` subcommands."""

from __future__ import annotations

import math
import os
import sys

import click

from cli.context import EXIT_USAGE, Context, examples, output_options, pass_context, usage
from segment.data import DATASETS


def _fmt(v: tuple[float, float], digits: int = 4) -> str:
    mean, sd = v
    if math.isnan(mean):
        return "nan"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def summary_lines(summary: dict) -> list[str]:
    """The summary table: test Dice, IoU, HD95 per class (mean ± sd over splits), object metrics."""
    unit = {"pixel": "px"}.get(summary.get("hd95_units", "pixel"), summary.get("hd95_units", "px"))
    lines = [f"{'class':<14}{'Dice':>20}{'IoU':>20}{f'HD95 ({unit})':>22}"]
    for c, e in summary["classes"].items():
        lines.append(f"{c:<14}{_fmt(e['dice']):>20}{_fmt(e['iou']):>20}{_fmt(e['hd95'], 2):>22}")
        for part, v in e.get("dice_by_part", {}).items():
            lines.append(f"  Dice on {part}: {_fmt(v)}")
        if e.get("hd95_nan"):
            lines.append(f"  ({e['hd95_nan']} HD95 values undefined: exactly one mask empty, excluded)")
    for part, o in summary.get("objects", {}).items():
        lines.append(f"objects {part}: F1 {_fmt(o['object_f1'])}, Dice {_fmt(o['object_dice'])}, "
                     f"Hausdorff {_fmt(o['object_hausdorff'], 2)} px")
    return lines


def _bars(obj: Context) -> bool:
    """Progress bars only on a terminal and without --quiet/--json."""
    return obj.progress


WINDOW_HELP = ("Sliding window at the image's own resolution: training-size tiles overlapping by half, "
               "Gaussian weights (sigma = tile/8); default: the whole image resized to the training size.")

PREDICT_WINDOW_HELP = ("Sliding window at each image's own resolution (training-size tiles overlapping by half, "
                       "Gaussian weights sigma = tile/8), or --resize: the whole image resized to the training "
                       "size  [default: the window for images larger than the training size, resizing otherwise]")


def _rank() -> int:
    """This process's rank under torchrun (0 without it)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def run_train(obj: Context, options: dict) -> None:
    """Build the config from the group options, train, print the summary.

    The rule for --out is the one of every command: a store biorules wrote is resumed (its
    configuration must match), anything else refused; checked before any import or work."""
    from contextlib import nullcontext

    from biorules import store

    out = options.pop("out") or f"results/segment-{options['dataset']}.zarr"
    resume, overwrite, threads = options.pop("resume"), options.pop("overwrite"), options.pop("threads")
    lead = _rank() == 0
    if lead:
        mode = usage(lambda: store.prepare_out(out, None, overwrite=overwrite))
        resume = resume or mode == "resume"
    from tqdm.auto import tqdm

    from segment.engine import TrainConfig, diverged_splits, summarize, train
    from segment.results import split_dim

    cfg = TrainConfig(**options)
    echo = tqdm.write if obj.progress else (lambda _m: None)
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with store.writer_lock(out) if lead else nullcontext():
            ds = train(cfg, out, resume=resume, overwrite=overwrite and not resume, progress=_bars(obj), echo=echo,
                       command=sys.argv)
    finally:
        torch.set_num_threads(before)
    if not ds.data_vars:  # a DDP rank other than 0
        return
    summary = summarize(ds)
    summary["out"] = str(out)
    summary["hd95_units"] = str(ds["test_hd95"].attrs.get("units", "pixel"))
    diverged = diverged_splits(ds)
    if summary["splits_done"]:
        obj.echo(f"test results ({summary['splits_done']} split(s), {out}):")
        for line in summary_lines(summary):
            obj.echo(line)
        obj.echo(time_line(summary["time"]))
    obj.emit_json(summary)
    if diverged:
        click.echo(f"{len(diverged)} of {ds.sizes[split_dim(ds)]} split(s) diverged: {', '.join(diverged)}: the loss or the "
                   f"weights stopped being finite; lower --lr (now {cfg.lr:g}); status in {out}", err=True)
    obj.finish(diverged=len(diverged), failed=summary["splits_failed"])


def time_line(t: dict) -> str:
    """Where the run's time went: warm-up/compilation apart from training, validation and test."""
    return (f"time ({t['step']} step): compile {t['compile_s']:.1f} s, training {t['train_s']:.1f} s "
            f"({t['train_images_per_second']:.1f} img/s median), validation {t['val_s']:.1f} s, test {t['test_s']:.1f} s")


FOLD_HELP = "With --folds: the fold whose test part to evaluate (the checkpoint's own fold)."


@click.command(epilog=examples(
    "biorules segment predict --checkpoint results/segment-demo.ckpt/split0_best.pt --input images/ --out masks/",
    "biorules segment predict --checkpoint run.ckpt/split0_best.pt --input big/ --out masks/ --window --tta",
    "biorules segment predict --checkpoint cv.ckpt/split0_best.pt --checkpoint cv.ckpt/split1_best.pt "
    "--input data/Task/imagesTs --out pred/ --save-probabilities"))
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              help="Checkpoint written by `biorules segment` (*.pt); repeat it to ensemble several (mean of softmax).")
@click.option("--input", "input_dir", required=True,
              help="Folder of images (any format Pillow reads) or NIfTI volumes; nnU-Net's CASE_0000 names "
                   "group the channels of a case.")
@click.option("--out", "out_dir", required=True,
              help="Folder for the masks in the input's format: CASE.nii.gz (the input's affine), "
                   "NAME_mask.png (0/255, or a palette PNG of class ids listed in classes.json).")
@click.option("--tta", is_flag=True, help="Average over the 4 flips.")
@click.option("--window/--resize", default=None, help=PREDICT_WINDOW_HELP)
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Slices of a volume (with --window: tiles) per forward pass.")
@click.option("--save-probabilities", is_flag=True,
              help="Also write CASE_probabilities.npz: the class probabilities as float16, classes first.")
@click.option("--overlays/--no-overlays", default=True, show_default=True,
              help="Also write NAME_overlay.png for 2-D images (the image with the classes in colour).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@output_options
@pass_context
def predict(obj: Context, checkpoints: tuple[str, ...], input_dir: str, out_dir: str, tta: bool, window: bool | None,
            batch: int, save_probabilities: bool, overlays: bool, device: str) -> None:
    """Segment a folder of images or volumes with one checkpoint or an ensemble, one case at a time."""
    from biorules import store

    usage(lambda: store.check_writable(out_dir, "--out"))
    from segment.engine import predict_folder

    written = predict_folder(list(checkpoints), input_dir, out_dir, tta=tta, device=device, batch=batch,
                             progress=_bars(obj), window=window, echo=obj.echo,
                             save_probabilities=save_probabilities, overlays=overlays)
    obj.echo(f"wrote {len(written)} files to {out_dir}")
    obj.emit_json({"out": out_dir, "files": [str(p) for p in written]})


@click.command("eval", epilog=examples(
    "biorules segment eval --checkpoint results/segment-demo.ckpt/split0_best.pt",
    "biorules --json segment eval --checkpoint run.ckpt/split0_best.pt --data-dir data/GlaS --window --out eval.zarr",
    "biorules segment eval --checkpoint cv.ckpt/split0_best.pt --data-dir D --folds 5 --fold 0"))
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              help="Checkpoint written by `biorules segment` (*.pt); repeat it to ensemble several (mean of softmax).")
@click.option("--dataset", type=click.Choice(tuple(DATASETS)), default=None,
              help="Dataset (docs/datasets.md)  [default: the checkpoint's]")
@click.option("--data-dir", default=None, help="Dataset folder in its published layout.")
@click.option("--split", type=click.Choice(["auto", "official", "random"]), default="auto", show_default=True,
              help="Which split's test part to evaluate.")
@click.option("--split-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random split (and of the folds).")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True,
              help="Evaluate a fold of K-fold cross-validation (with --fold) instead of --split.")
@click.option("--fold", type=click.IntRange(min=0), default=None, help=FOLD_HELP)
@click.option("--tta", is_flag=True, help="Average over the 4 flips.")
@click.option("--window", is_flag=True, help=WINDOW_HELP)
@click.option("--empty", type=click.Choice(["strict", "transunet"]), default="strict", show_default=True,
              help="Empty-mask convention.")
@click.option("--min-area", type=click.IntRange(min=0), default=0, show_default=True,
              help="Smallest predicted object (pixels) for object metrics.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", default=None, help="Write per-image metrics to this zarr store.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --out store that biorules wrote (never anything else).")
@output_options
@pass_context
def evaluate(obj: Context, checkpoints: tuple[str, ...], dataset: str | None, data_dir: str | None, split: str,
             split_seed: int, folds: int, fold: int | None, tta: bool, window: bool, empty: str, min_area: int,
             device: str, out: str | None, overwrite: bool) -> None:
    """Test a checkpoint (or the ensemble of several) on a dataset's test split or fold: Dice, IoU,
    HD95 (mm for NIfTI volumes) and the GlaS object metrics."""
    from biorules import store

    if folds == 1 or (fold is not None and fold >= max(folds, 1)) or (folds and fold is None):
        raise click.BadParameter(f"must be in 0..{folds - 1} for --folds {folds}" if folds > 1 else
                                 "--folds K (at least 2) and --fold k go together", param_hint="--fold")
    if out is not None:
        usage(lambda: store.prepare_out(out, None, overwrite=overwrite))  # ours, or refused; same options: recomputed
    from segment.engine import evaluate_checkpoint, summarize

    ds = evaluate_checkpoint(list(checkpoints), dataset=dataset, data_dir=data_dir, split=split,
                             split_seed=split_seed, tta=tta, empty=empty, min_area=min_area, device=device, out=out,
                             overwrite=overwrite, progress=_bars(obj), command=sys.argv, window=window, folds=folds,
                             fold=fold)
    summary = summarize(ds)
    summary["hd95_units"] = str(ds["test_hd95"].attrs.get("units", "pixel"))
    for line in summary_lines(summary):
        obj.echo(line)
    obj.emit_json(summary)


@click.command(epilog=examples("biorules segment verify --dataset glas --data-dir data/GlaS",
                               "biorules --json segment verify --dataset kvasir --data-dir data/Kvasir-SEG"))
@click.option("--dataset", type=click.Choice(tuple(DATASETS)), required=True, help="Dataset layout (docs/datasets.md).")
@click.option("--data-dir", default=None, help="Dataset folder in its published layout.")
@output_options
@pass_context
def verify(obj: Context, dataset: str, data_dir: str | None) -> None:
    """Check a dataset folder: pairs complete, images decodable, mask values and sizes; list every problem."""
    from segment.data import open_dataset
    from segment.data import verify as verify_dataset

    ds = open_dataset(dataset, data_dir)
    problems = verify_dataset(ds, progress=_bars(obj))
    for p in problems:
        click.echo(p, err=True)
    obj.echo(f"{len(ds.records)} images checked, {len(problems)} problem(s)")
    obj.emit_json({"images": len(ds.records), "problems": problems})
    if problems:
        sys.exit(EXIT_USAGE)
