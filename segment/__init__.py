"""RWKV-UNet medical image segmentation (docs/rwkv-unet.md): model, Bi-WKV, data, training.

From Python (torch is imported on first use)::

    import segment
    ds = segment.train(dataset="demo", epochs=1, out="results/segment-demo.zarr")   # -> the store
    paths = segment.predict("results/segment-demo.ckpt/split0_best.pt", "images/", "masks/")

:func:`train` takes a :class:`segment.engine.TrainConfig` or its fields as keywords (the rest go to
:func:`segment.engine.train`, e.g. ``resume=True``) and records the call as the store's
``command``; :func:`predict` is :func:`segment.engine.predict_folder`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "predict"]


def train(config: Any = None, out: Any = None, **options: Any) -> Any:
    """Train, select on validation and test (:func:`segment.engine.train`); returns the store."""
    import dataclasses

    from biorules import call_text
    from segment import engine

    call = {"config": config, "out": out, **options} if config is not None else {"out": out, **options}
    if config is None:
        names = {f.name for f in dataclasses.fields(engine.TrainConfig)}
        config = engine.TrainConfig(**{k: v for k, v in options.items() if k in names})
        options = {k: v for k, v in options.items() if k not in names}
    options.setdefault("command", call_text("segment.train", (), call))
    return engine.train(config, out or f"results/segment-{config.dataset}.zarr", **options)


def predict(checkpoint: Any, input_dir: Any, out_dir: Any, **options: Any) -> Any:
    """Segment every image of ``input_dir`` into ``out_dir`` (:func:`segment.engine.predict_folder`)."""
    from segment import engine

    return engine.predict_folder(checkpoint, input_dir, out_dir, **options)
