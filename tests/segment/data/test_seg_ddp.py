"""DDP with 2 CPU processes (gloo): the first-step loss equals the single-process loss at the same
global batch (float32, rtol 1e-5). Drop-path is off (its draws are per process). One process
started by torchrun joins a group of one and trains under DDP, with the plain run's numbers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
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


def _one_rank(rank: int, port: int, out: str) -> None:
    """A process as ``torchrun --nproc-per-node 1`` starts it: WORLD_SIZE 1, TORCHELASTIC_RUN_ID set."""
    from segment.engine.distributed import joined, wrap_ddp
    from segment.engine.trainer import DDP_WARMUP, warmup_iterations

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1",
                      TORCHELASTIC_RUN_ID="one-rank-test")
    torch.set_num_threads(1)
    seen = []
    E.train(CFG, out, command=["one-rank"], on_epoch_end=lambda k, e: seen.append((joined(), dist.get_world_size())))
    assert seen == [(True, 1)], seen  # trained inside a group of one
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        model, net = wrap_ddp(torch.nn.Linear(2, 2), torch.device("cpu"), joined())
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel) and net.module is model
        assert warmup_iterations(net) == DDP_WARMUP == 11 and warmup_iterations(model) == 3
    finally:
        dist.destroy_process_group()


def test_one_launched_process_trains_under_ddp_with_the_plain_numbers(tmp_path: Path) -> None:
    single = E.train(CFG, tmp_path / "single.zarr", command=["single"]).load()
    mp.spawn(_one_rank, args=(_free_port(), str(tmp_path / "one.zarr")), nprocs=1, join=True)
    from segment.results import open_results

    one = open_results(tmp_path / "one.zarr").load()
    a, b = float(single["train_loss"][0, 0]), float(one["train_loss"][0, 0])
    assert abs(a - b) <= 1e-6 * abs(a), (a, b)  # a sum over one rank, divided by one
    assert float(single["val_dice"][0, 0, 0]) == pytest.approx(float(one["val_dice"][0, 0, 0]), abs=1e-5)


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
