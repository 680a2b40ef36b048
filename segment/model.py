"""RWKV-UNet (B, S, T): IR-RWKV encoder, Cross-Channel Mix skips, decoder, head (docs/rwkv-unet.md).

Data flow (docs/rwkv-unet.md): stem (H) → e1 (H/2) → e2 (H/4) → e3 (H/8, RWKV) → e4 (H/16, RWKV);
[ê3, ê2, ê1] = CCM(e3, e2, e1); d3 = Up1(e4); d2 = Up2([d3, ê3]); d1 = Up3([d2, ê2]);
d0 = Up4([d1, ê1]); logits = Conv1×1(d0). Inputs whose sides are not multiples of 16 are
zero-padded bottom/right and the logits cropped back.

``create_model(name, **overrides)`` builds a variant from ``VARIANTS``; ``None`` overrides are
ignored so a CLI can forward every option. ``rwkv_unet_test`` is a tiny variant for CPU tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from biorules.errors import InputError
from segment import dwconv as _dw
from segment.blocks import CCM, ConvNormAct, IRBlock, UpBlock
from segment.wkv import BACKENDS


@dataclass(frozen=True)
class Variant:
    """Architecture numbers of one variant (docs/rwkv-unet.md). Widths in channels, ratios dimensionless."""

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    exp_ratios: tuple[float, float, float, float]
    stem_dim: int = 24
    stem_mid: int = 3
    dw_kernel: int = 5
    decoder_kernel: int = 9
    drop_path_rate: float = 0.05
    ccm_drop_path: float = 0.05


VARIANTS: dict[str, Variant] = {
    "rwkv_unet": Variant(depths=(3, 3, 6, 3), widths=(48, 72, 144, 240), exp_ratios=(2.0, 2.5, 4.0, 4.0)),
    "rwkv_unet_s": Variant(depths=(3, 3, 6, 3), widths=(32, 64, 128, 192), exp_ratios=(2.0, 2.5, 3.0, 4.0)),
    "rwkv_unet_t": Variant(depths=(2, 2, 4, 2), widths=(32, 48, 96, 160), exp_ratios=(2.0, 2.5, 3.0, 3.5)),
    "rwkv_unet_test": Variant(
        depths=(1, 1, 2, 2), widths=(8, 12, 16, 24), exp_ratios=(2.0, 2.0, 2.0, 2.0), stem_dim=8
    ),
}

#: official checkpoint file of each variant's encoder (docs/rwkv-unet.md)
OFFICIAL_ENCODER_FILES = {"rwkv_unet": "net_B.pth", "rwkv_unet_s": "net_S.pth", "rwkv_unet_t": "net_T.pth"}


class RWKVUNetEncoder(nn.Module):
    """Stem + four stages of IR / IR-RWKV blocks, named ``stage0`` .. ``stage4`` (docs/rwkv-unet.md).

    Stage s (1-based) block j: first block stride 2, ratio 2·e_s, no residual, no RWKV; others
    stride 1, ratio e_s, residual, RWKV in stages 3–4. Norm: BN in stages 1–2, LN2d in 3–4.
    Drop-path of block k (over all stage blocks) is rate·k/(N−1).
    """

    def __init__(self, cfg: Variant, in_channels: int = 3, wkv: str = "auto") -> None:
        super().__init__()
        self.widths = cfg.widths
        self.stage0 = nn.ModuleList(
            [
                IRBlock(
                    in_channels,
                    cfg.stem_dim,
                    1.0,
                    dim_mid=cfg.stem_mid,
                    norm=None,
                    se=True,
                    has_skip=False,
                    dw_kernel=cfg.dw_kernel,
                    wkv=wkv,
                )
            ]
        )
        n = sum(cfg.depths)
        rates = [cfg.drop_path_rate * k / (n - 1) if n > 1 else 0.0 for k in range(n)]
        dim_prev, k = cfg.stem_dim, 0
        for s, (depth, width, ratio) in enumerate(zip(cfg.depths, cfg.widths, cfg.exp_ratios, strict=True)):
            blocks = []
            for j in range(depth):
                first = j == 0
                blocks.append(
                    IRBlock(
                        dim_prev,
                        width,
                        2 * ratio if first else ratio,
                        stride=2 if first else 1,
                        norm="bn" if s < 2 else "ln",
                        rwkv=(not first) and s >= 2,
                        has_skip=not first,
                        dw_kernel=cfg.dw_kernel,
                        drop_path=rates[k],
                        wkv=wkv,
                    )
                )
                dim_prev = width
                k += 1
            setattr(self, f"stage{s + 1}", nn.ModuleList(blocks))
        self.apply(_init_encoder)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return [e1, e2, e3, e4] (the stem output is not a skip)."""
        for blk in self.stage0:
            x = blk(x)
        feats = []
        for s in range(1, 5):
            for blk in getattr(self, f"stage{s}"):
                x = blk(x)
            feats.append(x)
        return feats


