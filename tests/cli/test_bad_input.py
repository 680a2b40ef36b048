"""Bad input to every command: exit 2 (or the code the case names), exactly one line on stderr with
no traceback and no exception class name, and nothing written or changed in the working folder
(a digest of every file below it before and after).

Each case runs in a fresh copy of one prepared folder holding a file (``afile``), a user's folder
(``userdir``), a zarr store biorules did not write (``foreign.zarr``), a store it wrote
(``lyap.zarr``), a damaged copy of it (``damaged.zarr``: a status chunk deleted) and a file that is
not a checkpoint (``bad.pt``). The cases run in this process (torch is imported once).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_in_process

from cli.main import main

LYAP = ["lyapunov", "--gain", "1", "--n", "6", "--seeds", "1", "--exponents", "1", "--steps", "20",
        "--transient", "5"]
"""The tiny scan that made ``lyap.zarr``: the same options resume it."""

TINY_SWEEP = ["--gain", "1", "--rules", "bptt", "--floss", "none", "--task", "2af", "--seeds", "1", "--n", "6",
              "--updates", "2", "--exponents", "1", "--workers", "1"]
TINY_TRAIN = ["--n", "6", "--updates", "2", "--batch", "4", "--exponents", "1"]
SEG = ["--model", "rwkv_unet_test", "--size", "32", "--epochs", "1", "--batch", "6", "--device", "cpu"]

CASES = [
    # the group
    (["nosuch"], 2, "No such command"),
    (["--bogus"], 2, "--bogus"),
    # lyapunov
    (["lyapunov", "--gain", "2:0.5"], 2, "--gain"),
    (["lyapunov", "--gain", "0.5:2.0:1e-9"], 2, "--gain"),
    (["lyapunov", "--gain", "nan"], 2, "--gain"),
    (["lyapunov", "--n", "5", "--exponents", "6"], 2, "--exponents"),
    (["lyapunov", "--alpha", "nan"], 2, "--alpha"),
    (["lyapunov", "--step", "0"], 2, "--step"),
    (["lyapunov", "--nonlinearity", "sigmoid"], 2, "--nonlinearity"),
    (["lyapunov", "--seeds", "100001", "--gain", "1", "--n", "6", "--exponents", "1"], 2, "cells"),
    (["lyapunov", "--out", "afile/x.zarr"], 2, "--out"),
    ([*LYAP, "--out", "new.zarr", "--plot", "afile/p.png"], 2, "--plot"),
    ([*LYAP, "--out", "userdir"], 2, "did not write"),
    ([*LYAP, "--out", "userdir", "--overwrite"], 2, "did not write"),
    ([*LYAP, "--out", "foreign.zarr"], 2, "did not write"),
    ([*LYAP, "--out", "afile"], 2, "--out"),
    (["lyapunov", "--gain", "1", "--n", "7", "--seeds", "1", "--exponents", "1", "--out", "lyap.zarr"], 2,
     "other options"),
    ([*LYAP, "--out", "damaged.zarr"], 2, "damaged"),
    (["--json", "lyapunov", "--gain", ""], 2, "--gain"),
    # sweep
    (["sweep", "--gain", "0.5:2.0:1e-9"], 2, "--gain"),
    (["sweep", "--rules", "bptt,magic"], 2, "--rules"),
    (["sweep", "--floss", "sideways"], 2, "--floss"),
    (["sweep", "--task", "nope"], 2, "--task"),
    (["sweep", *TINY_SWEEP, "--scheduler", "notaurl"], 2, "--scheduler"),
    (["sweep", "--device", "tpu"], 2, "--device"),
    (["sweep", "--workers", "0"], 2, "--workers"),
    (["sweep", "--stack", "0"], 2, "--stack"),
    (["sweep", "--seeds", "0"], 2, "--seeds"),
    (["sweep", "--lr", "nan"], 2, "--lr"),
    (["sweep", "--gain", "1", "--rules", "bptt", "--floss", "none", "--task", "2af", "--seeds", "100001"], 2,
     "cells"),
    (["sweep", *TINY_SWEEP, "--out", "afile/s.zarr"], 2, "--out"),
    (["sweep", *TINY_SWEEP, "--out", "userdir", "--overwrite"], 2, "did not write"),
    (["sweep", *TINY_SWEEP, "--plot", "afile/p.png"], 2, "--plot"),
    (["sweep", *TINY_SWEEP, "--out", "lyap.zarr"], 2, "other options"),
    # train
    (["train", "--seed", "-1"], 2, "--seed"),
    (["train", "--rule", "nope"], 2, "--rule"),
    (["train", "--model", "lif", "--rule", "rflo"], 2, "not defined for model 'lif'"),
    (["train", "--rule", "eprop", "--window", "4"], 2, "--window"),
    (["train", "--lr", "nan"], 2, "--lr"),
    (["train", "--model", "lif", "--rule", "bptt", "--floss", "exact"], 2, "--floss"),
    (["train", *TINY_TRAIN, "--out", "afile/x.zarr"], 2, "--out"),
    (["train", *TINY_TRAIN, "--out", "foreign.zarr"], 2, "did not write"),
    (["train", *TINY_TRAIN, "--out", "lyap.zarr"], 2, "other options"),
    # floss
    (["floss", "--mode", "magic"], 2, "--mode"),
    (["floss", "--n", "10", "--exponents", "11"], 2, "--exponents"),
    (["floss", "--init", "nope"], 2, "--init"),
    (["floss", "--gain", "0"], 2, "--gain"),
    (["floss", "--target", "inf"], 2, "--target"),
    (["floss", "--n", "6", "--steps", "1", "--out", "afile/f.zarr"], 2, "--out"),
    # segment
    (["segment", "--dataset", "nope"], 2, "--dataset"),
    (["segment", "--model", "nope"], 2, "--model"),
    (["segment", "--wkv", "nope"], 2, "--wkv"),
    (["segment", "--size", "20"], 2, "--size"),
    (["segment", "--lr", "nan"], 2, "--lr"),
    (["segment", "--seed", "-1"], 2, "--seed"),
    (["segment", *SEG, "--dataset", "glas"], 2, "--data-dir"),
    (["segment", *SEG, "--out", "afile/x.zarr"], 2, "--out"),
    (["segment", *SEG, "--out", "userdir", "--overwrite"], 2, "did not write"),
    (["segment", *SEG, "--out", "lyap.zarr"], 2, "not a segment run"),
    (["segment", "info", "--size", "10000000"], 2, "--size"),
    (["segment", "info", "--size", "0x5"], 2, "--size"),
    (["segment", "info", "--model", "nope"], 2, "--model"),
    (["segment", "predict", "--checkpoint", "missing.pt", "--input", "userdir", "--out", "pred"], 2, "--checkpoint"),
    (["segment", "predict", "--checkpoint", "bad.pt", "--input", "userdir", "--out", "pred"], 2, "--checkpoint"),
    (["segment", "predict", "--checkpoint", "bad.pt", "--input", "userdir", "--out", "afile/p"], 2, "--out"),
    (["segment", "eval", "--checkpoint", "missing.pt"], 2, "--checkpoint"),
    (["segment", "export", "--checkpoint", "missing.pt", "out.pt2"], 2, "--checkpoint"),
    (["segment", "export", "--checkpoint", "bad.pt", "--format", "tflite", "out.pt2"], 2, "--format"),
    (["segment", "eval", "--checkpoint", "missing.pt", "--out", "userdir", "--overwrite"], 2, "did not write"),
    (["segment", "verify", "--dataset", "glas", "--data-dir", "nowhere"], 2, "nowhere"),
    # export
    (["export", "nowhere.zarr", "net.nir"], 2, "nowhere.zarr"),
    (["export", "lyap.zarr", "afile/net.nir"], 2, "OUT"),
    (["export", "lyap.zarr", "net.nir", "--cell", "gain"], 2, "--cell"),
    # verify
    (["verify", "nowhere.zarr"], 2, "nowhere.zarr"),
    (["verify", "userdir"], 2, "userdir"),
    (["verify", "foreign.zarr"], 2, "did not write"),
    (["verify", "damaged.zarr"], 2, "damaged"),
]

_CLASS_NAME = re.compile(r"\b[A-Za-z_]\w*(Error|Exception|Warning)\b")


def _digest(root: Path) -> str:
    """Names, kinds and bytes of everything below ``root``: equal digests mean nothing changed."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode() + (b"/" if p.is_dir() else b""))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run(args: list[str], capsys) -> tuple[int, str, str]:
    return run_in_process(args, capsys)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    import os

    root = tmp_path_factory.mktemp("prepared")
    (root / "afile").write_text("a file, not a folder\n")
    (root / "userdir").mkdir()
    (root / "userdir" / "notes.txt").write_text("years of work\n")
    (root / "bad.pt").write_bytes(b"not a checkpoint")
    xr.Dataset({"a": ("t", np.arange(3.0))}).to_zarr(root / "foreign.zarr")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        main(["--quiet", *LYAP, "--out", "lyap.zarr"])
    except SystemExit as e:
        assert not e.code, e.code
    finally:
        os.chdir(cwd)
    shutil.copytree(root / "lyap.zarr", root / "damaged.zarr")
    (root / "damaged.zarr" / "status" / "c" / "0" / "0").unlink()
    return root


@pytest.mark.parametrize("args, code, needle", CASES, ids=[f"{i}-" + " ".join(c[0])[-50:] for i, c in enumerate(CASES)])
def test_bad_input(prepared, tmp_path, monkeypatch, capsys, args, code, needle):
    work = tmp_path / "work"
    shutil.copytree(prepared, work)
    monkeypatch.chdir(work)
    before = _digest(work)
    got, out, err = run(args, capsys)
    lines = err.strip().splitlines()
    assert got == code, (got, err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err and not _CLASS_NAME.search(lines[0].removeprefix("Error: ")), lines[0]
    assert _digest(work) == before, "the refused command wrote or changed something"


def test_the_table_covers_every_command():
    from cli.main import COMMANDS
    from cli.segment import SUBCOMMANDS

    assert len(CASES) >= 40
    first = {c[0][0] for c in CASES} | {c[0][1] for c in CASES if len(c[0]) > 1 and c[0][0] == "--json"}
    mine = set(COMMANDS) - {"report"}  # it has its own tests
    assert mine <= first
    assert set(SUBCOMMANDS) <= {c[0][1] for c in CASES if c[0][0] == "segment"}
