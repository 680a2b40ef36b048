"""The training step of segment.engine.trainer: the step function that a CUDA graph captures, run
eagerly, against the plain step; static-shape batches; the lr schedule through AdamW's lr tensor;
the warm-up snapshot. GPU tests (``-m gpu``) replay the captured step and forward."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from segment.engine import trainer as T
from segment.engine.config import TrainConfig, resolve_step
from segment.losses import LossWeights, ce_dice_loss
from segment.model import create_model


def _model(seed: int = 0, dev: str = "cpu") -> nn.Module:
    torch.manual_seed(seed)
    return create_model("rwkv_unet_test", in_channels=3, num_classes=1).to(dev).train()


def _batch(dev: str = "cpu", n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, size, size, generator=g)
    y = (torch.rand(n, size, size, generator=g) > 0.6).long()
    return x.to(dev), y.to(dev)


def _plain_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float,
                clip: float) -> torch.Tensor:
    """The textbook step: float lr in the group, zero_grad, forward, loss, backward, clip, step."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss = ce_dice_loss(model(x).float(), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.detach()


def test_step_function_run_eagerly_equals_the_plain_step() -> None:
    """Three steps along the poly schedule: the same losses and weights (float32, to 1e-6)."""
    a, b = _model(), _model()
    cfg = TrainConfig(lr=1e-2, weight_decay=1e-4)
    opt_a = torch.optim.AdamW(a.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    opt_b = T.make_optimizer(b, cfg, torch.device("cpu"))
    fn = T.StepFunction(b, b, opt_b, LossWeights(), clip=0.5, amp="auto", device=torch.device("cpu"), fg=1)
    x, y = _batch()
    for it in range(3):
        lr = T.lr_at(it, 3, cfg.lr, "poly")
        torch.manual_seed(it)  # the same drop-path draws
        want = _plain_step(a, opt_a, x, y, lr, 0.5)
        T.set_lr(opt_b, lr)
        torch.manual_seed(it)
        got, stats = fn(x, y)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert stats.shape == (3, 1) and stats.dtype == torch.float64 and float(stats[2, 0]) == float((y == 1).sum())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6, msg=name)


def test_schedule_reaches_adamw_through_its_lr_tensor() -> None:
    """The lr tensor keeps its identity, takes every scheduled value, and AdamW's first update is −lr·sign(g)."""
    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    holder = nn.Module()
    holder.p = p
    opt = T.make_optimizer(holder, TrainConfig(lr=1e-3, weight_decay=0.0), torch.device("cpu"))
    lr_t = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr_t) and opt.defaults["fused"]
    total = 10
    for it in (0, 3, 9, 10):
        T.set_lr(opt, T.lr_at(it, total, 1e-3, "poly"))
        assert opt.param_groups[0]["lr"] is lr_t
        assert float(lr_t) == pytest.approx(1e-3 * (1 - it / total) ** 0.9, rel=1e-6, abs=1e-12)
    T.set_lr(opt, 0.25)
    p.grad = torch.tensor([0.5, -4.0, 2.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.75, -1.75, 2.75]), rtol=0, atol=1e-6)


