"""Depthwise convolution backends (segment.dwconv): the fused Triton kernels against F.conv2d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_triton

from biorules.errors import InputError
from segment import dwconv
from segment.dwconv import depthwise_conv2d
from segment.model import create_model


@requires_triton
def test_triton_kernels_match_conv2d_on_cpu_interpreter(triton_interpreted):
    """Forward, ∂x and ∂w equal F.conv2d in float64 to fp32 accumulation (1e-6 relative), for
    kernels 3, 5, 9, stride 1 and 2, odd sides and channel counts off the tile; bf16 in and out
    to bf16 rounding (1e-2; measured 3–7e-3). Both forms of the tap loop (unrolled, looped)."""
    rows = triton_interpreted("dwconv")
    assert {r["unroll"] for r in rows} == {True, False}
    for r in rows:
        assert r["shape_ok"], r
        assert max(r["y"], r["dx"], r["dw"]) < (1e-6 if r["dtype"] == "float64" else 1e-2), r


@requires_triton
def test_custom_ops_pass_opcheck(triton_interpreted):
    """segment::dwconv2d, segment::bi_wkv and their backward ops: schema, autograd registration,
    fake outputs matching the real kernels' (a ∂w stride mismatch once broke torch.compile)."""
    rows = triton_interpreted("opcheck")
    assert [r["op"] for r in rows] == ["dwconv2d", "dwconv2d_backward", "bi_wkv", "bi_wkv_backward"]
    for r in rows:
        assert {k: v for k, v in r.items() if k != "op"} == {
            "test_schema": "SUCCESS", "test_autograd_registration": "SUCCESS", "test_faketensor": "SUCCESS",
            "test_aot_dispatch_dynamic": "SUCCESS"}, r


@pytest.mark.slow
@requires_triton
def test_compiled_training_step_matches_eager_on_cpu_interpreter(triton_interpreted):
    """torch.compile(fullgraph=True) of a training step through segment::dwconv2d and
    segment::bi_wkv: same loss, same gradients on every parameter that gets one (5e-4 relative:
    fp32 sums in another order; measured ≤ 1.2e-4). Gradients below 1e-5 are rounding noise (at
    most 3e-7 here: a norm's scale or shift right before another norm gets none)."""
    rows = triton_interpreted("compile")
    assert abs(rows[0]["loss_eager"] - rows[0]["loss_compiled"]) < 1e-5
    live = [r for r in rows if r["grad_max"] > 1e-5]
    assert len(live) > len(rows) // 2
    assert max(r["rel"] for r in live) < 5e-4, max(live, key=lambda r: r["rel"])


def test_torch_backend_is_f_conv2d_and_inputs_are_checked():
    x = torch.randn(2, 6, 9, 7)
    w = torch.randn(6, 1, 5, 5)
    for s in (1, 2):
        torch.testing.assert_close(depthwise_conv2d(x, w, s, backend="torch"), F.conv2d(x, w, None, s, 2, 1, 6),
                                   rtol=0, atol=0)
    assert depthwise_conv2d(x, w, 2).shape == (2, 6, 5, 4)
    with pytest.raises(InputError, match="stride"):
        depthwise_conv2d(x, w, 3)
    with pytest.raises(InputError, match="odd kernel"):
        depthwise_conv2d(x, torch.randn(6, 1, 4, 4))
    with pytest.raises(InputError, match="odd kernel"):
        depthwise_conv2d(x, torch.randn(5, 1, 5, 5))
    with pytest.raises(InputError, match="backend"):
        depthwise_conv2d(x, w, backend="cudnn")
    assert dwconv.resolve_backend("auto", torch.device("cpu")) == "torch"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="triton"):
            depthwise_conv2d(x, w, backend="triton")


