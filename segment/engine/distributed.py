"""Devices and process groups: the device to run on, ``torchrun`` (DDP) and global BatchNorm.

Under ``torchrun`` (any number of processes, one included) the process joins the group (gloo on
CPU, NCCL on CUDA) and trains under DDP; the global batch is split across ranks, loss statistics
and BatchNorm statistics are summed over ranks, so every rank computes the loss of the global
batch; rank 0 evaluates and writes. On CUDA, DDP is built on a side stream, which is what lets a
CUDA graph capture the whole step with DDP's all-reduces inside (``segment.engine.trainer``).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn

from biorules.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else the CPU; a CUDA name without CUDA is an InputError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)") from None


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where the depthwise kernels and cuDNN read NHWC natively; NCHW elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def autocast(device: torch.device, amp: str, cache: bool = True) -> torch.autocast:
    """bf16 autocast on CUDA for ``amp`` auto/bf16; a disabled context elsewhere. ``cache`` False
    re-casts weights at every use, as a CUDA graph capture needs (no cached casts outside the graph)."""
    use = device.type == "cuda" and amp in ("auto", "bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use, cache_enabled=cache)


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Whether this process is a rank of a launched group: ``WORLD_SIZE`` > 1, or started by
    ``torchrun`` (which sets ``TORCHELASTIC_RUN_ID``) with any number of processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def joined() -> bool:
    """Whether a process group is running (then the model trains under DDP, even with one rank)."""
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the launched process group (:func:`launched`; gloo on CPU, NCCL on CUDA)."""
    if launched() and not dist.is_initialized():
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    rank, size = world()
    if joined() and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return rank, size, device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``t`` over the process group."""
    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in favour of a non-differentiable private API
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are summed over the process group (any device).

    mean = Σx/N, var = Σx²/N − mean² over all ranks (differentiable all-reduce); running
    statistics use the unbiased N/(N−1) variance, as ``nn.BatchNorm2d`` does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        n_local = torch.full((1,), x.numel() / c, dtype=torch.float32, device=x.device)
        stats = all_reduce_sum(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n_local]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(float(n) - 1, 1.0))
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` by a :class:`GlobalBatchNorm2d` with the same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(next(child.buffers(), torch.zeros(())).device)
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


def wrap_ddp(model: nn.Module, device: torch.device, ddp: bool) -> tuple[nn.Module, nn.Module]:
    """(module to train, module to call): with ``ddp``, global BatchNorm and DistributedDataParallel.

    On CUDA the DDP wrapper is built on a side stream: a CUDA graph that captures the backward pass
    (and with it DDP's all-reduces) needs DDP's state made outside the capturing stream (PyTorch's
    notes on CUDA graphs with DDP)."""
    if not ddp:
        return model, model
    if device.type != "cuda":
        model = convert_batchnorm(model)
        return model, nn.parallel.DistributedDataParallel(model)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    torch.cuda.current_stream(device).wait_stream(side)
    return model, wrapped
