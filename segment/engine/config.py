"""The options of a training run (docs/rwkv-unet.md): one frozen record, serialised into the store.

Per-dataset defaults (epochs, batch) are the dataset's own recipe (``DatasetInfo.epochs`` and
``DatasetInfo.batch`` in ``segment.data``); :meth:`TrainConfig.resolved` fills them in and checks
every value, so nothing downstream re-checks or special-cases a dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from biorules.errors import InputError

SCHEDULES = ("poly", "cosine")
AMP_MODES = ("auto", "bf16", "off")
STEPS = ("auto", "graph", "compile", "eager")
"""Training-step implementations: ``graph`` captures the whole step in a CUDA graph and replays it,
``compile`` runs the model through ``torch.compile``, ``eager`` launches every kernel from Python;
``auto`` is ``graph`` on CUDA (one process or several under DDP) and ``eager`` on the CPU."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; serialised into the store attrs and the checkpoints.

    ``lr`` and ``weight_decay`` are AdamW's (1/iteration scale, dimensionless); ``size`` in pixels;
    ``clip_grad`` is the max global gradient norm (0: off); ``epochs``/``batch`` None take the
    dataset recipe; ``batch`` is the global batch (split over DDP ranks); ``drop_path`` (None:
    the model's) sets the encoder and CCM drop-path rates; ``binary_softmax`` gives binary data two
    logits (softmax, CE + Dice over both classes) instead of one (sigmoid, BCE + Dice); ``encoder``
    is the path of an official ImageNet encoder to start from; ``dwconv`` picks the depthwise-conv
    backend (``segment.dwconv``); ``step`` the training-step implementation (:data:`STEPS`).
    """

    dataset: str = "demo"
    data_dir: str | None = None
    model: str = "rwkv_unet_t"
    size: int = 128
    epochs: int | None = None
    batch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "poly"
    ce_weight: float = 0.5
    dice_weight: float = 0.5
    augment: bool = True
    split: str = "auto"
    split_seed: int = 0
    splits: int = 1
    seed: int = 0
    clip_grad: float = 1.0
    amp: str = "auto"
    wkv: str = "auto"
    dwconv: str = "auto"
    encoder: str | None = None
    drop_path: float | None = None
    tta: bool = False
    binary_softmax: bool = False
    empty: str = "strict"
    min_area: int = 0
    device: str = "auto"
    folds: int = 0
    fold: int | None = None
    step: str = "auto"

    def resolved(self) -> TrainConfig:
        """The config with the dataset recipe filled in and every value checked (InputError)."""
        from segment import metrics as M
        from segment.data import dataset_info
        from segment.dwconv import BACKENDS as DW_BACKENDS

        info = dataset_info(self.dataset)
        cfg = replace(self, epochs=self.epochs or info.epochs, batch=self.batch or info.batch)
        checks = [
            (cfg.size >= 16 and cfg.size % 16 == 0, "--size must be a positive multiple of 16"),
            (cfg.epochs >= 1, "--epochs must be >= 1"),
            (cfg.batch >= 1, "--batch must be >= 1"),
            (cfg.lr > 0, "--lr must be > 0"),
            (cfg.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (cfg.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
            (cfg.step in STEPS, f"--step must be one of {', '.join(STEPS)}"),
            (cfg.dwconv in DW_BACKENDS, f"--dwconv must be one of {', '.join(DW_BACKENDS)}"),
            (cfg.empty in M.POLICIES, f"--empty must be one of {', '.join(M.POLICIES)}"),
            (cfg.splits >= 1, "--splits must be >= 1"),
            (cfg.folds == 0 or cfg.folds >= 2, "--folds must be at least 2"),
            (cfg.fold is None or 0 <= cfg.fold < cfg.folds,
             f"--fold {cfg.fold} must be in 0..{cfg.folds - 1}" if cfg.folds else "--fold needs --folds K"),
            (cfg.ce_weight >= 0 and cfg.dice_weight >= 0 and cfg.ce_weight + cfg.dice_weight > 0,
             "--ce-weight/--dice-weight must be >= 0 and not both 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(msg)
        return cfg

    def to_dict(self) -> dict:
        """Every field by name (the store's ``config`` attr, as JSON)."""
        return asdict(self)


def config_from_dict(d: dict) -> TrainConfig:
    """A TrainConfig from a stored dict; keys it does not know (older or newer runs) are dropped."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in names})


def resolve_step(step: str, device_type: str) -> str:
    """The step implementation ``auto`` stands for (the CUDA graph on CUDA, with or without DDP;
    eager on the CPU), and a one-line InputError for one that cannot run."""
    if step == "auto":
        return "graph" if device_type == "cuda" else "eager"
    if step == "graph" and device_type != "cuda":
        raise InputError(f"--step graph needs a CUDA device (device: {device_type}); use --step eager or auto")
    return step
