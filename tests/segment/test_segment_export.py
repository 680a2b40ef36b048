"""``segment.export`` and ``biorules segment export``: the checkpoint's model as a torch.export
program (read back by torch.export.load) and as ONNX (when onnx is installed), outputs equal to
the checkpoint's to 1e-4 on the CPU; the Bi-WKV scan traces (its chunk length is static)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from cli_runner import run_in_process

from segment.engine.checkpoint import save_checkpoint
from segment.model import create_model

requires_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="needs the onnx package")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the tiny test model (3 channels, 1 logit, size 32), weights perturbed from the init."""
    torch.manual_seed(0)
    model = create_model("rwkv_unet_test", in_channels=3, num_classes=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    meta = {"model": "rwkv_unet_test", "dataset": "glas", "in_channels": 3, "num_classes": 2, "logits": 1,
            "class_names": ["gland"], "size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "wkv": "auto"}
    path = tmp_path_factory.mktemp("ck") / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 1, "meta": meta})
    return path


def test_scan_chunk_length_is_static_and_traces() -> None:
    """The scan's chunk length is a function of T alone; torch.export traces bi_wkv with large w."""
    from segment import wkv

    assert [wkv.chunk_len(t) for t in (1, 7, 16, 1000)] == [1, 7, 16, 16]

    class Mix(torch.nn.Module):
        def forward(self, w, u, k, v):
            return wkv.bi_wkv(w, u, k, v, backend="scan")

    g = torch.Generator().manual_seed(0)
    w, u = torch.randn(4, generator=g) * 3, torch.randn(4, generator=g)
    k, v = torch.randn(2, 40, 4, generator=g), torch.randn(2, 40, 4, generator=g)
    prog = torch.export.export(Mix(), (w, u, k, v))
    w2 = w * 10  # a different |w| needs no other program
    torch.testing.assert_close(prog.module()(w2, u, k, v), wkv.bi_wkv(w2, u, k, v, backend="dense"),
                               atol=1e-5, rtol=1e-5)


def test_torch_export_round_trip(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.pt2"
    code, stdout, err = run_in_process(["segment", "export", "--checkpoint", str(checkpoint), str(out)], capsys)
    assert code == 0, err
    assert "read back by torch.export.load" in stdout
    prog = torch.export.load(out)
    from segment.engine.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint, torch.device("cpu"))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(prog.module()(x), model(x), atol=1e-4, rtol=0)


@requires_onnx
def test_onnx_round_trip(checkpoint: Path, tmp_path: Path) -> None:
    from segment.export import export_checkpoint

    r = export_checkpoint(checkpoint, tmp_path / "model.onnx", "onnx")
    assert r.path.is_file() and (r.max_abs_diff <= 1e-4 or r.runtime.startswith("onnx.checker"))


def test_export_refuses_bad_input(checkpoint: Path, tmp_path: Path, capsys) -> None:
    exists = tmp_path / "taken.pt2"
    exists.write_text("a user's file")
    for args, needle in (
        (["--checkpoint", str(checkpoint), str(exists)], "exists"),
        (["--checkpoint", str(tmp_path / "none.pt"), str(tmp_path / "m.pt2")], "file not found"),
        (["--checkpoint", str(checkpoint), "--format", "tflite", str(tmp_path / "m")], "--format"),
    ):
        code, _, err = run_in_process(["segment", "export", *args], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert exists.read_text() == "a user's file" and not (tmp_path / "m.pt2").exists()
    if importlib.util.find_spec("onnx") is None:
        code, _, err = run_in_process(["segment", "export", "--checkpoint", str(checkpoint), "--format", "onnx",
                                       str(tmp_path / "m.onnx")], capsys)
        assert code == 2 and "needs the onnx package" in err and len(err.strip().splitlines()) == 1
