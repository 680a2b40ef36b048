"""``biorules segment export``: a checkpoint as a ``torch.export`` program or an ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, examples, output_options, pass_context, usage


@click.command("export", epilog=examples(
    "biorules segment export --checkpoint results/segment-demo.ckpt/split0_best.pt model.pt2",
    "biorules segment export --checkpoint run.ckpt/split0_best.pt --format onnx model.onnx"))
@click.option("--checkpoint", required=True, help="Checkpoint written by `biorules segment` (*.pt).")
@click.option("--format", "fmt", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="torch: a torch.export program (torch.export.load reads it); onnx: an ONNX file (needs onnx).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch size of the exported input (batch, channels, size, size), size = the training size.")
@click.argument("out")
@output_options
@pass_context
def export(obj: Context, checkpoint: str, fmt: str, batch: int, out: str) -> None:
    """Export a trained model (CPU, eval mode, at its training size); outputs are checked against the checkpoint."""
    from biorules import store

    if Path(out).exists():
        raise click.UsageError(f"OUT {out} exists; remove it or choose another path")
    usage(lambda: store.check_writable(out, "OUT"))
    from segment.export import export_checkpoint

    r = usage(lambda: export_checkpoint(checkpoint, out, fmt, batch=batch))
    obj.echo(f"wrote {r.path} ({r.format}, input {'x'.join(map(str, r.input_shape))}); read back by {r.runtime}, "
             f"max |difference| from the checkpoint {r.max_abs_diff:.1e}")
    obj.emit_json({"out": str(r.path), "format": r.format, "input_shape": list(r.input_shape),
                   "max_abs_diff": r.max_abs_diff, "runtime": r.runtime})
