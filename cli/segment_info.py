"""``biorules segment info``: parameters, MACs, peak forward memory and tokens per stage."""

from __future__ import annotations

import click

from cli.choices import SEGMENT_MODELS as MODELS
from cli.context import Context, examples, output_options, pass_context

MAX_SIDE = 65536
"""The largest side ``--size`` takes (pixels)."""


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    text = value.lower().replace("×", "x")
    try:
        h, w = (int(p) for p in text.split("x")) if "x" in text else (int(text), int(text))
    except ValueError:
        raise click.BadParameter(f"expected N or HxW, got {value!r}") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"sides must be positive, got {value!r}")
    if max(h, w) > MAX_SIDE:
        raise click.BadParameter(f"sides must be at most {MAX_SIDE}, got {value!r}")
    return h, w


@click.command("info", epilog=examples("biorules segment info --model rwkv_unet_s --size 256",
                                        "biorules --json segment info --size 512x384 --batch 8"))
@click.option("--model", "model_name", type=click.Choice(MODELS), default="rwkv_unet_t", show_default=True,
              help="Model variant.")
@click.option("--size", default="256", show_default=True, callback=_size,
              help="Input size: N (square) or HxW, e.g. 512x384.")
@click.option("--in-channels", type=click.IntRange(min=1, max=4096), default=3, show_default=True,
              help="Input channels.")
@click.option("--num-classes", type=click.IntRange(min=1, max=4096), default=1, show_default=True,
              help="Output classes (1: binary with a sigmoid).")
@click.option("--batch", type=click.IntRange(min=1, max=65536), default=1, show_default=True,
              help="Batch size for the memory figures (MACs are per image).")
@output_options
@pass_context
def info(obj: Context, model_name: str, size: tuple[int, int], in_channels: int, num_classes: int,
         batch: int) -> None:
    """Parameters, MACs (paper convention), peak forward memory (fp32) and tokens per stage
    (docs/rwkv-unet.md)."""
    from segment.info import model_info

    r = model_info(model_name, size, in_channels=in_channels, num_classes=num_classes, batch=batch)
    if obj.json:
        obj.emit_json(r)
        return
    mib = 2.0**20
    m = r["macs"]
    h, w = size
    lines = [
        f"{r['model']}  input {batch}x{in_channels}x{h}x{w}  classes {num_classes}",
        f"parameters (executed)      {r['params']:,}",
        f"parameters (as reported)   {r['params_as_reported']:,}  (+ImageNet head, final norm, unused LNs)",
        f"MACs per image             {m['total'] / 1e9:.3f} G  (encoder {m['encoder'] / 1e9:.3f}, "
        f"CCM {m['ccm'] / 1e9:.3f}, decoder {m['decoder'] / 1e9:.3f}, WKV {m['wkv'] / 1e9:.4f})",
        f"peak memory, inference     {r['memory_inference']['peak'] / mib:.1f} MiB  "
        f"(weights {r['memory_inference']['weights'] / mib:.1f})",
        f"peak memory, train forward {r['memory_training_forward']['peak'] / mib:.1f} MiB",
        "stage  grid        channels  tokens   rwkv blocks  WKV channels",
    ]
    for s in r["stages"]:
        gh, gw = s["grid"]
        lines.append(f"{s['stage']:>5}  {f'{gh}x{gw}':<10}  {s['channels']:>8}  {s['tokens']:>7}  "
                     f"{s['rwkv_blocks']:>11}  {s['wkv_channels']:>12}")
    for line in lines:
        obj.echo(line)