def _init_encoder(m: nn.Module) -> None:
    """Encoder init (docs/rwkv-unet.md): Linear trunc-normal std 0.02, zero bias; norms weight 1, bias 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class RWKVUNet(nn.Module):
    """RWKV-UNet segmentation network (docs/rwkv-unet.md). Input (B, in_channels, H, W) → logits (B, K, H, W)."""

    def __init__(
        self,
        cfg: Variant,
        in_channels: int = 3,
        num_classes: int = 1,
        wkv: str = "auto",
        name: str = "rwkv_unet",
        dwconv: str = "auto",
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise InputError(f"in_channels must be ≥ 1, got {in_channels}")
        if num_classes < 1:
            raise InputError(f"num_classes must be ≥ 1, got {num_classes}")
        if wkv not in BACKENDS:
            raise InputError(f"unknown wkv backend {wkv!r}; choose from {', '.join(BACKENDS)}")
        self.cfg = cfg
        self.name = name
        self.in_channels = in_channels
        self.num_classes = num_classes
        c0, c1, c2, c3 = cfg.widths
        self.encoder = RWKVUNetEncoder(cfg, in_channels, wkv)
        self.ccm = CCM([c2, c1, c0], c0, drop_path=cfg.ccm_drop_path)
        self.decoder1 = UpBlock(c3, c2, cfg.decoder_kernel)
        self.decoder2 = UpBlock(2 * c2, c1, cfg.decoder_kernel)
        self.decoder3 = UpBlock(2 * c1, c0, cfg.decoder_kernel)
        self.decoder4 = UpBlock(2 * c0, cfg.stem_dim, cfg.decoder_kernel)
        self.final_conv = nn.Conv2d(cfg.stem_dim, num_classes, 1, bias=True)
        self.set_dwconv_backend(dwconv)

    # -- pieces --------------------------------------------------------------------------
    def set_wkv_backend(self, backend: str) -> None:
        """Switch every spatial mix to Bi-WKV ``backend`` (see ``segment.wkv.BACKENDS``)."""
        if backend not in BACKENDS:
            raise InputError(f"unknown wkv backend {backend!r}; choose from {', '.join(BACKENDS)}")
        for m in self.modules():
            if hasattr(m, "spatial_decay"):
                m.backend = backend

    def set_dwconv_backend(self, backend: str) -> None:
        """Switch every depthwise conv to ``backend`` (see ``segment.dwconv.BACKENDS``)."""
        if backend not in _dw.BACKENDS:
            raise InputError(f"unknown depthwise-conv backend {backend!r}; choose from {', '.join(_dw.BACKENDS)}")
        for m in self.modules():
            if isinstance(m, ConvNormAct) and m.depthwise:
                m.dwconv = backend

    def forward_encoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features [e1, e2, e3, e4] at H/2 .. H/16."""
        return self.encoder(x)

    def forward_decoder(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """CCM on the skips, then the four up blocks; returns d0 (B, stem_dim, H, W)."""
        e1, e2, e3, e4 = feats
        s3, s2, s1 = self.ccm([e3, e2, e1])
        d = self.decoder1(e4)
        d = self.decoder2(torch.cat([d, s3], 1))
        d = self.decoder3(torch.cat([d, s2], 1))
        return self.decoder4(torch.cat([d, s1], 1))

    def forward_head(self, d0: torch.Tensor) -> torch.Tensor:
        """Logits = Conv1×1(d0) + bias."""
        return self.final_conv(d0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"{self.name}: expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        H, W = x.shape[-2:]
        ph, pw = (-H) % 16, (-W) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        out = self.forward_head(self.forward_decoder(self.forward_encoder(x)))
        if ph or pw:
            out = out[..., :H, :W]
        return out


def create_model(
    name: str,
    in_channels: int | None = None,
    num_classes: int | None = None,
    wkv: str | None = None,
    dwconv: str | None = None,
    **overrides,
) -> RWKVUNet:
    """Build variant ``name`` (``rwkv_unet``, ``rwkv_unet_s``, ``rwkv_unet_t``, ``rwkv_unet_test``).

    Defaults: in_channels 3, num_classes 1 (binary, sigmoid; docs/rwkv-unet.md), wkv and dwconv "auto" (fused
    Triton kernels on CUDA, for the depthwise convs only the 9×9 ones; plain torch elsewhere).
    ``overrides`` set fields of the variant (e.g. ``drop_path_rate``); ``None`` values are ignored.
    """
    if name not in VARIANTS:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(VARIANTS)}")
    cfg = VARIANTS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fields = set(asdict(cfg))
    bad = sorted(set(overrides) - fields)
    if bad:
        raise InputError(f"unknown model option(s) {', '.join(bad)} for {name}")
    cfg = replace(cfg, **overrides)
    return RWKVUNet(
        cfg,
        in_channels=3 if in_channels is None else int(in_channels),
        num_classes=1 if num_classes is None else int(num_classes),
        wkv="auto" if wkv is None else wkv,
        name=name,
        dwconv="auto" if dwconv is None else dwconv,
    )


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return list(VARIANTS)
