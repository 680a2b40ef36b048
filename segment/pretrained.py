"""Official ImageNet encoders (``net_B.pth``, ``net_S.pth``, ``net_T.pth``) onto ours (docs/rwkv-unet.md).

Our encoder keeps the official attribute names (``stage{0..4}.{j}.conv.conv.weight``,
``...conv_local.norm.running_mean``, ``...att.spatial_decay``, ``...norm.norm.weight`` for LN2d,
...), so mapping is a filter, not a rename:

1. read the file with ``torch.load(weights_only=True)`` (a checkpoint is data, never code);
2. unwrap ``state_dict`` / ``model`` / ``net`` / ``state_dict_ema``; strip ``module.``; a full
   segmentation checkpoint's ``encoder.`` prefix is stripped and its other parts ignored;
3. drop, and list, what the official model builds but never runs: the ImageNet ``head.*``, the
   final ``norm.*``, every ``ln2.*``, and ``ln1.*`` / ``att.*`` of blocks without RWKV;
4. check shapes (for a 1-channel model the stem's first 1×1 weight is summed over its input
   axis, equivalent to repeating the channel);
5. load strictly: a missing parameter or running statistic, an unexpected key or a shape
   mismatch is an ``InputError`` naming the keys.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from biorules.errors import InputError
from segment.model import RWKVUNet

WRAPPERS = ("state_dict", "model", "net", "state_dict_ema")
STEM_IN_WEIGHT = "stage0.0.conv.conv.weight"
_ALWAYS_UNUSED = re.compile(r"^(head\.|norm\.|stage\d+\.\d+\.ln2\.)")
_BLOCK_PART = re.compile(r"^stage(\d+)\.(\d+)\.(ln1|att)\.")


def _unused_official_key(model: RWKVUNet, key: str) -> bool:
    """True for keys the official model builds but never runs (docs/rwkv-unet.md loader step 3)."""
    if _ALWAYS_UNUSED.match(key):
        return True
    m = _BLOCK_PART.match(key)
    if m is None:
        return False
    stage = getattr(model.encoder, f"stage{m.group(1)}", None)
    j = int(m.group(2))
    return stage is not None and j < len(stage) and not stage[j].rwkv


@dataclass
class LoadReport:
    """What ``load_official_encoder`` did: key names, each list sorted."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts of loaded, ignored, adapted and missing keys."""
        return (f"loaded {len(self.loaded)}, ignored {len(self.ignored)} unused official keys, "
                f"adapted {len(self.adapted)}, missing {len(self.missing)}")


def _unwrap(obj: object, name: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, dict):
            inner = next((obj[k] for k in WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
            if inner is not None:
                obj = inner
                continue
        raise InputError(f"{name}: not a state dict of tensors (nor wrapped in {', '.join(WRAPPERS)})")
    sd = {}
    for k, v in obj.items():
        while k.startswith("module."):
            k = k[len("module."):]
        sd[k] = v
    if any(k.startswith("encoder.") for k in sd):  # full segmentation checkpoint
        sd = {k[len("encoder."):] if k.startswith("encoder.") else "\0" + k: v for k, v in sd.items()}
    return sd


def _short(keys: list[str], n: int = 5) -> str:
    more = f", ... (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, loaded with ``weights_only=True``, unwrapped, no ``module.``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {p} not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{p}: not a loadable weights-only checkpoint ({first})") from None
    return _unwrap(obj, str(p))


def map_official_encoder(
    model: RWKVUNet, state: dict[str, torch.Tensor], name: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Filter and check an official encoder state dict against ``model.encoder`` (no loading)."""
    ours = model.encoder.state_dict()
    report = LoadReport()
    out: dict[str, torch.Tensor] = {}
    mismatched = []
    for k, v in state.items():
        if k.startswith("\0"):  # non-encoder part of a full checkpoint
            report.ignored.append(k[1:])
            continue
        if k not in ours:
            (report.ignored if _unused_official_key(model, k) else report.unexpected).append(k)
            continue
        target = ours[k]
        if k == STEM_IN_WEIGHT and v.shape != target.shape and v.dim() == 4 and target.shape[1] == 1:
            v = v.sum(dim=1, keepdim=True)  # 1-channel input: equivalent to repeating it
            report.adapted.append(k)
        if v.shape != target.shape:
            mismatched.append(f"{k} {tuple(v.shape)} vs {tuple(target.shape)}")
            continue
        out[k] = v.to(target.dtype)
    report.missing = sorted(k for k in ours if k not in out and k not in {m.split(" ")[0] for m in mismatched})
    fatal_missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_short(mismatched, 3)})")
    if fatal_missing:
        problems.append(f"{len(fatal_missing)} missing keys ({_short(fatal_missing)})")
    if report.unexpected:
        problems.append(f"{len(report.unexpected)} unexpected keys ({_short(sorted(report.unexpected))})")
    if problems:
        raise InputError(f"{name}: does not fit {model.name}'s encoder: " + "; ".join(problems))
    for k in report.missing:  # only num_batches_tracked: keep ours
        out[k] = ours[k]
    report.loaded = sorted(k for k in out if k not in report.missing)
    report.ignored.sort()
    return out, report


def load_official_encoder(model: RWKVUNet, path: str | Path) -> LoadReport:
    """Load an official ``net_{B,S,T}.pth`` (or a full official checkpoint's encoder) strictly.

    Returns the report (loaded / ignored / adapted / missing keys); raises ``InputError`` on
    anything that does not fit.
    """
    state = read_state_dict(path)
    mapped, report = map_official_encoder(model, state, name=str(path))
    result = model.encoder.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return report
