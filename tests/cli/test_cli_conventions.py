"""The conventions every command shares: exit 3 and a count for diverged or failed cells, strict
JSON, progress bars only on a terminal, one rule for an existing --out, the writer lock, workers
that end with their parent, help texts with examples, closed sets equal to their registries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import xarray as xr
from cli_runner import run_cli, run_in_process

from biorules import store
from cli.main import COMMANDS, cli

TINY_SWEEP = ["--rules", "bptt", "--floss", "none", "--task", "2af", "--seeds", "1", "--n", "6", "--updates", "3",
              "--exponents", "1", "--workers", "1"]
TINY_TRAIN = ["--n", "6", "--updates", "2", "--batch", "4", "--exponents", "1"]


def run(args: list[str], capsys) -> tuple[int, str, str]:
    return run_in_process(args, capsys)


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_sweep_cell_exits_3_with_its_count_and_reason(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    code, stdout, err = run(["sweep", "--gain", "3e38", *TINY_SWEEP, "--out", str(out)], capsys)
    assert code == 3, err
    assert "1 of 1 cell(s) diverged, 0 failed" in stdout and "exit 3" in stdout
    ds = store.open_store(out)
    assert int(ds.status.squeeze()) == store.STATUS["diverged"] and "non-finite" in str(ds.message.values.item())
    code, stdout, _ = run(["--json", "sweep", "--gain", "3e38", *TINY_SWEEP, "--out", str(out)], capsys)
    payload = _strict(stdout)  # resumed: nothing to do, the same verdict
    assert code == 3 and payload["diverged"] == 1 and payload["failed"] == 0 and payload["cells"] == 1


def test_a_diverged_training_exits_3(tmp_path, capsys):
    code, stdout, _ = run(["train", *TINY_TRAIN, "--optimizer", "sgd", "--lr", "1e38", "--out",
                           str(tmp_path / "t.zarr")], capsys)
    assert code == 3 and "note: the run diverged: non-finite" in stdout


def test_json_is_strict_on_every_command_that_has_nan(tmp_path, capsys):
    code, stdout, err = run(["lyapunov", "--json", "--gain", "1", "--n", "6", "--seeds", "1", "--exponents", "1",
                             "--steps", "20", "--transient", "5", "--out", str(tmp_path / "l.zarr")], capsys)
    assert code == 0, err
    payload = _strict(stdout)
    assert payload["lambda_max_sd"] == [None]  # one seed: no sd, null rather than NaN
    for name, command in _all_commands():
        if name.split()[0] in MINE and not isinstance(command, click.Group):
            assert any("--json" in p.opts for p in command.params), name


def test_no_progress_bars_without_a_terminal(tmp_path):
    res = run_cli(["train", *TINY_TRAIN, "--out", str(tmp_path / "t.zarr")], tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "test accuracy" in res.stdout


def test_an_existing_out_is_resumed_or_refused_the_same_way(tmp_path, capsys):
    out = str(tmp_path / "t.zarr")
    assert run(["train", *TINY_TRAIN, "--out", out], capsys)[0] == 0
    before = store.open_store(out).load()
    code, stdout, _ = run(["train", *TINY_TRAIN, "--out", out], capsys)
    assert code == 0 and "holds this run already" in stdout
    xr.testing.assert_identical(store.open_store(out).load(), before)
    code, _, err = run(["train", *TINY_TRAIN, "--lr", "0.01", "--out", out], capsys)
    assert code == 2 and "holds a run with other options (lr)" in err and "--overwrite" in err
    code, _, err = run(["train", *TINY_TRAIN, "--lr", "0.01", "--out", out, "--overwrite"], capsys)
    assert code == 0 and json.loads(store.open_store(out).attrs["config"])["lr"] == 0.01
    code, _, err = run(["floss", "--n", "6", "--steps", "1", "--out", out], capsys)
    assert code == 2 and "other options" in err


def test_a_second_writer_is_refused(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    with store.writer_lock(out):
        code, _, err = run(["sweep", "--gain", "1", *TINY_SWEEP, "--out", str(out)], capsys)
        assert code == 2 and f"--out {out} is being written by another biorules process (pid {os.getpid()})" in err
        code, _, err = run(["train", *TINY_TRAIN, "--out", str(out)], capsys)
        assert code == 2 and "being written by another" in err
    assert not out.exists()


def test_workers_end_with_their_parent(tmp_path):
    """SIGKILL of the sweep's main process: its worker processes exit by themselves."""
    import psutil

    out = tmp_path / "s.zarr"
    code = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from cli.main import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--quiet", "sweep", "--gain", "1,2", "--rules", "bptt",
                             "--floss", "none", "--task", "2af", "--seeds", "2", "--n", "16", "--updates", "20000",
                             "--exponents", "1", "--stack", "1", "--workers", "2", "--out", str(out)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        parent = psutil.Process(proc.pid)
        waited = time.monotonic()
        workers: list = []
        while len(workers) < 2:  # wait for the event (both workers started), with a generous limit only
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() - waited < 900, "the workers never started"
            workers = [p for p in parent.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=300)
        assert not alive, f"workers still alive 300 s after their parent was killed: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _all_commands():
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        yield name, command
        if isinstance(command, click.Group):
            sub = click.Context(command, parent=ctx)
            for sub_name in command.list_commands(sub):
                yield f"{name} {sub_name}", command.get_command(sub, sub_name)


