"""DDP with 2 CPU processes (gloo): the first-step loss equals the single-process loss at the same
global batch (float32, rtol 1e-5). Drop-path is off (its draws are per process)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segment import engine as E

CFG = E.TrainConfig(model="rwkv_unet_test", size=32, epochs=1, batch=12, drop_path=0.0, device="cpu")


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    E.train(CFG, out, command=["ddp-test"])
    assert not dist.is_initialized()  # train() leaves the process group it joined


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_first_step_loss_equals_single_process(tmp_path: Path) -> None:
    # 12 demo training tiles, global batch 12: one iteration, so the epoch loss is the first-step loss
    single = E.train(CFG, tmp_path / "single.zarr", command=["single"]).load()
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "ddp.zarr")), nprocs=2, join=True)
    from segment.results import open_results

    ddp = open_results(tmp_path / "ddp.zarr").load()
    a, b = float(single["train_loss"][0, 0]), float(ddp["train_loss"][0, 0])
    print(f"single {a!r} ddp {b!r}")
    assert abs(a - b) <= 1e-5 * abs(a), (a, b)
    # the step itself agrees too: validation Dice after it is close
    assert abs(float(single["val_dice"][0, 0, 0]) - float(ddp["val_dice"][0, 0, 0])) < 1e-3
