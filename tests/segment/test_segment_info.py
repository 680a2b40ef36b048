"""``segment.info`` and ``biorules segment info``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from biorules.errors import InputError
from cli.main import cli
from cli.segment_info import MODELS
from segment.info import model_info, parse_size, peak_forward_bytes
from segment.model import VARIANTS, create_model


def test_cli_model_choices_follow_the_registry():
    assert tuple(VARIANTS) == MODELS


def test_parse_size():
    assert parse_size(256) == (256, 256)
    assert parse_size("512x384") == (512, 384)
    with pytest.raises(InputError, match="--size"):
        parse_size("big")


def test_model_info_t_at_256():
    r = model_info("rwkv_unet_t", 256)
    assert r["params"] == 3_145_761
    assert r["params_as_reported"] == 3_310_911
    assert abs(r["macs"]["total"] - 3.59e9) / 3.59e9 < 0.002
    assert r["macs"]["wkv"] == 8 * (1024 * 288 * 3 + 256 * 560 * 1)
    tokens = [s["tokens"] for s in r["stages"]]
    assert tokens == [65536, 16384, 4096, 1024, 256]
    assert [s["wkv_channels"] for s in r["stages"]] == [0, 0, 0, 288, 560]
    inf, train = r["memory_inference"], r["memory_training_forward"]
    assert inf["weights"] == 3_145_761 * 4 + sum(  # + BN running stats and counters
        b.numel() * b.element_size() for b in create_model("rwkv_unet_t").buffers()
    )
    assert inf["activations"] > inf["input"] and train["activations"] > 3 * inf["activations"]


def test_peak_memory_counts_a_known_allocation_pattern():
    """Two live (1, 8, 16, 16) fp32 tensors at most: 2 · 8 KiB (+ nothing for a view)."""

    class Net(torch.nn.Module):
        def forward(self, x):
            a = x * 2
            b = a + 1
            del a
            c = b.view(-1)
            return c * 3

    x = torch.zeros(1, 8, 16, 16)
    r = peak_forward_bytes(Net(), x)
    assert r["activations"] == 2 * 8 * 16 * 16 * 4


def test_cli_info_text_and_json():
    runner = CliRunner()
    res = runner.invoke(cli, ["segment", "info", "--model", "rwkv_unet_test", "--size", "64x48"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "parameters (executed)" in res.output and "64x48" in res.output
    res = runner.invoke(cli, ["--json", "segment", "info", "--model", "rwkv_unet_test", "--size", "32"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["input"] == [1, 3, 32, 32] and data["params"] > 0


@pytest.mark.parametrize("args", [["--size", "0"], ["--size", "ax3"], ["--model", "unet"], ["--batch", "0"]])
def test_cli_info_bad_options_exit_2(args):
    res = CliRunner().invoke(cli, ["segment", "info", *args])
    assert res.exit_code == 2
    assert "--size" in res.output or "--model" in res.output or "--batch" in res.output


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['segment', 'info', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