MINE = set(COMMANDS)


def test_help_texts_have_examples_and_every_option_its_help():
    seen = set()
    for name, command in _all_commands():
        seen.add(name.split()[0])
        if name.split()[0] not in MINE:
            continue
        assert command.epilog and "Example" in command.epilog, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts[0]} has no help text"
        text = command.get_help(click.Context(command, info_name=name))
        for banned in ("DESIGN.md", "spec §", "/work/shared"):
            assert banned not in text, (name, banned)
    assert MINE <= seen
    assert cli.epilog and "Example" in cli.epilog


def test_closed_sets_equal_their_registries():
    from biorules.flossing import MODES
    from biorules.train import MODELS, OPTIMIZERS
    from cli import choices
    from segment import dwconv, wkv
    from segment.data import DATASETS, dataset_info
    from segment.model import VARIANTS

    assert choices.FLOSS_MODES == tuple(MODES)
    assert choices.NETWORK_MODELS == tuple(MODELS) and choices.OPTIMIZERS == tuple(OPTIMIZERS)
    assert choices.SEGMENT_MODELS == tuple(VARIANTS)
    assert choices.WKV_BACKENDS == tuple(wkv.BACKENDS) and choices.DWCONV_BACKENDS == tuple(dwconv.BACKENDS)
    assert all(dataset_info(d).epochs >= 1 and dataset_info(d).batch >= 1 for d in DATASETS)  # every recipe


def test_segment_divergence_is_one_line_and_not_left_running(tmp_path, capsys):
    out = tmp_path / "seg.zarr"
    code, _, err = run(["segment", "--model", "rwkv_unet_test", "--size", "32", "--epochs", "2", "--batch", "6",
                        "--device", "cpu", "--lr", "1e9", "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1 and "1 of 1 split(s) diverged: official (epoch 1)" in lines[0], err
    assert "lower --lr (now 1e+09)" in lines[0]
    assert "Error" not in lines[0].removeprefix("Error: ")
    assert int(store.open_store(out)["status"].values[0]) == store.STATUS["diverged"]


def test_segment_predict_uses_the_window_on_larger_images(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    out = tmp_path / "seg.zarr"
    tiny = ["--model", "rwkv_unet_test", "--size", "32", "--epochs", "1", "--batch", "6", "--device", "cpu"]
    assert run(["--quiet", "segment", *tiny, "--out", str(out)], capsys)[0] == 0
    ckpt = tmp_path / "seg.ckpt" / "split0_best.pt"
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(images / "big.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / "small.png")
    code, stdout, err = run(["segment", "predict", "--checkpoint", str(ckpt), "--input", str(images), "--out",
                             str(tmp_path / "pred"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert "1 of 2 image(s) are larger than the training size 32: predicted by sliding window" in stdout
    assert Image.open(tmp_path / "pred" / "big_mask.png").size == (96, 80)
    code, stdout, err = run(["segment", "predict", "--checkpoint", str(ckpt), "--input", str(images), "--out",
                             str(tmp_path / "pred2"), "--device", "cpu", "--resize"], capsys)
    assert code == 0 and "sliding window" not in stdout
    assert sorted(p.name for p in Path(tmp_path / "pred2").iterdir()) == [
        "big_mask.png", "big_overlay.png", "small_mask.png", "small_overlay.png"]


def test_verify_names_the_damage_and_repair_lets_the_same_command_recompute_it(tmp_path, capsys):
    out = tmp_path / "l.zarr"
    scan = ["lyapunov", "--gain", "1,2", "--n", "6", "--seeds", "1", "--exponents", "1", "--steps", "20",
            "--transient", "5", "--out", str(out)]
    assert run(["--quiet", *scan], capsys)[0] == 0
    whole = store.open_store(out).load()
    assert run(["verify", str(out)], capsys)[:2] == (0, f"{out}: whole\n")
    (out / "status" / "c" / "1" / "0").unlink()
    chunk = out / "spectrum" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:3])
    code, _, err = run(scan, capsys)  # the rerun refuses the damaged store instead of calling it complete
    assert code == 2 and "is damaged" in err and "verify --repair" in err
    code, stdout, err = run(["verify", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--repair" in err
    assert "chunk status/c/1/0 of cell (gain=2.0, seed=0) is missing" in stdout
    assert "chunk spectrum/c/0/0/0 of cell (gain=1.0, seed=0) cannot be decoded" in stdout
    code, stdout, err = run(["--json", "verify", "--repair", str(out)], capsys)
    assert code == 0 and _strict(stdout)["repaired_cells"] == 2 and _strict(stdout)["left"] == []
    assert (store.open_store(out)["status"].values == store.STATUS["pending"]).all()
    assert run(["--quiet", *scan], capsys)[0] == 0  # the same command recomputes the two cells
    xr.testing.assert_identical(store.open_store(out).load().drop_vars("wall_time").drop_attrs(),
                                whole.drop_vars("wall_time").drop_attrs())
