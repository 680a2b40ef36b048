"""Training RWKV-UNet-T on the built-in demo data at 128² on CPU raises the test Dice clearly above
its value after the first epoch (slow: a few minutes on 2 cores)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segment import engine as E


@pytest.mark.slow
def test_demo_training_raises_test_dice(tmp_path: Path) -> None:
    out = tmp_path / "demo.zarr"
    first = tmp_path / "epoch1.pt"

    def keep_first(split: int, epoch: int) -> None:
        if epoch == 1:
            shutil.copy(E.checkpoint_dir(out) / "split0_last.pt", first)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # robust on a shared 2-core machine
    try:
        ds = E.train(E.TrainConfig(model="rwkv_unet_t", size=128, epochs=30, device="cpu"), out,
                     on_epoch_end=keep_first).load()
        after_one = float(E.evaluate_checkpoint(first, device="cpu")["test_dice"].mean())
    finally:
        torch.set_num_threads(threads)
    final = float(ds["test_dice"].mean())
    val = ds["val_dice"].values.ravel()
    print(f"test Dice after epoch 1: {after_one:.4f}, final: {final:.4f}; val Dice per epoch: {np.round(val, 3)}")
    assert final > after_one + 0.2
    assert final > 0.6
