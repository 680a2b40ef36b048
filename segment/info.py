"""Model facts: parameters, MACs, peak memory of a forward pass, tokens per stage (docs/rwkv-unet.md).

Conventions (docs/rwkv-unet.md):

- **executed parameters**: every parameter of the built model (the package builds only modules
  that run; the tests check that each receives a gradient).
- **"as reported" parameters**: executed + the ImageNet head and final norm
  (1000·C3 + 1000 + 2·C3) + the LayerNorms the pre-refactor official code built but never used
  (a post-norm of 2·mid in every non-RWKV encoder block, 2·dim_in in every up block).
- **MACs** of one image: Conv2d = out_elements·(C_in/groups)·k_h·k_w, Linear =
  out_elements·in_features (biases not counted), Bi-WKV = 8 per token-channel; norms,
  activations, shifts, resizes, pooling and element-wise ops are not counted.
- **peak memory**: the largest number of bytes held at once by parameters, buffers, the input
  and every tensor the forward pass creates, tracked per storage at the dispatcher level (works
  on the ``meta`` device without computing anything). ``inference`` runs under ``no_grad``;
  ``training`` keeps the autograd graph, so tensors saved for backward stay counted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from biorules.errors import InputError
from segment.blocks import ConvNormAct, IRBlock, SpatialMix, UpBlock
from segment.model import RWKVUNet, create_model
from segment.wkv import wkv_flops

IMAGENET_CLASSES = 1000


def count_parameters(model: nn.Module) -> int:
    """Executed parameters: all parameters of the model (only running modules are built)."""
    return sum(p.numel() for p in model.parameters())


def reported_parameters(model: RWKVUNet) -> int:
    """Parameters under the paper's convention (docs/rwkv-unet.md): executed + ImageNet head, final norm and
    the built-but-unused LayerNorms of the pre-refactor official code."""
    c3 = model.cfg.widths[-1]
    extra = IMAGENET_CLASSES * c3 + IMAGENET_CLASSES + 2 * c3
    for m in model.modules():
        if isinstance(m, IRBlock) and not m.rwkv:
            extra += 2 * m.dim_mid
        elif isinstance(m, UpBlock):
            extra += 2 * m.conv.conv.in_channels
    return count_parameters(model) + extra


def count_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """MACs of ``model(x)`` per image under the docs/rwkv-unet.md convention, split by top-level part.

    Returns {"total", "encoder", "ccm", "decoder", "head", "wkv"}; runs the forward pass once
    (any device, ``meta`` included) with hooks on Conv2d, depthwise ConvNormAct, Linear and
    SpatialMix.
    """
    parts: dict[str, int] = {"encoder": 0, "ccm": 0, "decoder": 0, "head": 0, "wkv": 0}
    batch = x.shape[0]
    handles = []

    def part_of(name: str) -> str:
        if name.startswith("encoder"):
            return "encoder"
        if name.startswith("ccm"):
            return "ccm"
        if name.startswith("decoder"):
            return "decoder"
        return "head"

    for name, mod in model.named_modules():
        part = part_of(name)
        if isinstance(mod, ConvNormAct) and mod.depthwise:  # segment.dwconv, not the Conv2d module

            def hook(m, _inp, out, part=part):
                kh, kw = m.conv.kernel_size
                parts[part] += out.numel() * kh * kw
        elif isinstance(mod, nn.Conv2d):

            def hook(m, _inp, out, part=part):
                kh, kw = m.kernel_size
                parts[part] += out.numel() * (m.in_channels // m.groups) * kh * kw
        elif isinstance(mod, nn.Linear):

            def hook(m, _inp, out, part=part):
                parts[part] += out.numel() * m.in_features
        elif isinstance(mod, SpatialMix):

            def hook(m, inp, _out, part=part):
                _, T, C = inp[0].shape
                n = batch * wkv_flops(T, C)
                parts[part] += n
                parts["wkv"] += n
        else:
            continue
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    out = {k: v // batch for k, v in parts.items()}
    out["total"] = out["encoder"] + out["ccm"] + out["decoder"] + out["head"]
    return out


class _PeakBytes(TorchDispatchMode):
    """Tracks the bytes of live storages created by dispatched ops; ``peak`` is their maximum."""

    def __init__(self, known: list[torch.Tensor]) -> None:
        super().__init__()
        self.known = {StorageWeakRef(t.untyped_storage()).cdata for t in known}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _prune(self) -> None:
        dead = [key for key, (ref, _) in self.live.items() if ref.expired()]
        for key in dead:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._prune()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                ref = StorageWeakRef(st)
                if ref.cdata in self.known or ref.cdata in self.live:
                    continue
                self.live[ref.cdata] = (ref, st.nbytes())
                self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def peak_forward_bytes(model: nn.Module, x: torch.Tensor, *, training: bool = False) -> dict[str, int]:
    """Peak bytes during ``model(x)``: {"weights", "input", "activations", "peak"} (see module doc).

    ``training=True`` keeps the autograd graph (activations saved for backward stay live).
    """
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    inp = x.numel() * x.element_size()
    mode = _PeakBytes([*tensors, x])
    was_training = model.training
    model.train(training)
    try:
        with torch.set_grad_enabled(training), mode:
            out = model(x)
            del out
    finally:
        model.train(was_training)
    return {"weights": weights, "input": inp, "activations": mode.peak, "peak": weights + inp + mode.peak}


def stage_tokens(model: RWKVUNet, height: int, width: int) -> list[dict[str, Any]]:
    """Per encoder stage: grid, channels, tokens and the Bi-WKV width (0 without RWKV)."""
    Hp, Wp = height + (-height) % 16, width + (-width) % 16
    rows = []
    for s in range(5):
        blocks = getattr(model.encoder, f"stage{s}")
        f = 2**s
        h, w = Hp // f, Wp // f
        wkv_c = max((b.dim_mid for b in blocks if b.rwkv), default=0)
        rows.append(
            {
                "stage": s,
                "grid": [h, w],
                "channels": blocks[-1].proj.conv.out_channels,
                "tokens": h * w,
                "rwkv_blocks": sum(1 for b in blocks if b.rwkv),
                "wkv_channels": wkv_c,
            }
        )
    return rows


def parse_size(size: str | int | tuple[int, int]) -> tuple[int, int]:
    """``256`` → (256, 256); ``"512x384"`` → (512, 384) (height × width)."""
    if isinstance(size, tuple):
        h, w = size
    elif isinstance(size, int):
        h = w = size
    else:
        text = str(size).lower().replace("×", "x")
        try:
            if "x" in text:
                h, w = (int(p) for p in text.split("x"))
            else:
                h = w = int(text)
        except ValueError:
            raise InputError(f"--size must be N or HxW, got {size!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"--size must be positive, got {size!r}")
    return h, w


def model_info(
    name: str,
    size: str | int | tuple[int, int] = 256,
    in_channels: int = 3,
    num_classes: int = 1,
    batch: int = 1,
    device: str = "meta",
) -> dict[str, Any]:
    """Parameters, MACs, peak forward memory and tokens per stage of variant ``name``.

    Runs on the ``meta`` device by default (shapes only, instant at any size). Memory is for a
    fp32 forward of ``batch`` images; MACs are per image.
    """
    h, w = parse_size(size)
    if batch < 1:
        raise InputError(f"--batch must be ≥ 1, got {batch}")
    dev = torch.device(device)
    with torch.device(dev):
        model = create_model(name, in_channels=in_channels, num_classes=num_classes, wkv="scan")
    model.eval()
    try:
        x = torch.zeros(batch, in_channels, h, w, device=dev)
        macs = count_macs(model, x[:1])
        mem_inf = peak_forward_bytes(model, x, training=False)
        mem_train = peak_forward_bytes(model, x, training=True)
    except RuntimeError as e:  # a tensor of the forward pass holds more than 2**63 elements or bytes
        if "overflow" not in str(e):
            raise
        raise InputError(f"--size {h}x{w} with --batch {batch} is too large to measure: a tensor of the forward "
                         "pass would exceed 64-bit sizes; use a smaller --size or --batch") from None
    return {
        "model": name,
        "input": [batch, in_channels, h, w],
        "num_classes": num_classes,
        "params": count_parameters(model),
        "params_as_reported": reported_parameters(model),
        "macs": macs,
        "memory_inference": mem_inf,
        "memory_training_forward": mem_train,
        "stages": stage_tokens(model, h, w),
    }
