"""``biorules segment``: RWKV-UNet segmentation commands (train by default, info, predict, eval, verify).

Without a subcommand the group trains: ``biorules segment --dataset glas --data-dir PATH --model
rwkv_unet_s --size 256 --epochs E --batch B --out run.zarr``; with no options it trains on the
built-in ``demo`` data.
"""

from __future__ import annotations

import click

from cli.choices import DWCONV_BACKENDS, SEGMENT_MODELS, WKV_BACKENDS
from cli.context import Context, examples, output_options
from cli.lazy import LazyGroup
from cli.types import Finite
from segment.data import DATASETS

SUBCOMMANDS = {
    "info": "cli.segment_info:info",
    "predict": "cli.segment_run:predict",
    "eval": "cli.segment_run:evaluate",
    "verify": "cli.segment_run:verify",
    "export": "cli.segment_export:export",
}


def _side(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value % 16:
        raise click.BadParameter(f"must be a multiple of 16, got {value}", ctx=ctx, param=param)
    return value


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS, invoke_without_command=True, epilog=examples(
    "biorules segment --epochs 5                     # the built-in demo data, on the CPU",
    "biorules segment --dataset glas --data-dir data/GlaS --model rwkv_unet_s --size 256 --out results/glas.zarr"))
@click.option("--dataset", type=click.Choice(tuple(DATASETS)), default="demo", show_default=True,
              help="Dataset layout (docs/datasets.md).")
@click.option("--data-dir", default=None, help="Dataset folder in its published layout (not for demo).")
@click.option("--model", type=click.Choice(SEGMENT_MODELS), default="rwkv_unet_t", show_default=True,
              help="RWKV-UNet variant (docs/rwkv-unet.md).")
@click.option("--size", type=click.IntRange(min=16, max=8192), default=128, show_default=True, callback=_side,
              help="Training/inference side in pixels (multiple of 16).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: dataset recipe, demo 40].")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Global batch size [default: dataset recipe, demo 4].")
@click.option("--lr", type=Finite(min=0, min_open=True), default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--weight-decay", type=Finite(min=0), default=1e-4, show_default=True, help="AdamW weight decay.")
@click.option("--schedule", type=click.Choice(["poly", "cosine"]), default="poly", show_default=True,
              help="Per-iteration learning-rate schedule.")
@click.option("--ce-weight", type=Finite(min=0), default=0.5, show_default=True, help="Weight of CE/BCE.")
@click.option("--dice-weight", type=Finite(min=0), default=0.5, show_default=True, help="Weight of soft Dice.")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Flips, rot90, rotation, crop, intensity.")
@click.option("--split", type=click.Choice(["auto", "official", "random"]), default="auto", show_default=True,
              help="Official split where it exists (auto) or seeded 8:1:1 random.")
@click.option("--split-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the first random split.")
@click.option("--splits", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of random splits (seeds S, S+1, ...); mean ± sd over them.")
@click.option("--folds", type=click.IntRange(min=0), default=0, show_default=True,
              help="K-fold cross-validation instead of --split: K disjoint folds, each tested once, never "
                   "splitting a patient, volume or video (seeded by --split-seed; 0: off).")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="Run only fold k of --folds (folds as separate jobs, each with its own --out)  [default: all]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of weights, shuffling and augmentation.")
@click.option("--clip-grad", type=Finite(min=0), default=1.0, show_default=True,
              help="Max gradient norm (0: off).")
@click.option("--amp", type=click.Choice(["auto", "bf16", "off"]), default="auto", show_default=True,
              help="bf16 autocast on CUDA (auto/bf16); never on CPU.")
@click.option("--wkv", type=click.Choice(WKV_BACKENDS), default="auto", show_default=True,
              help="Bi-WKV backend: auto = Triton on CUDA, scan otherwise; dense and recurrent are references.")
@click.option("--dwconv", type=click.Choice(DWCONV_BACKENDS), default="auto", show_default=True,
              help="Depthwise-conv backend: auto = Triton for 9×9 on CUDA, cuDNN/torch otherwise.")
@click.option("--encoder", default=None, metavar="PATH",
              help="Start the encoder from an official ImageNet checkpoint (net_B.pth, net_S.pth, net_T.pth).")
@click.option("--drop-path", type=Finite(min=0, max=1), default=None, help="Drop-path rate [default: model's].")
@click.option("--tta", is_flag=True, help="Flip test-time augmentation at test.")
@click.option("--binary-softmax", is_flag=True, help="Binary data: two logits with softmax (default one, sigmoid).")
@click.option("--empty", type=click.Choice(["strict", "transunet"]), default="strict", show_default=True,
              help="Empty-mask convention of the metrics.")
@click.option("--min-area", type=click.IntRange(min=0), default=0, show_default=True,
              help="Smallest predicted object (pixels) for the GlaS object metrics.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--step", type=click.Choice(["auto", "graph", "compile", "eager"]), default="auto", show_default=True,
              help="Training step: graph = the whole step (forward, backward, clipping, fused AdamW) captured "
                   "once in a CUDA graph and replayed, compile = torch.compile, eager = plain PyTorch; auto = "
                   "graph on CUDA (under torchrun too, DDP's all-reduces inside the graph), eager on the CPU. "
                   "Batches are static: the last partial batch of every epoch is dropped.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="CPU threads for torch (0: torch's default); 1 keeps CPU numbers the same across "
                   "machines and is fastest on shared cores.")
@click.option("--out", default=None,
              help="Result store; the same command again resumes it from its checkpoints (next to it, "
                   "OUT.ckpt)  [default: results/segment-DATASET.zarr]")
@click.option("--resume", is_flag=True, help="Resume --out (the default for a store biorules wrote; kept for scripts).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --out and its checkpoints that biorules wrote (never anything else).")
@output_options
@click.pass_context
def segment(ctx: click.Context, **options) -> None:
    """Medical image segmentation with RWKV-UNet; without a subcommand, train and test."""
    if ctx.invoked_subcommand is not None:
        return
    from cli.segment_run import run_train

    run_train(ctx.ensure_object(Context), options)
