"""Building blocks of RWKV-UNet (docs/rwkv-unet.md).

Attribute names follow the official module tree (docs/rwkv-unet.md: ``conv.conv``, ``conv.norm``,
``conv_local``, ``se.conv_reduce``, ``proj.conv``, ``ln1``, ``att.*``, ``ccm.*``,
``decoder*.{conv,conv_local,proj}``), so official state dicts load by filtering, not renaming.
Only modules that run are built. Every block passes (h, w) explicitly: any H×W, no square
assumption, no token limit.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segment.dwconv import depthwise_conv2d
from segment.wkv import bi_wkv

BN_EPS = 1e-6  # every BatchNorm (docs/rwkv-unet.md)
LN2D_EPS = 1e-6  # LayerNorm2d (docs/rwkv-unet.md)
TOKEN_LN_EPS = 1e-5  # post-norm, key norms, CCM (docs/rwkv-unet.md)


class DropPath(nn.Module):
    """Stochastic depth per sample: x·mask/(1−p), mask ~ Bernoulli(1−p) of shape (B, 1, ...)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every pixel of (B, C, H, W); inner module named ``norm`` (docs/rwkv-unet.md)."""

    def __init__(self, dim: int, eps: float = LN2D_EPS) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """Conv2d without bias, then an optional BatchNorm (eps 1e-6) and activation.

    A depthwise conv (groups = dim_in = dim_out) runs through ``segment.dwconv`` with backend
    ``dwconv`` ("auto": fused Triton kernels for K ≥ 7 on CUDA, ``F.conv2d`` otherwise).
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        norm: bool = True,
        act_layer: type[nn.Module] | None = nn.ReLU,
        dwconv: str = "auto",
    ) -> None:
        super().__init__()
        self.depthwise = groups > 1 and groups == dim_in == dim_out
        self.dwconv = dwconv
        self.conv = nn.Conv2d(
            dim_in, dim_out, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.norm = nn.BatchNorm2d(dim_out, eps=BN_EPS) if norm else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise:
            x = depthwise_conv2d(x, self.conv.weight, self.conv.stride[0], backend=self.dwconv)
        else:
            x = self.conv(x)
        return self.act(self.norm(x))


class SqueezeExcite(nn.Module):
    """SE: x·sigmoid(W₂ act(W₁ mean_hw(x) + b₁) + b₂), both 1×1 convs with bias (docs/rwkv-unet.md, stem only)."""

    def __init__(self, dim: int, rd_ratio: float = 1.0, act_layer: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        rd = round(dim * rd_ratio)
        self.conv_reduce = nn.Conv2d(dim, rd, 1, bias=True)
        self.act1 = act_layer()
        self.conv_expand = nn.Conv2d(rd, dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.conv_expand(self.act1(self.conv_reduce(s))))


def quad_shift(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Shift channel quarters of tokens (B, h·w, C) by one pixel: right, left, down, up (docs/rwkv-unet.md).

    q = ⌊C/4⌋; [0,q): out[:, j] = in[:, j−1]; [q,2q): out[:, j] = in[:, j+1];
    [2q,3q): out[i] = in[i−1]; [3q,4q): out[i] = in[i+1]; the rest unchanged; vacated pixels 0.
    """
    B, T, C = x.shape
    q = C // 4
    g = x.reshape(B, h, w, C)
    parts = [
        F.pad(g[:, :, : w - 1, 0:q], (0, 0, 1, 0)),
        F.pad(g[:, :, 1:, q : 2 * q], (0, 0, 0, 1)),
        F.pad(g[:, : h - 1, :, 2 * q : 3 * q], (0, 0, 0, 0, 1, 0)),
        F.pad(g[:, 1:, :, 3 * q : 4 * q], (0, 0, 0, 0, 0, 1)),
        g[..., 4 * q :],
    ]
    return torch.cat(parts, dim=-1).reshape(B, T, C)


class SpatialMix(nn.Module):
    """Vision-RWKV spatial mix with key norm (docs/rwkv-unet.md).

    xs = quad_shift(x); x_k = μ_k⊙x + (1−μ_k)⊙xs (likewise v, r); k = W_k x_k, v = W_v x_v,
    s_r = σ(W_r x_r); z = BiWKV(w/T, u/T, k, v); out = W_o(s_r ⊙ LN(z)).
    """

    def __init__(self, dim: int, backend: str = "auto") -> None:
        super().__init__()
        self.dim = dim
        self.backend = backend
        self.spatial_decay = nn.Parameter(torch.zeros(dim))
        self.spatial_first = nn.Parameter(torch.zeros(dim))
        self.spatial_mix_k = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.spatial_mix_v = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.spatial_mix_r = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.key_norm = nn.LayerNorm(dim, eps=TOKEN_LN_EPS)
        self.output = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        T = x.shape[1]
        xs = quad_shift(x, h, w)
        xk = torch.lerp(xs, x, self.spatial_mix_k.to(x.dtype))
        xv = torch.lerp(xs, x, self.spatial_mix_v.to(x.dtype))
        xr = torch.lerp(xs, x, self.spatial_mix_r.to(x.dtype))
        k = self.key(xk)
        v = self.value(xv)
        sr = torch.sigmoid(self.receptance(xr))
        z = bi_wkv(self.spatial_decay / T, self.spatial_first / T, k, v, backend=self.backend)
        return self.output(sr * self.key_norm(z))


class ChannelMix(nn.Module):
    """Vision-RWKV channel mix, hidden rate 2, with key norm (docs/rwkv-unet.md).

    κ = LN_{2n}(ReLU(W_k x_k)²); out = σ(W_r x_r) ⊙ W_v κ; x_k, x_r from the quad shift, μ = 0.5.
    """

    def __init__(self, dim: int, hidden_rate: int = 2) -> None:
        super().__init__()
        hidden = hidden_rate * dim
        self.spatial_mix_k = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.spatial_mix_r = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.key = nn.Linear(dim, hidden, bias=False)
        self.key_norm = nn.LayerNorm(hidden, eps=TOKEN_LN_EPS)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        xs = quad_shift(x, h, w)
        xk = torch.lerp(xs, x, self.spatial_mix_k.to(x.dtype))
        xr = torch.lerp(xs, x, self.spatial_mix_r.to(x.dtype))
        kappa = self.key_norm(torch.square(torch.relu(self.key(xk))))
        return torch.sigmoid(self.receptance(xr)) * self.value(kappa)


class IRBlock(nn.Module):
    """Inverted-residual block, optionally with a spatial mix: IR-RWKV / GLSP (docs/rwkv-unet.md).

    s = x; x = Norm(x); x = ReLU(BN(Conv1×1(x))); [RWKV: x = x + DropPath(LN(SpatialMix(x)))];
    y = SiLU(BN(DWConv(x))); [stem: y = SE(y)]; x = x + y if residual else y;
    x = Conv1×1(x); out = s + DropPath(x) if residual else x.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        exp_ratio: float,
        *,
        stride: int = 1,
        norm: str | None = "bn",
        rwkv: bool = False,
        se: bool = False,
        has_skip: bool = True,
        dw_kernel: int = 5,
        drop_path: float = 0.0,
        dim_mid: int | None = None,
        act_layer: type[nn.Module] = nn.SiLU,
        wkv: str = "auto",
    ) -> None:
        super().__init__()
        mid = dim_mid if dim_mid is not None else int(dim_in * exp_ratio)
        self.dim_mid = mid
        if norm == "bn":
            self.norm = nn.BatchNorm2d(dim_in, eps=BN_EPS)
        elif norm == "ln":
            self.norm = LayerNorm2d(dim_in)
        else:
            self.norm = nn.Identity()
        self.conv = ConvNormAct(dim_in, mid, 1, act_layer=nn.ReLU)
        self.rwkv = rwkv
        if rwkv:
            self.att = SpatialMix(mid, backend=wkv)
            self.ln1 = nn.LayerNorm(mid, eps=TOKEN_LN_EPS)
        self.conv_local = ConvNormAct(mid, mid, dw_kernel, stride=stride, groups=mid, act_layer=nn.SiLU)
        self.se = SqueezeExcite(mid, 1.0, act_layer) if se else nn.Identity()
        self.proj = ConvNormAct(mid, dim_out, 1, norm=False, act_layer=None)
        self.has_skip = has_skip and dim_in == dim_out and stride == 1
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv(self.norm(x))
        if self.rwkv:
            B, C, h, w = x.shape
            t = x.permute(0, 2, 3, 1).reshape(B, h * w, C)
            t = t + self.drop_path(self.ln1(self.att(t, h, w)))
            x = t.reshape(B, h, w, C).permute(0, 3, 1, 2)
        y = self.se(self.conv_local(x))
        x = x + y if self.has_skip else y
        x = self.proj(x)
        return shortcut + self.drop_path(x) if self.has_skip else x


class CCM(nn.Module):
    """Cross-Channel Mix of the skips [e3, e2, e1] on e1's grid (docs/rwkv-unet.md).

    z = concat_i Conv1×1_i(resize(e_i)); z = z + DropPath(LN(ChannelMix(z)));
    ê_i = resize_back(Conv1×1'_i(chunk_i(z))).
    """

    def __init__(self, dims: tuple[int, int, int] | list[int], dim_t: int, drop_path: float = 0.05) -> None:
        super().__init__()
        self.dims = tuple(dims)
        n = 3 * dim_t
        self.projections = nn.ModuleList(nn.Conv2d(d, dim_t, 1, bias=True) for d in self.dims)
        self.channel = ChannelMix(n)
        self.ln1 = nn.LayerNorm(n, eps=TOKEN_LN_EPS)
        self.final_projections = nn.ModuleList(nn.Conv2d(dim_t, d, 1, bias=True) for d in self.dims)
        self.drop_path = DropPath(drop_path)

    @staticmethod
    def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        h, w = feats[-1].shape[-2:]
        z = torch.cat([p(self._resize(f, (h, w))) for p, f in zip(self.projections, feats, strict=True)], 1)
        B, n = z.shape[:2]
        t = z.permute(0, 2, 3, 1).reshape(B, h * w, n)
        t = t + self.drop_path(self.ln1(self.channel(t, h, w)))
        z = t.reshape(B, h, w, n).permute(0, 3, 1, 2)
        chunks = torch.chunk(z, 3, dim=1)
        return [
            self._resize(fp(c), f.shape[-2:])
            for fp, c, f in zip(self.final_projections, chunks, feats, strict=True)
        ]


class UpBlock(nn.Module):
    """Decoder block (docs/rwkv-unet.md): 1×1 BN ReLU → DW 9×9 BN SiLU → 1×1 to dim_out BN ReLU → bilinear ×2."""

    def __init__(self, dim_in: int, dim_out: int, dw_kernel: int = 9) -> None:
        super().__init__()
        self.conv = ConvNormAct(dim_in, dim_in, 1, act_layer=nn.ReLU)
        self.conv_local = ConvNormAct(dim_in, dim_in, dw_kernel, groups=dim_in, act_layer=nn.SiLU)
        self.proj = ConvNormAct(dim_in, dim_out, 1, act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.conv_local(self.conv(x)))
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
