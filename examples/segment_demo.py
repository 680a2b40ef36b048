"""Segmentation on the built-in demo data: train RWKV-UNet-T, read the store with xarray, predict.

Trains ``rwkv_unet_t`` at 128² on the 12 training tiles of the stardist nuclei image (CPU is
fine), prints the validation Dice per epoch from the zarr store, the test metrics, and draws
image / truth / prediction of the two test tiles to ``results/segment_demo.png``.

    python examples/segment_demo.py [--epochs 40] [--out results/segment_demo.zarr]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from segment.data import open_dataset
from segment.data.pipeline import eval_items
from segment.engine import (
    TrainConfig,
    checkpoint_dir,
    model_from_checkpoint,
    predict_items,
    summarize,
    train,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--model", default="rwkv_unet_t")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default="results/segment_demo.zarr")
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = TrainConfig(dataset="demo", model=a.model, size=a.size, epochs=a.epochs)
    ds = train(cfg, a.out, overwrite=True, echo=print)

    val = ds["val_dice"].sel(split=0, **{"class": "nucleus"})
    print("\nvalidation Dice per epoch:")
    for e, v in zip(val["epoch"].values, val.values, strict=True):
        print(f"  epoch {int(e):3d}  {float(v):.4f}")
    s = summarize(ds)
    d = s["classes"]["nucleus"]
    print(f"test Dice {d['dice'][0]:.4f}, IoU {d['iou'][0]:.4f}, HD95 {d['hd95'][0]:.2f} px "
          f"(epoch {s['best_epoch'][0]}); object F1 {s['objects']['test']['object_f1'][0]:.4f}")

    data = open_dataset("demo", None)
    tests = [r for r in data.records if r.part == "test"]
    model, meta = model_from_checkpoint(checkpoint_dir(a.out) / "split0_best.pt", torch.device("cpu"))
    items = eval_items(data, tests, int(meta["size"]))
    preds = predict_items(model, items, data.info, torch.device("cpu"))
    fig, axes = plt.subplots(len(items), 3, figsize=(9, 3 * len(items)), squeeze=False)
    for row, it, pred in zip(axes, items, preds, strict=True):
        img = data.load(it.record).image[..., 0]
        for ax, (title, im) in zip(row, (("image", img), ("truth", it.mask), ("prediction", pred)), strict=True):
            ax.imshow(im, cmap="gray")
            ax.set_title(f"{it.record.id}: {title}")
            ax.axis("off")
    fig.tight_layout()
    png = Path(a.out).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