def test_snapshot_undoes_warm_up_steps() -> None:
    """After warm-up steps and restore, a step gives what a step from the fresh state gives (exactly)."""
    a, b = _model(), _model()
    cfg = TrainConfig(lr=1e-2)
    x, y = _batch()
    fns = []
    for m in (a, b):
        opt = T.make_optimizer(m, cfg, torch.device("cpu"))
        fns.append(T.StepFunction(m, m, opt, LossWeights(), 1.0, "off", torch.device("cpu"), 1))
    restore = T.snapshot(a, fns[0].opt)
    for _ in range(2):
        fns[0](x, y)
    restore()
    assert all(float(v.abs().sum()) == 0 for st in fns[0].opt.state.values() for v in st.values())
    torch.manual_seed(0)
    la, _ = fns[0](x, y)
    torch.manual_seed(0)
    lb, _ = fns[1](x, y)
    assert torch.equal(la, lb)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_batches_have_a_static_shape_and_the_last_partial_one_is_dropped(tmp_path) -> None:
    """demo: 12 training images at --batch 5 -> 2 iterations of 5 (2 images dropped), every batch (4, 1, 32, 32)."""
    from segment import results as R
    from segment.engine.checkpoint import checkpoint_dir

    cfg = TrainConfig(model="rwkv_unet_test", size=32, epochs=1, batch=5, device="cpu").resolved()
    ds, splits = T.prepare(cfg)
    store = T.RunStore(tmp_path / "r.zarr", checkpoint_dir(tmp_path / "r.zarr"), {}, [])
    tr = T.Trainer(cfg, ds, splits[0], 0, store, torch.device("cpu"))
    n = len(splits[0].train)
    assert (n, tr.iters, tr.gbatch) == (12, 2, 5) and tr.step_kind == "eager"
    tr.store.write = lambda *a, **k: None  # no store here
    tr.on_epoch_start(1)
    shapes = {tuple(tr.batch(i)[0].shape) for i in range(tr.iters)}
    assert shapes == {(5, 1, 32, 32)}
    assert "batches" not in R.EPOCH_VARS  # the choice is an attr (trainer.STATIC_BATCHES), not a variable
    assert "partial batch is dropped" in T.STATIC_BATCHES