def test_auto_sends_only_wide_kernels_to_triton(monkeypatch):
    """Where Triton would be chosen, ``auto`` still runs 5×5 through cuDNN (faster there) and 9×9
    through the Triton kernels (which, on a CPU tensor, refuse: the route is what is checked)."""
    monkeypatch.setattr(dwconv, "resolve", lambda backend, device, **kw: "triton" if backend == "auto" else backend)
    x = torch.randn(1, 4, 12, 10)
    w5, w9 = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 9, 9)
    torch.testing.assert_close(depthwise_conv2d(x, w5, 2), F.conv2d(x, w5, None, 2, 2, 1, 4), rtol=0, atol=0)
    assert dwconv.AUTO_TRITON_MIN_KERNEL == 7
    with pytest.raises(InputError, match="triton"):
        depthwise_conv2d(x, w9)


def test_backend_choice_keeps_a_compiled_graph_whole():
    """Dynamo takes Triton's availability as a constant: tracing its import was a graph break at
    every fused op of a compiled model (found on the GPU)."""
    from segment import backends

    backends._importable.cache_clear()  # not yet asked: the import path itself is traced

    def f(x):
        name = backends.resolve("auto", torch.device("cuda"), choices=dwconv.BACKENDS, fallback="torch",
                                what="depthwise-conv", module="_dwconv_triton")
        return x + 1 if name == "triton" else x - 1

    x = torch.zeros(3)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="eager")(x), f(x))


def test_model_switches_every_depthwise_conv():
    m = create_model("rwkv_unet_test", dwconv="torch")
    convs = [c for c in m.modules() if getattr(c, "depthwise", False)]
    assert len(convs) == 1 + 6 + 4  # stem, one per encoder block, one per decoder block
    m.set_dwconv_backend("triton")
    assert {c.dwconv for c in convs} == {"triton"}
    with pytest.raises(InputError, match="backend"):
        m.set_dwconv_backend("nope")


@pytest.mark.gpu
@pytest.mark.skipif(not dwconv.triton_available(), reason="needs CUDA and Triton")
@pytest.mark.parametrize("B,C,H,W,K,S", [(2, 3, 64, 64, 5, 1), (2, 96, 33, 47, 5, 2), (4, 160, 16, 16, 9, 1),
                                         (2, 1152, 8, 12, 5, 1), (2, 64, 128, 96, 9, 1), (1, 70, 17, 9, 3, 2)])
def test_triton_matches_cudnn_on_gpu(B, C, H, W, K, S):
    """Against cuDNN in float64: fp32 1e-5 relative (max abs over max abs), bf16 autocast 2e-2,
    forward and both grads. (cuDNN in fp32 is no oracle: it may use TF32, ~1e-4 on ∂w.)"""
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(C)
    x = torch.randn(B, C, H, W, device=dev, generator=g).to(memory_format=torch.channels_last)
    w = torch.randn(C, 1, K, K, device=dev, generator=g) / K
    for amp, tol in ((False, 1e-5), (True, 2e-2)):
        outs = []
        for backend in ("triton", "torch"):
            ref = backend == "torch" and not amp
            a = [(t.double() if ref else t.clone()).requires_grad_() for t in (x, w)]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                y = depthwise_conv2d(*a, S, backend=backend)
            gy = torch.randn(y.shape, device=dev, generator=torch.Generator(device=dev).manual_seed(1))
            outs.append((y, *torch.autograd.grad(y, a, gy.to(y.dtype))))
        for name, p, q in zip(("y", "dx", "dw"), *outs, strict=True):
            assert p.shape == q.shape, name
            err = float((p.float() - q.float()).abs().max() / q.float().abs().max())
            assert err < tol, (name, amp, err)


@pytest.mark.gpu
@pytest.mark.skipif(not dwconv.triton_available(), reason="needs CUDA and Triton")
def test_compiled_model_with_custom_ops_matches_eager_on_gpu():
    """torch.compile(fullgraph=True) traces through segment::dwconv2d and segment::bi_wkv."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    m = create_model("rwkv_unet_test", num_classes=2).to(dev).eval()
    x = torch.randn(2, 3, 64, 80, device=dev)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, fullgraph=True)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
