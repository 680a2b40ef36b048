"""Deployable models from a checkpoint: a ``torch.export`` program or an ONNX file.

The model is rebuilt from the checkpoint (``segment.engine.checkpoint.model_from_checkpoint``) on
the CPU with the plain-torch Bi-WKV (``scan``, whose chunk length depends on the sequence length
only) and depthwise convolutions, in eval mode, and traced at the checkpoint's training size:
input (batch, channels, size, size) of normalised images (``meta`` mean/std), output the logits
(batch, logits, size, size). Both formats are read back and run on a seeded input; the largest
absolute difference from the checkpoint's own model is returned and must be ≤ :data:`TOLERANCE`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from biorules.errors import InputError, RunError

FORMATS = ("torch", "onnx")
TOLERANCE = 1e-4
"""Largest |exported − checkpoint| output allowed on the CPU (logits)."""


@dataclass(frozen=True)
class Exported:
    """What was written: the file, its format, the input shape and the measured output difference."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float
    runtime: str


def onnx_available() -> bool:
    """Whether ``onnx`` (to write and check the file) is importable."""
    return importlib.util.find_spec("onnx") is not None


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str = "torch", *, batch: int = 1,
                      seed: int = 0) -> Exported:
    """Write the checkpoint's model to ``out`` as ``fmt`` (``torch`` or ``onnx``) and check it.

    InputError for an unknown format, a missing ``onnx`` package or an unreadable checkpoint;
    RunError when the read-back model differs from the checkpoint by more than :data:`TOLERANCE`."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if fmt == "onnx" and not onnx_available():
        raise InputError("--format onnx needs the onnx package (pip install onnx onnxscript); --format torch needs none")
    from segment.engine.checkpoint import model_from_checkpoint

    model, meta = model_from_checkpoint(checkpoint, torch.device("cpu"), wkv="scan")
    size, channels = int(meta["size"]), int(meta["in_channels"])
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(x)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch":
        got, runtime = _torch_export(model, x, out)
    else:
        got, runtime = _onnx_export(model, x, out)
    diff = float((got - want).abs().max()) if got is not None else float("nan")
    if got is not None and not diff <= TOLERANCE:
        raise RunError(f"exported model differs from the checkpoint by {diff:.2e} (> {TOLERANCE:g}); {out} kept")
    return Exported(out, fmt, tuple(x.shape), diff, runtime)


def _torch_export(model: torch.nn.Module, x: torch.Tensor, out: Path) -> tuple[torch.Tensor, str]:
    program = torch.export.export(model, (x,))
    torch.export.save(program, out)
    loaded = torch.export.load(out)
    with torch.no_grad():
        return loaded.module()(x), "torch.export.load"


def _onnx_export(model: torch.nn.Module, x: torch.Tensor, out: Path) -> tuple[torch.Tensor | None, str]:
    """ONNX through torch.onnx (dynamo exporter when onnxscript is there, else TorchScript's);
    run back by onnxruntime when it is installed (else only onnx.checker)."""
    import contextlib
    import io

    import onnx

    dynamo = importlib.util.find_spec("onnxscript") is not None
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its passes on stdout
        torch.onnx.export(model, (x,), str(out), input_names=["image"], output_names=["logits"], dynamo=dynamo,
                          opset_version=18 if dynamo else 17, verbose=False)
    onnx.checker.check_model(str(out))
    if importlib.util.find_spec("onnxruntime") is None:
        return None, "onnx.checker (onnxruntime not installed: outputs not compared)"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(y), "onnxruntime"
