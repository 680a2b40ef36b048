"""``biorules segment`` through the entry point: training, predict/eval/verify, bad input
(one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import seg_fixtures as fx
from cli_runner import run_in_process

from biorules.store import STATUS
from segment.results import open_results

TINY = ["--model", "rwkv_unet_test", "--size", "32", "--epochs", "1", "--batch", "6", "--device", "cpu"]


run = run_in_process  # the entry point in this process: exit code, stdout, stderr


def test_train_predict_eval(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.zarr"
    code, stdout, err = run(["--json", "segment", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["splits_done"] == 1 and 0 <= summary["classes"]["nucleus"]["dice"][0] <= 1
    assert set(summary["objects"]) == {"test"}
    ck = tmp_path / "run.ckpt" / "split0_best.pt"
    code, stdout, err = run(["segment", "eval", "--checkpoint", str(ck), "--device", "cpu"], capsys)
    assert code == 0 and "nucleus" in stdout and "objects test: F1" in stdout
    code, stdout, err = run(["--json", "segment", "eval", "--checkpoint", str(ck), "--device", "cpu", "--window",
                             "--out", str(tmp_path / "win.zarr")], capsys)
    assert code == 0, err
    assert 0 <= json.loads(stdout)["classes"]["nucleus"]["dice"][0] <= 1
    assert json.loads(open_results(tmp_path / "win.zarr").attrs["config"])["window"] is True
    fx.save(tmp_path / "in" / "x.png", fx.gray(1))
    code, stdout, err = run(["segment", "predict", "--checkpoint", str(ck), "--input", str(tmp_path / "in"),
                             "--out", str(tmp_path / "pred"), "--device", "cpu"], capsys)
    assert code == 0 and sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["x_mask.png", "x_overlay.png"]
    code, _, err = run(["segment", "predict", "--checkpoint", str(ck), "--input", str(tmp_path / "in"),
                        "--out", str(tmp_path / "win"), "--device", "cpu", "--window"], capsys)
    assert code == 0 and (tmp_path / "win" / "x_mask.png").is_file(), err
    # the same command again resumes (the run is finished: its summary); other options are refused
    code, stdout, err = run(["segment", *TINY, "--out", str(out)], capsys)
    assert code == 0 and "nucleus" in stdout
    code, _, err = run(["segment", *TINY, "--lr", "0.01", "--out", str(out)], capsys)
    assert code == 2 and "other options (lr)" in err and "--overwrite" in err
    code, stdout, err = run(["segment", *TINY, "--out", str(out), "--resume"], capsys)
    assert code == 0 and "nucleus" in stdout


@pytest.mark.parametrize("case", ["no-data-dir", "missing-dir", "wrong-layout", "corrupt", "size", "unknown",
                                  "encoder", "triton-on-cpu"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, capsys, case: str) -> None:
    data = tmp_path / "glas"
    fx.make_glas(data)
    args = ["segment", "--dataset", "glas", "--data-dir", str(data)]
    expect = ""
    if case == "no-data-dir":
        args, expect = ["segment", "--dataset", "glas"], "--data-dir is required"
    elif case == "missing-dir":
        args[-1], expect = str(tmp_path / "nowhere"), "nowhere not found"
    elif case == "wrong-layout":
        fx.make_kvasir(tmp_path / "kv")
        args[-1], expect = str(tmp_path / "kv"), "no GlaS files"
    elif case == "corrupt":
        (data / "testA_2.bmp").write_bytes(b"BM\x00garbage")
        expect = "cannot decode image " + str(data / "testA_2.bmp")
    elif case == "size":
        fx.save(data / "train_2_anno.bmp", fx.blobs(2, w=fx.W - 4))
        expect = f"mask {data / 'train_2_anno.bmp'} is 44x40 but image"
    elif case == "unknown":
        args[2], expect = "mnist", "Invalid value for '--dataset': 'mnist' is not one of 'demo', 'glas'"
    elif case == "encoder":
        args, expect = [*args, "--encoder", str(tmp_path / "net_T.pth")], "net_T.pth"
    elif case == "triton-on-cpu":
        args, expect = [*args, "--dwconv", "triton", "--device", "cpu"], "--dwconv triton needs a CUDA device"
    out = tmp_path / "out.zarr"
    code, stdout, err = run([*args, *TINY, "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("Error: ") and expect in err, err
    assert not out.exists() and not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("command", ["train", "eval"])
def test_overwrite_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys, command: str) -> None:
    """--overwrite on a user's folder: one line, exit 2, every file still there, byte for byte."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's notes")
    (out / "figures").mkdir()
    (out / "figures" / "fig1.png").write_bytes(b"\x89PNG...")
    before = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else b"") for p in out.rglob("*"))
    if command == "train":
        args = ["segment", *TINY, "--out", str(out), "--overwrite"]
    else:
        ck = tmp_path / "ck.pt"
        ck.write_bytes(b"junk")  # refused before the checkpoint is even read
        args = ["segment", "eval", "--checkpoint", str(ck), "--device", "cpu", "--out", str(out), "--overwrite"]
    code, _, err = run(args, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "biorules did not write" in err and str(out) in err, err
    after = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else b"") for p in out.rglob("*"))
    assert after == before


