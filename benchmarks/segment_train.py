"""``biorules segment`` itself timed on a GlaS-sized folder: training img/s of the eager and the
captured (CUDA graph) step for RWKV-UNet-T and B, against the official code's eager figures, and
a whole run's wall time split into compile, training, validation and test.

The script writes a folder in the GlaS layout (85 train, 60 testA, 20 testB images of 775×522
with instance-labelled blob annotations and Grade.csv) and runs the CLI on it in a fresh process
per configuration, exactly as a user does (``python -m cli.main segment --dataset glas ...``, the
real reader, resizing, GPU augmentation, validation and test), then reads the run's own store:
``train_images_per_second`` per epoch (median over epochs 2..E), ``compile_time``, ``epoch_time``,
``val_time`` and ``test_time``. The official figures (img/s, one H200, 256², batch 16, bf16,
AdamW, eager) are those measured side by side with ours in issue 14: T 209, B 121.

    python benchmarks/segment_train.py --epochs 40                  # on a CUDA machine
    python benchmarks/segment_train.py --models rwkv_unet_t --steps eager,graph --epochs 5
    python benchmarks/segment_train.py --models rwkv_unet_t --steps graph --epochs 5 --torchrun 0,1

``--torchrun 0,1`` runs every configuration as a plain process (0) and under ``torchrun`` with one
process per GPU (1, 2, ...: DDP over NCCL; with one rank the all-reduces are still in the step).

If ``--epochs`` is below 40, the 40-epoch wall time is extrapolated from the measured parts
(compile + test once, training and validation per epoch × 40) and marked as such.

Measured 2026-12-02 on one H200 (torch 2.11, Triton 3.6), one run, 20 epochs (a 40-epoch run of all
four did not fit the device time at hand; the 40-epoch figures are extrapolated as above):

    | model | step  | img/s | × official eager | × our eager | compile s | train s | val s | test s | other s | wall s |
    | T     | eager |  287  | 1.38             | 1.00        |  6.8      | 4.6     | 2.3   | 21.1   | 16.4    | 51.1   |
    | T     | graph |  712  | 3.41             | 2.48        |  8.3      | 1.8     | 0.7   | 18.7   | 16.4    | 45.9   |
    | B     | eager |  208  | 1.72             | 1.00        | 10.1      | 6.3     | 2.8   | 16.5   | 23.1    | 58.8   |
    | B     | graph |  416  | 3.44             | 2.00        |  8.7      | 3.2     | 0.9   | 21.5   | 25.0    | 59.3   |

40 epochs (extrapolated): T graph 48 s = compile 8 + train 4 + validation 1 + test 19 + startup and
data 16; T eager 58; B graph 63; B eager 68. The test phase (HD95 and GlaS object metrics of 80
images at 775×522 on the CPU) and process start-up dominate; training itself is seconds.

A measured 40-epoch run (``--models rwkv_unet_t --steps graph --epochs 40``, a freshly started
machine, cold kernel caches): 712 img/s, wall 112 s = compile 46 + train 4 + validation 1 + test 31
+ startup and data 30.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OFFICIAL_EAGER = {"rwkv_unet_t": 209.0, "rwkv_unet": 121.0}
"""Official RWKV-UNet training img/s, eager, one H200 (issue 14)."""

GLAS_PARTS = (("train", 85), ("testA", 60), ("testB", 20))
WIDTH, HEIGHT = 775, 522


def write_glas(root: Path, seed: int = 0) -> Path:
    """A GlaS-layout folder of random tissue-like images with elliptic glands as instance labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = ["name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)"]
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for part, n in GLAS_PARTS:
        for k in range(1, n + 1):
            labels = np.zeros((HEIGHT, WIDTH), np.uint8)
            for j in range(1, int(rng.integers(4, 12)) + 1):
                cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
                ry, rx = rng.uniform(20, 70), rng.uniform(20, 90)
                labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = j
            img = rng.normal(170, 25, (HEIGHT, WIDTH, 3))
            img[labels > 0] -= (60, 90, 30)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{part}_{k}.bmp")
            Image.fromarray(labels).save(root / f"{part}_{k}_anno.bmp")
            rows.append(f"{part}_{k},{k},{'benign' if k % 2 else 'malignant'},adenomatous")
    (root / "Grade.csv").write_text("\n".join(rows) + "\n")
    return root