def test_step_choice() -> None:
    from biorules.errors import InputError

    assert resolve_step("auto", "cuda") == "graph" and resolve_step("auto", "cpu") == "eager"
    assert resolve_step("graph", "cuda") == "graph" and resolve_step("compile", "cpu") == "compile"
    with pytest.raises(InputError, match="--step graph needs a CUDA device"):
        resolve_step("graph", "cpu")


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_graph_step_replays_the_eager_step() -> None:
    """Captured (after warm-up and restore) and eager steps on the same batches: same losses and weights."""
    dev = torch.device("cuda")
    cfg = TrainConfig(lr=1e-3)
    a = _model(0, "cuda").to(memory_format=torch.channels_last)
    b = copy.deepcopy(a)
    steps = []
    for m, kind in ((a, T.EagerStep), (b, T.GraphStep)):
        opt = T.make_optimizer(m, cfg, dev)
        steps.append(kind(T.StepFunction(m, m, opt, LossWeights(), 1.0, "bf16", dev, 1)))
    x, y = _batch("cuda", n=4, size=64)
    x = x.contiguous(memory_format=torch.channels_last)
    restore = T.snapshot(b, steps[1].fn.opt)
    steps[1].prepare(x, y)
    restore()
    for it in range(4):
        xi, yi = x.roll(it, 0), y.roll(it, 0)
        outs = []
        for s in steps:
            T.set_lr(s.fn.opt, T.lr_at(it, 4, 1e-3, "cosine"))
            loss, stats = s(xi, yi)
            outs.append((loss.clone(), stats.clone()))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-2, atol=1e-4)
        assert torch.equal(outs[1][1][2], outs[0][1][2])  # the ground-truth counts
    # AdamW's early updates are ≈ lr·sign(g): a bf16 rounding that flips a tiny gradient moves a weight by ≤ 2·lr
    diff = max(float((pb - pa).abs().max()) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    assert diff <= 2 * 4 * 1e-3


@pytest.mark.gpu
def test_graph_forward_pads_and_matches_the_model() -> None:
    from segment.engine.inference import GraphForward

    m = _model(0, "cuda").eval()
    fwd = GraphForward(m, batch=4, amp="off")
    x, _ = _batch("cuda", n=3, size=64)
    with torch.no_grad():
        want = m(x)
    got = fwd(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for p in m.parameters():  # weights change in place: the graph sees them
            p.mul_(0.5)
        want2 = m(x)
    torch.testing.assert_close(fwd(x), want2, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_train_with_the_graph_step_on_cuda(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    import seg_fixtures as fx

    from segment.engine import train

    data = fx.make_glas(tmp_path / "glas", n_train=8, n_a=2, n_b=1)
    cfg = TrainConfig(dataset="glas", data_dir=str(data), model="rwkv_unet_test", size=32, epochs=2, batch=4,
                      device="cuda")
    ds = train(cfg, tmp_path / "g.zarr")
    assert ds.attrs["train_step"] == "graph"
    assert float(ds["compile_time"][0]) > 0 and bool(torch.isfinite(torch.tensor(ds["train_loss"].values)).all())
    from biorules.store import STATUS

    assert int(ds["status"][0]) == STATUS["done"] and float(ds["test_time"][0]) > 0


def _ddp_graph_rank(rank: int, port: int, out: str) -> None:
    """One NCCL rank (as ``torchrun --nproc-per-node 1`` starts it): the captured DDP step against
    the eager step of a plain copy; DDP's bucket all-reduces are issued inside the capture."""
    import os

    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from segment.engine.distributed import init_distributed, joined, wrap_ddp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1",
                      TORCHELASTIC_RUN_ID="ddp-graph-test")
    _, size, dev = init_distributed(torch.device("cuda"))
    assert joined() and dist.get_backend() == "nccl" and size == 1
    try:
        cfg = TrainConfig(lr=1e-3)
        a = _model(0, "cuda").to(memory_format=torch.channels_last)
        b = copy.deepcopy(a)
        b, net = wrap_ddp(b, dev, True)
        opt_a, opt_b = T.make_optimizer(a, cfg, dev), T.make_optimizer(b, cfg, dev)
        eager = T.EagerStep(T.StepFunction(a, a, opt_a, LossWeights(), 1.0, "bf16", dev, 1))
        graph = T.GraphStep(T.StepFunction(net, b, opt_b, LossWeights(), 1.0, "bf16", dev, 1))
        capturing = []

        def hook(group, bucket):  # DDP's own all-reduce (mean over ranks), noting whether a graph records it
            capturing.append(torch.cuda.is_current_stream_capturing())
            return allreduce_hook(group, bucket)

        net.register_comm_hook(None, hook)
        x, y = _batch("cuda", n=4, size=64)
        x = x.contiguous(memory_format=torch.channels_last)
        restore = T.snapshot(b, opt_b)
        graph.prepare(x, y)
        restore()
        warm = capturing.index(True)  # the buckets of the 11 warm-up steps, then those of the captured step
        assert warm >= T.DDP_WARMUP and capturing == [False] * warm + [True] * (len(capturing) - warm)
        for it in range(4):
            xi, yi = x.roll(it, 0), y.roll(it, 0)
            losses = []
            for s, opt in ((eager, opt_a), (graph, opt_b)):
                T.set_lr(opt, T.lr_at(it, 4, 1e-3, "cosine"))
                losses.append(s(xi, yi)[0].clone())
            torch.testing.assert_close(losses[1], losses[0], rtol=1e-2, atol=1e-4)
        diff = max(float((pb - pa).abs().max()) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
        assert diff <= 2 * 4 * 1e-3
        Path(out).write_text(str(len(capturing) - warm))  # buckets all-reduced inside the graph
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
def test_graph_step_under_ddp_holds_the_all_reduce_and_replays_the_eager_step(tmp_path) -> None:
    """DDP over NCCL with one rank (one GPU): DDP's gradient all-reduces are recorded into the graph,
    and its replays follow the eager step of a plain copy (bf16 tolerance, as the single-process test)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = tmp_path / "buckets"
    mp.spawn(_ddp_graph_rank, args=(port, str(done)), nprocs=1, join=True)
    assert int(done.read_text()) >= 1  # the rank passed its checks; at least one bucket is in the graph
