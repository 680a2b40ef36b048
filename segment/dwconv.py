"""Depthwise K×K convolution, 'same' padding, stride 1 or 2: the ``conv_local`` of every block
(docs/rwkv-unet.md: 5×5 in the encoder; docs/rwkv-unet.md: 9×9 in the decoder).

y[b, c, h, x] = Σ_{i,j} x[b, c, h·s − p + i, x·s − p + j] · w[c, i, j], p = K // 2, no bias: the
reference is ``F.conv2d(..., groups=C)``.

Backends (``depthwise_conv2d(..., backend=name)``):

- ``torch``: ``F.conv2d`` with groups = C (cuDNN on GPU); the reference.
- ``triton``: fused channels-last kernels (``segment._dwconv_triton``) for the forward pass, ∂x
  and ∂w, registered as the custom op ``segment::dwconv2d`` so that ``torch.compile`` keeps it
  whole. cuDNN's grouped kernels for 5×5 and 9×9 taps were 41 % of a training step of
  RWKV-UNet-T on an H200 (``benchmarks/model.py``), most of it in ∂w.

``auto`` picks ``triton`` for CUDA tensors when Triton imports and the kernel is at least
``AUTO_TRITON_MIN_KERNEL`` wide, else ``torch``. Timed layer by layer on an H200 (bf16, batch 16,
256², ``benchmarks/dwconv.py``), cuDNN's 9×9 depthwise kernels are 3–6× slower than ours
(RWKV-UNet-T decoder: 3.46 ms forward, 6.43 ms backward against 0.54 and 1.99 ms), while its 5×5
kernels beat ours (encoder: 0.50 / 2.24 ms against 0.79 / 3.91 ms). Under autocast the op runs
in the autocast dtype, as ``F.conv2d`` does; accumulation is always fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biorules.errors import InputError
from segment.backends import resolve, triton_kernels_available

BACKENDS = ("auto", "torch", "triton")

#: smallest kernel side that ``auto`` sends to the Triton kernels (cuDNN is faster below it)
AUTO_TRITON_MIN_KERNEL = 7


def triton_available() -> bool:
    """True when the Triton kernels can be imported and CUDA is present."""
    return triton_kernels_available("_dwconv_triton")


def resolve_backend(backend: str, device: torch.device, kernel_size: int | None = None) -> str:
    """Map ``auto`` to a concrete backend for tensors on ``device`` and, when given, a K×K kernel
    (narrower than ``AUTO_TRITON_MIN_KERNEL``: ``torch``); validate the name."""
    name = resolve(backend, device, choices=BACKENDS, fallback="torch", what="depthwise-conv",
                   module="_dwconv_triton")
    if backend == "auto" and kernel_size is not None and kernel_size < AUTO_TRITON_MIN_KERNEL:
        return "torch"
    return name


def out_size(n: int, stride: int) -> int:
    """Output side of a 'same'-padded odd kernel: ⌊(n − 1)/s⌋ + 1."""
    return (n - 1) // stride + 1


def _out_shape(x: torch.Tensor, stride: int) -> tuple[int, int, int, int]:
    B, C, H, W = x.shape
    return B, C, out_size(H, stride), out_size(W, stride)


@torch.library.custom_op("segment::dwconv2d", mutates_args=())
def _dwconv2d(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    from segment import _dwconv_triton

    return _dwconv_triton.forward(x, weight, stride)


@_dwconv2d.register_fake
def _(x, weight, stride):
    return torch.empty(_out_shape(x, stride), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


@torch.library.custom_op("segment::dwconv2d_backward", mutates_args=())
def _dwconv2d_backward(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    from segment import _dwconv_triton

    return _dwconv_triton.backward(gy, x, weight, stride)


@_dwconv2d_backward.register_fake
def _(gy, x, weight, stride):
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return gx, torch.empty_like(weight)


def _setup(ctx, inputs, output) -> None:
    x, weight, stride = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride = stride


def _backward(ctx, gy):
    x, weight = ctx.saved_tensors
    gx, gw = _dwconv2d_backward(gy, x, weight, ctx.stride)
    return gx, gw, None


_dwconv2d.register_autograd(_backward, setup_context=_setup)


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, *,
                     backend: str = "auto") -> torch.Tensor:
    """Depthwise conv of x (B, C, H, W) with weight (C, 1, K, K), K odd, padding K//2, no bias."""
    C, K = weight.shape[0], weight.shape[-1]
    if x.dim() != 4 or x.shape[1] != C or weight.shape != (C, 1, K, K) or K % 2 == 0:
        raise InputError(f"depthwise_conv2d: x {tuple(x.shape)} and weight {tuple(weight.shape)} "
                         "do not form a depthwise conv with an odd kernel")
    if stride not in (1, 2):
        raise InputError(f"depthwise_conv2d: stride must be 1 or 2, got {stride}")
    name = resolve_backend(backend, x.device, K)
    if name == "torch":
        return F.conv2d(x, weight, None, stride, K // 2, 1, C)
    if not (x.is_cuda and triton_available()):
        raise InputError("depthwise_conv2d: backend 'triton' needs CUDA tensors and an importable Triton")
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    return _dwconv2d(x.to(dtype), weight.to(dtype), int(stride))
