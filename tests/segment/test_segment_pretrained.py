"""Official encoder checkpoints onto our encoder (docs/rwkv-unet.md), on synthetic official state dicts."""

from __future__ import annotations

import argparse

import pytest
import torch

from biorules.errors import InputError
from segment.model import create_model
from segment.pretrained import load_official_encoder


def _official_encoder_state(model, *, current_code: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict named like the official encoder (docs/rwkv-unet.md): ours with random values, plus what the
    official module tree builds but never runs (ImageNet head, final LN2d, ``ln1`` of every
    block, ``ln2`` and ``att`` of every block in the current code)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.encoder.state_dict().items():
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif v.is_floating_point():
            sd[k] = torch.randn(v.shape, generator=g)
        else:
            sd[k] = torch.full_like(v, 7)
    c3 = model.cfg.widths[-1]
    sd["head.weight"] = torch.randn(1000, c3, generator=g)
    sd["head.bias"] = torch.zeros(1000)
    sd["norm.norm.weight"] = torch.ones(c3)
    sd["norm.norm.bias"] = torch.zeros(c3)
    for s in range(5):
        for j, blk in enumerate(getattr(model.encoder, f"stage{s}")):
            p, mid = f"stage{s}.{j}.", blk.dim_mid
            if not blk.rwkv:
                sd[p + "ln1.weight"], sd[p + "ln1.bias"] = torch.ones(mid), torch.zeros(mid)
            if current_code:
                sd[p + "ln2.weight"], sd[p + "ln2.bias"] = torch.ones(mid), torch.zeros(mid)
                if not blk.rwkv:
                    sd[p + "att.spatial_decay"] = torch.zeros(mid)
                    sd[p + "att.key.weight"] = torch.zeros(mid, mid)
    return sd


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_model("rwkv_unet_test", num_classes=2)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_module", "net"])
def test_loads_every_encoder_tensor(tmp_path, tiny, wrap):
    sd = _official_encoder_state(tiny)
    if wrap == "state_dict":
        obj = {"state_dict": sd, "epoch": 300}
    elif wrap == "model_module":
        obj = {"model": {"module." + k: v for k, v in sd.items()}}
    elif wrap == "net":
        obj = {"net": sd}
    else:
        obj = sd
    path = tmp_path / "net_test.pth"
    torch.save(obj, path)
    report = load_official_encoder(tiny, path)
    ours = tiny.encoder.state_dict()
    for k, v in ours.items():
        assert torch.equal(v, sd[k].to(v.dtype)), k
    assert len(report.loaded) == len(ours) and report.missing == [] and report.unexpected == []
    assert "head.weight" in report.ignored and "norm.norm.weight" in report.ignored
    assert "stage0.0.ln1.weight" in report.ignored and "stage3.1.ln2.weight" in report.ignored
    assert "stage1.0.att.key.weight" in report.ignored


def test_official_keys_of_a_real_variant_are_ours(tmp_path):
    """Spot-check the docs/rwkv-unet.md names on the T encoder: the filter needs no renaming."""
    keys = set(create_model("rwkv_unet_t").encoder.state_dict())
    for k in [
        "stage0.0.conv.conv.weight", "stage0.0.conv.norm.running_var", "stage0.0.conv_local.conv.weight",
        "stage0.0.se.conv_reduce.weight", "stage0.0.se.conv_expand.bias", "stage0.0.proj.conv.weight",
        "stage1.0.norm.weight", "stage2.1.norm.num_batches_tracked", "stage3.0.norm.norm.weight",
        "stage3.1.att.spatial_decay", "stage3.1.att.spatial_first", "stage3.1.att.spatial_mix_k",
        "stage4.1.att.key.weight", "stage4.1.att.value.weight", "stage4.1.att.receptance.weight",
        "stage4.1.att.output.weight", "stage4.1.att.key_norm.bias", "stage4.1.ln1.weight",
    ]:
        assert k in keys, k
    assert create_model("rwkv_unet_t").encoder.stage0[0].conv_local.conv.weight.shape == (3, 1, 5, 5)


def test_full_segmentation_checkpoint_encoder_part(tmp_path, tiny):
    sd = _official_encoder_state(tiny, current_code=False)
    full = {"module.encoder." + k: v for k, v in sd.items()}
    full["module.final_conv.weight"] = torch.zeros(2, 8, 1, 1)
    full["module.ccm.ln1.weight"] = torch.ones(3)
    torch.save(full, tmp_path / "best.pth")
    report = load_official_encoder(tiny, tmp_path / "best.pth")
    assert "final_conv.weight" in report.ignored and "ccm.ln1.weight" in report.ignored
    assert torch.equal(tiny.encoder.stage4[1].att.spatial_decay, sd["stage4.1.att.spatial_decay"])


def test_one_channel_model_sums_the_stem_weight(tmp_path):
    torch.manual_seed(0)
    three = create_model("rwkv_unet_test")
    one = create_model("rwkv_unet_test", in_channels=1)
    sd = _official_encoder_state(three)
    torch.save(sd, tmp_path / "net.pth")
    report = load_official_encoder(one, tmp_path / "net.pth")
    assert report.adapted == ["stage0.0.conv.conv.weight"]
    w3 = sd["stage0.0.conv.conv.weight"]
    torch.testing.assert_close(one.encoder.stage0[0].conv.conv.weight, w3.sum(1, keepdim=True))
    # equivalence: a grey image through the 1-channel stem = its 3-fold repeat through the 3-channel one
    load_official_encoder(three, tmp_path / "net.pth")
    x = torch.randn(1, 1, 32, 32)
    one.eval()
    three.eval()
    with torch.no_grad():
        torch.testing.assert_close(one.encoder.stage0[0](x), three.encoder.stage0[0](x.repeat(1, 3, 1, 1)))


def test_errors_name_the_keys(tmp_path, tiny):
    before = {k: v.clone() for k, v in tiny.encoder.state_dict().items()}
    sd = _official_encoder_state(tiny)
    bad = dict(sd)
    bad["stage3.1.att.key.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(InputError, match=r"shape mismatches \(stage3\.1\.att\.key\.weight"):
        load_official_encoder(tiny, tmp_path / "shape.pth")
    bad = dict(sd)
    del bad["stage4.1.att.spatial_first"]
    torch.save(bad, tmp_path / "missing.pth")
    with pytest.raises(InputError, match=r"1 missing keys \(stage4\.1\.att\.spatial_first\)"):
        load_official_encoder(tiny, tmp_path / "missing.pth")
    bad = dict(sd)
    bad["stage3.1.att.bonus"] = torch.zeros(1)
    torch.save(bad, tmp_path / "extra.pth")
    with pytest.raises(InputError, match=r"unexpected keys \(stage3\.1\.att\.bonus\)"):
        load_official_encoder(tiny, tmp_path / "extra.pth")
    # a T encoder does not fit the tiny model
    torch.save(create_model("rwkv_unet_t").encoder.state_dict(), tmp_path / "net_T.pth")
    with pytest.raises(InputError, match="does not fit rwkv_unet_test"):
        load_official_encoder(tiny, tmp_path / "net_T.pth")
    for k, v in tiny.encoder.state_dict().items():  # nothing was loaded by the failed attempts
        assert torch.equal(v, before[k])


def test_file_problems(tmp_path, tiny):
    with pytest.raises(InputError, match="not found"):
        load_official_encoder(tiny, tmp_path / "nope.pth")

    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "code.pth")  # code, not data
    with pytest.raises(InputError, match="weights-only"):
        load_official_encoder(tiny, tmp_path / "code.pth")
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(InputError, match="not a state dict"):
        load_official_encoder(tiny, tmp_path / "meta.pth")
