"""``biorules export``: a stored network to a neuromorphic toolchain's format (NIR)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import Context, examples, output_options, pass_context


def _cells(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, object]:
    """``--cell KEY=VALUE`` (repeatable) as a selection: numbers where they parse, else text."""
    out: dict[str, object] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. gain=1.5)", ctx=ctx, param=param)
        text = value.strip()
        try:
            out[key.strip()] = int(text)
        except ValueError:
            try:
                out[key.strip()] = float(text)
            except ValueError:
                out[key.strip()] = text
    return out


@click.command(epilog=examples(
    "biorules train --model lif --rule eprop --out results/lif.zarr && biorules export results/lif.zarr lif.nir",
    "biorules export results/sweep.zarr net.nir --cell gain=1.5 --cell seed=0 --stage initial"))
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["nir"]), default="nir", show_default=True,
              help="Output format: NIR graph (HDF5), read by nir.read.")
@click.option("--cell", "cell", multiple=True, callback=_cells, metavar="KEY=VALUE",
              help="Select one network of a sweep or stack (repeat: --cell gain=1.5 --cell seed=0).")
@click.option("--stage", type=click.Choice(["final", "initial"]), default="final", show_default=True,
              help="The trained network, or the one before training.")
@click.option("--node", type=click.Choice(["lif", "cubalif"]), default=None,
              help="NIR neuron node of a LIF network  [default: lif (box cell), cubalif (current cell)]")
@click.option("--no-readout", is_flag=True, help="Leave out the readout: the graph outputs the spikes.")
@output_options
@pass_context
def export(ctx: Context, store, out, fmt, cell, stage, node, no_readout) -> None:
    """Export the network stored in STORE (its weights group) to OUT."""
    import warnings

    from biorules.errors import InputError

    if out.exists():
        raise click.BadParameter(f"{out} already exists; choose another path or remove it", param_hint="'OUT'")
    from biorules import export as nir_export
    from biorules import store as stores

    try:
        stores.check_writable(out, "OUT")
    except InputError as e:
        raise click.UsageError(str(e)) from None
    from biorules.weights import load_network

    try:
        net = load_network(store, stage=stage, **cell)
        dt = None
        if net.kind == "rate":
            dt = float(stores.open_store(store).attrs.get("task_dt", 20.0))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            nir_export.write_nir(net, out, node=node, readout=not no_readout, dt=dt)
    except InputError as e:
        raise click.UsageError(str(e)) from None
    for w in caught:
        ctx.echo(f"note: {w.message}")
    kind = f"{net.kind} network, N={net.n}"
    ctx.echo(f"{fmt}: {kind} ({stage} weights) -> {out}")
    ctx.emit_json({"out": str(out), "format": fmt, "model": net.kind, "n": net.n, "stage": stage})
