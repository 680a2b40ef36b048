"""Models from a config or a checkpoint; checkpoints written atomically and loaded strictly.

A checkpoint is a ``torch.save`` dict: ``model`` (state dict), ``meta`` (what rebuilds the model
and its input pipeline: :func:`model_meta`), ``config`` (the run's TrainConfig as JSON), ``epoch``;
the last-epoch checkpoint adds ``optimizer``, ``best_epoch`` and ``best_score``. Files are written
to a tmp file and ``os.replace``-d into place, so a reader never sees half a checkpoint; loading
unwraps the usual nestings and a ``module.`` prefix by name and is strict (spec §9).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from biorules.errors import InputError
from segment.data import DatasetInfo
from segment.engine.config import TrainConfig
from segment.engine.distributed import memory_format


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` with ``torch.save`` to a tmp file, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``; InputError naming the file if absent or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--checkpoint {path}: file not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unpickling/zip error: the file is not a checkpoint
        raise InputError(f"--checkpoint {path}: not a readable checkpoint") from None
    if not isinstance(ck, dict):
        raise InputError(f"--checkpoint {path}: expected a dict, found {type(ck).__name__}")
    return ck


def unwrap_state(ck: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: unwrap ``model``/``state_dict``/``net``/``state_dict_ema``
    and strip a ``module.`` prefix."""
    state = ck
    for key in ("model", "state_dict", "net", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly; missing or unexpected keys (or shape mismatches) are an InputError naming them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {label} keys: {shown}")
        raise InputError(f"checkpoint {source} does not fit {getattr(model, 'name', 'the model')}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of the store ``out`` go: ``run.zarr`` -> ``run.ckpt/``."""
    out = Path(out)
    return out.with_suffix(".ckpt") if out.suffix == ".zarr" else out.with_name(out.name + ".ckpt")


def n_logits(cfg: TrainConfig, info: DatasetInfo) -> int:
    """Output channels: 1 for binary data (2 with ``binary_softmax``), else one per class."""
    return 2 if info.binary and cfg.binary_softmax else info.model_classes


def build_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The variant of ``cfg`` for the data's channels and classes; with ``cfg.encoder`` the encoder
    starts from that official ImageNet checkpoint (``net_{B,S,T}.pth``, docs/rwkv-unet.md, strict)."""
    from segment.model import create_model

    model = create_model(cfg.model, in_channels=info.in_channels, num_classes=n_logits(cfg, info), wkv=cfg.wkv,
                         dwconv=cfg.dwconv, drop_path_rate=cfg.drop_path, ccm_drop_path=cfg.drop_path)
    if cfg.encoder:
        from segment.pretrained import load_official_encoder

        load_official_encoder(model, cfg.encoder)
    return model


def check_kernels(cfg: TrainConfig, device: torch.device) -> None:
    """--wkv / --dwconv triton need CUDA and Triton; say so before anything is written."""
    from segment import dwconv, wkv

    for option, value, available in (("--wkv", cfg.wkv, wkv.triton_available),
                                      ("--dwconv", cfg.dwconv, dwconv.triton_available)):
        if value == "triton" and not (device.type == "cuda" and available()):
            raise InputError(f"{option} triton needs a CUDA device and an importable Triton (device: {device})")


def model_meta(cfg: TrainConfig, info: DatasetInfo) -> dict:
    """What predict/eval/export need to rebuild the model and its input pipeline from a checkpoint."""
    return {"model": cfg.model, "dataset": info.name, "in_channels": info.in_channels,
            "num_classes": info.num_classes, "logits": n_logits(cfg, info), "class_names": list(info.class_names),
            "size": cfg.size, "mean": list(info.mean), "std": list(info.std), "wkv": cfg.wkv}


def model_from_checkpoint(path: str | Path, device: torch.device, wkv: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model recorded in a checkpoint's ``meta`` and load its weights strictly (eval mode)."""
    from segment.model import create_model

    ck = read_checkpoint(path)
    meta = ck.get("meta")
    if not isinstance(meta, dict) or "model" not in meta:
        raise InputError(f"--checkpoint {path}: no model description (not written by biorules segment)")
    k = int(meta.get("logits", 1 if int(meta["num_classes"]) == 2 else meta["num_classes"]))
    model = create_model(str(meta["model"]), in_channels=int(meta["in_channels"]), num_classes=k,
                         wkv=wkv or str(meta.get("wkv", "auto")))
    load_state_strict(model, unwrap_state(ck), str(path))
    return model.to(device, memory_format=memory_format(device)).eval(), meta
