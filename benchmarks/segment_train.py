"""RWKV-UNet training speed: epoch time and images/s for B, S, T, and time to train ``demo`` to its
plateau.

Each model is timed for full training steps (forward, CE+Dice, backward, AdamW step) on random
inputs at ``--size``², after warm-up steps, with bf16 autocast on CUDA and, as the baseline measured
in the same run, the same step in fp32. The epoch time is that of a GlaS random split (133 training
images) at the measured rate. The demo run trains ``rwkv_unet_t`` on the built-in demo data and
reports the cumulative training time of the first epoch whose validation Dice is within 0.01 of
the run's best.

    python benchmarks/segment_train.py --device cuda --size 256 --demo-epochs 60
    python benchmarks/segment_train.py --device cpu --size 128 --models rwkv_unet_t --demo-epochs 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segment.engine import TrainConfig, train
from segment.losses import ce_dice_loss
from segment.model import create_model

GLAS_TRAIN = 133


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rate(name: str, size: int, batch: int, iters: int, warmup: int, device: torch.device, bf16: bool) -> float:
    """Training images per second of ``name`` at ``size``² and ``batch``."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=1).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    y = (torch.rand(batch, size, size, device=device) > 0.5).long()
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = ce_dice_loss(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return iters * batch / (time.perf_counter() - t0)


def demo_plateau(epochs: int, size: int, device: str, model: str = "rwkv_unet_t") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = train(TrainConfig(model=model, size=size, epochs=epochs, device=device), Path(tmp) / "d.zarr")
        wall = time.perf_counter() - t0
        val = ds["val_dice"].isel(split=0, **{"class": 0}).values
        t = np.cumsum(ds["epoch_time"].isel(split=0).values)
        best = float(np.nanmax(val))
        k = int(np.flatnonzero(val >= best - 0.01)[0])
        return {"model": model, "epochs": epochs, "size": size, "plateau_epoch": k + 1, "plateau_train_s": float(t[k]),
                "best_val_dice": best, "test_dice": float(ds["test_dice"].mean()), "wall_s": wall,
                "val_dice": [round(float(v), 4) for v in val]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--models", default="rwkv_unet,rwkv_unet_s,rwkv_unet_t")
    p.add_argument("--demo-epochs", type=int, default=60)
    p.add_argument("--demo-size", type=int, default=128)
    p.add_argument("--demo-model", default="rwkv_unet_t")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    rows = []
    for name in a.models.split(","):
        r = {"model": name, "size": a.size, "batch": a.batch, "device": str(device)}
        modes = [("bf16", True), ("fp32", False)] if device.type == "cuda" else [("fp32", False)]
        for label, bf16 in modes:
            try:
                ips = step_rate(name, a.size, a.batch, a.iters, a.warmup, device, bf16)
            except RuntimeError as e:  # e.g. out of memory: record it, keep the other rows
                print(f"{name} {label}: {type(e).__name__}: {e}", flush=True)
                ips = float("nan")
            r[f"img_s_{label}"] = ips
            r[f"epoch_s_{label}"] = GLAS_TRAIN / ips
        rows.append(r)
        print(json.dumps(r), flush=True)
    result = {"speed": rows}
    if a.demo_epochs > 0:
        result["demo"] = demo_plateau(a.demo_epochs, a.demo_size, a.device, a.demo_model)
        print(json.dumps(result["demo"]), flush=True)
    keys = [k for k in rows[0] if k.startswith(("img_s", "epoch_s"))]
    print(f"\n| model | size | batch | {' | '.join(keys)} |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['batch']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