def test_overwrite_replaces_its_own_store(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.zarr"
    code, _, err = run(["segment", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    (tmp_path / "run.ckpt" / "split0_last.pt").write_bytes(b"stale")
    code, _, err = run(["segment", *TINY, "--out", str(out), "--overwrite"], capsys)
    assert code == 0, err
    assert (tmp_path / "run.ckpt" / "split0_last.pt").read_bytes() != b"stale"
    assert int(open_results(out)["status"].values[0]) == STATUS["done"]


def test_verify_lists_every_problem(tmp_path: Path, capsys) -> None:
    fx.make_glas(tmp_path)
    (tmp_path / "train_1.bmp").write_bytes(b"junk")
    (tmp_path / "testA_1.bmp").write_bytes(b"junk")
    code, stdout, err = run(["segment", "verify", "--dataset", "glas", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and err.count("cannot decode image") == 2 and "7 images checked, 2 problem(s)" in stdout


def test_predict_bad_checkpoint(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    code, _, err = run(["segment", "predict", "--checkpoint", str(tmp_path / "no.pt"), "--input",
                        str(tmp_path / "in"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no.pt: file not found" in err and not (tmp_path / "o").exists()


def test_subcommand_help_does_not_import_torch() -> None:
    code = ("import sys; from cli.main import main\n"
            "try:\n    main(['segment', 'predict', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "--checkpoint" in r.stdout


def test_eval_again_into_its_own_store_recomputes_and_other_options_are_refused(tmp_path: Path, capsys) -> None:
    """``segment eval --out E`` twice with the same options recomputes into E (exit 0, same numbers);
    with another option it is refused with one line naming it, and E is unchanged."""
    run_out = tmp_path / "run.zarr"
    assert run(["--quiet", "segment", *TINY, "--out", str(run_out)], capsys)[0] == 0
    ck = str(tmp_path / "run.ckpt" / "split0_best.pt")
    ev = tmp_path / "eval.zarr"
    base = ["segment", "eval", "--checkpoint", ck, "--device", "cpu", "--out", str(ev)]
    assert run(["--quiet", *base], capsys)[0] == 0
    first = open_results(ev)["test_dice"].values.copy()
    code, _, err = run(["--quiet", *base], capsys)
    assert code == 0, err
    assert (open_results(ev)["test_dice"].values == first).all()
    code, _, err = run([*base, "--tta"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "other options (tta)" in lines[0] and "--overwrite" in lines[0], err
    assert json.loads(open_results(ev).attrs["config"])["tta"] is False
