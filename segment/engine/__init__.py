"""Training, inference and evaluation of RWKV-UNet (docs/rwkv-unet.md), in the nnU-Net style.

``config`` (TrainConfig), ``trainer`` (Trainer and ``train``), ``inference`` (whole image,
sliding window, TTA), ``evaluate`` (metrics into the store, summary), ``checkpoint`` (atomic
writes, strict loads, models from checkpoints) and ``distributed`` (devices, DDP). The names
below are the public API that the CLI, the examples and the tests use.
"""

from __future__ import annotations

from segment.engine.checkpoint import (
    build_model,
    checkpoint_dir,
    load_state_strict,
    model_from_checkpoint,
    model_meta,
    n_logits,
    read_checkpoint,
    save_checkpoint,
    unwrap_state,
)
from segment.engine.config import (
    AMP_MODES,
    SCHEDULES,
    STEPS,
    TrainConfig,
    config_from_dict,
    resolve_step,
)
from segment.engine.distributed import (
    GlobalBatchNorm2d,
    convert_batchnorm,
    init_distributed,
    resolve_device,
    world,
)
from segment.engine.evaluate import (
    EvalResult,
    diverged_splits,
    evaluate_checkpoint,
    evaluate_items,
    summarize,
    write_test,
)
from segment.engine.inference import (
    IMAGE_EXTS,
    PALETTE,
    WINDOW_OVERLAP,
    WINDOW_SIGMA,
    overlay,
    predict_folder,
    predict_items,
    predict_probs,
    predict_window,
    probs_to_labels,
)
from segment.engine.trainer import Trainer, lr_at, prepare, train

__all__ = [
    "AMP_MODES", "IMAGE_EXTS", "PALETTE", "SCHEDULES", "STEPS", "WINDOW_OVERLAP", "WINDOW_SIGMA",
    "EvalResult", "GlobalBatchNorm2d", "TrainConfig", "Trainer",
    "build_model", "checkpoint_dir", "config_from_dict", "convert_batchnorm", "diverged_splits", "evaluate_checkpoint",
    "evaluate_items", "init_distributed", "load_state_strict", "lr_at", "model_from_checkpoint", "model_meta",
    "n_logits", "overlay", "predict_folder", "predict_items", "predict_probs", "predict_window", "prepare",
    "probs_to_labels", "read_checkpoint", "resolve_device", "resolve_step", "save_checkpoint", "summarize", "train",
    "unwrap_state", "world", "write_test",
]