def run_cli(data: Path, out: Path, model: str, step: str, epochs: int, size: int, batch: int,
            ranks: int = 0) -> dict:
    """One ``biorules segment`` run in a fresh process (under ``torchrun`` with ``ranks`` processes
    when > 0); its timing as the store records it."""
    import xarray as xr

    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", "-m", "cli.main"] \
        if ranks else ["-c", "from cli.main import main; main()"]
    cmd = [sys.executable, *launch, "--quiet", "segment", "--dataset", "glas",
           "--data-dir", str(data), "--model", model, "--size", str(size), "--batch", str(batch),
           "--epochs", str(epochs), "--step", step, "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    step = f"{step} ddp×{ranks}" if ranks else step
    if done.returncode != 0:
        return {"model": model, "step": step, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    ds = xr.open_zarr(out)
    ips = ds["train_images_per_second"].isel(split=0).values
    r = {
        "model": model, "step": step, "epochs": epochs, "wall_s": wall,
        "img_s": float(np.median(ips[1:] if len(ips) > 1 else ips)), "img_s_epoch1": float(ips[0]),
        "compile_s": float(ds["compile_time"].values[0]), "train_s": float(np.nansum(ds["epoch_time"].values)),
        "val_s": float(np.nansum(ds["val_time"].values)), "test_s": float(ds["test_time"].values[0]),
        "test_dice": float(np.nanmean(ds["test_dice"].values)), "train_step": ds.attrs.get("train_step"),
    }
    r["other_s"] = wall - r["compile_s"] - r["train_s"] - r["val_s"] - r["test_s"]
    return r


def forty(r: dict) -> dict:
    """The 40-epoch wall time and its parts: measured when the run had 40 epochs, else extrapolated."""
    e = r["epochs"]
    per = {k: r[k] / e for k in ("train_s", "val_s")}
    parts = {"compile_s": r["compile_s"], "train_s": per["train_s"] * 40, "val_s": per["val_s"] * 40,
             "test_s": r["test_s"], "other_s": r["other_s"]}
    return {**parts, "wall_s": sum(parts.values()) if e != 40 else r["wall_s"], "measured": e == 40}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="rwkv_unet_t,rwkv_unet")
    p.add_argument("--steps", default="eager,graph")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--torchrun", default="0", help="comma list of process counts; 0 = a plain process")
    p.add_argument("--data", default=None, help="an existing GlaS-layout folder (default: write one)")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = Path(a.data) if a.data else write_glas(Path(tmp) / "glas")
        print(f"data: {data} ({time.perf_counter() - t0:.1f} s to write)", flush=True)
        rows = []
        for model in a.models.split(","):
            for step in a.steps.split(","):
                for ranks in map(int, a.torchrun.split(",")):
                    out = Path(tmp) / f"{model}-{step}-{ranks}.zarr"
                    r = run_cli(data, out, model, step, a.epochs, a.size, a.batch, ranks)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    print(f"\nbiorules segment --dataset glas (85/60/20 images, 775x522), --size {a.size} --batch {a.batch}, "
          f"{a.epochs} epochs; training img/s = median over epochs 2..{a.epochs} (5 steps of 16 per epoch, "
          "the last partial batch dropped)")
    print("| model | step | img/s | × official eager | × our eager | compile s | train s | val s | test s | "
          "other s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    eager = {r["model"]: r["img_s"] for r in rows if r.get("step") == "eager" and "img_s" in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['step']} | failed: {r['error']} |")
            continue
        off = OFFICIAL_EAGER.get(r["model"], float("nan"))
        ours = eager.get(r["model"], float("nan"))
        print(f"| {r['model']} | {r['step']} | {r['img_s']:.0f} | {r['img_s'] / off:.2f} | {r['img_s'] / ours:.2f} | "
              f"{r['compile_s']:.1f} | {r['train_s']:.1f} | {r['val_s']:.1f} | {r['test_s']:.1f} | "
              f"{r['other_s']:.1f} | {r['wall_s']:.1f} |")
    print("\n40-epoch wall time (s): " + ("measured" if a.epochs == 40 else
                                          f"extrapolated from {a.epochs} epochs (compile, test once; train, val × 40)"))
    for r in rows:
        if "error" not in r:
            f = forty(r)
            print(f"  {r['model']} {r['step']}: {f['wall_s']:.0f} = compile {f['compile_s']:.0f} + train "
                  f"{f['train_s']:.0f} + validation {f['val_s']:.0f} + test {f['test_s']:.0f} + startup/data "
                  f"{f['other_s']:.0f}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
