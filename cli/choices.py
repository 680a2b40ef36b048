"""Closed sets the options choose from, for registries too slow to import for ``--help``.

Each tuple here equals its registry (a test checks): the registries import torch, and ``--help``
must not. Registries that import quickly (rules, tasks, nonlinearities, inits, segmentation
datasets) are used directly by the commands.
"""

from __future__ import annotations

FLOSS_MODES = ("exact", "local", "eprop")
"""``biorules.flossing.MODES``."""

NETWORK_MODELS = ("rate", "lif")
"""``biorules.train.MODELS``."""

OPTIMIZERS = ("adam", "sgd")
"""``biorules.train.OPTIMIZERS``."""

SEGMENT_MODELS = ("rwkv_unet", "rwkv_unet_s", "rwkv_unet_t", "rwkv_unet_test")
"""``segment.model.VARIANTS``."""

WKV_BACKENDS = ("auto", "dense", "scan", "recurrent", "triton")
"""``segment.wkv.BACKENDS``."""

DWCONV_BACKENDS = ("auto", "torch", "triton")
"""``segment.dwconv.BACKENDS``."""
