"""Run the Triton kernels on the CPU through Triton's interpreter and print their errors as JSON.

Usage (a subprocess of the tests): ``TRITON_INTERPRET=1 python tests/segment/triton_interpreted.py
dwconv|wkv|opcheck|compile``. Each case compares the kernels with the float64 reference (``F.conv2d``; the
``scan`` Bi-WKV) on small shapes chosen to hit every mask: odd sizes, channel counts that are
not a multiple of the channel tile, stride 2, more chunks than one carry block.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def _patch_interpreter() -> None:
    """Triton 3.6's interpreter turns a 1-element array into an int with int(arr), which
    NumPy ≥ 2.4 refuses; take the element instead (a no-op where the hook does not exist)."""
    from triton.runtime import interpreter

    orig = getattr(interpreter, "_patch_lang_tensor", None)
    if orig is None:  # another Triton release: nothing to mend
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched


def _rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


def dwconv_cases() -> list[dict]:
    import torch
    import torch.nn.functional as F

    from segment import _dwconv_triton as D
    from segment.dwconv import _dwconv2d

    out = []
    cases = [(2, 5, 9, 7, 5, 1, "float64"), (2, 12, 9, 11, 5, 2, "float64"), (1, 3, 8, 8, 9, 1, "float64"),
             (2, 70, 6, 5, 3, 2, "float64"), (2, 12, 9, 11, 5, 2, "bfloat16")]
    for B, C, H, W, K, S, dtype in cases:
        g = torch.Generator().manual_seed(C + H)
        x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(memory_format=torch.channels_last)
        w = torch.randn(C, 1, K, K, generator=g, dtype=torch.float64)
        dt = getattr(torch, dtype)
        a = [x.to(dt).requires_grad_(), w.to(dt).requires_grad_()]
        b = [x.clone().requires_grad_(), w.clone().requires_grad_()]
        y = _dwconv2d(*a, S)
        yr = F.conv2d(*b, None, S, K // 2, 1, C)
        gy = torch.randn(yr.shape, generator=g, dtype=torch.float64)
        ga = torch.autograd.grad(y, a, gy.to(dt))
        gb = torch.autograd.grad(yr, b, gy)
        assert y.dtype == ga[0].dtype == ga[1].dtype == dt
        out.append({"case": [B, C, H, W, K, S], "dtype": dtype, "unroll": True, "shape_ok": y.shape == yr.shape,
                    "y": _rel(y, yr), "dx": _rel(ga[0], gb[0]), "dw": _rel(ga[1], gb[1])})
        # the looped-tap form of the forward and ∂x kernels, through the launchers
        y = D.forward(a[0], a[1], S, unroll=False)
        gx, gw = D.backward(gy.to(dt), a[0], a[1], S, unroll=False)
        out.append({"case": [B, C, H, W, K, S], "dtype": dtype, "unroll": False, "shape_ok": y.shape == yr.shape,
                    "y": _rel(y, yr), "dx": _rel(gx, gb[0]), "dw": _rel(gw, gb[1])})
    return out


def wkv_cases() -> list[dict]:
    import torch

    import segment._wkv_triton as K
    from segment._wkv_triton import wkv_triton
    from segment.wkv import bi_wkv

    out = []
    for B, T, C, bt in [(2, 33, 5, 16), (1, 530, 3, 8), (2, 77, 40, 32), (2, 5, 3, 16)]:
        g = torch.Generator().manual_seed(T)
        w = torch.randn(C, generator=g) * 3 / T
        u = torch.randn(C, generator=g) * 0.3
        k = torch.randn(B, T, C, generator=g) * 3
        v = torch.randn(B, T, C, generator=g)
        gy = torch.randn(B, T, C, generator=g)
        K.CHUNK_T = bt  # small chunks: several carry blocks at a small T
        a = [x.clone().requires_grad_() for x in (w, u, k, v)]
        b = [x.double().requires_grad_() for x in (w, u, k, v)]
        ya = wkv_triton(*a)
        yb = bi_wkv(*b, backend="scan")
        ga = torch.autograd.grad(ya, a, gy)
        gb = torch.autograd.grad(yb, b, gy.double())
        r = {"case": [B, T, C, bt], "y": _rel(ya, yb)}
        r.update({f"d{n}": _rel(x, y) for n, x, y in zip("wukv", ga, gb, strict=True)})
        out.append(r)
    return out


def opcheck_cases() -> list[dict]:
    """``torch.library.opcheck`` of the four custom ops: schema, autograd registration, and fake
    (meta) outputs equal to the real ones in shape, dtype and strides, as torch.compile needs."""
    import torch

    import segment._wkv_triton  # noqa: F401 (registers segment::bi_wkv*)
    import segment.dwconv  # noqa: F401 (registers segment::dwconv2d*)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 7, 9, generator=g).to(memory_format=torch.channels_last)
    w = torch.randn(6, 1, 5, 5, generator=g)
    gy = torch.randn(2, 6, 4, 5, generator=g).to(memory_format=torch.channels_last)
    B, T, C = 2, 20, 5
    wkv = [torch.randn(C, generator=g) / T, torch.randn(C, generator=g) / T,
           torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)]
    y, lz = torch.ops.segment.bi_wkv(*wkv)
    ops = {
        "dwconv2d": (x.clone().requires_grad_(), w.clone().requires_grad_(), 2),
        "dwconv2d_backward": (gy, x, w, 2),
        "bi_wkv": tuple(t.clone().requires_grad_() for t in wkv),
        "bi_wkv_backward": (*wkv, y, lz, torch.randn(B, T, C, generator=g)),
    }
    return [{"op": name, **torch.library.opcheck(getattr(torch.ops.segment, name).default, args)}
            for name, args in ops.items()]


def compile_cases() -> list[dict]:
    """One training step of a small RWKV-UNet with every depthwise conv and Bi-WKV on the custom
    ops, eager and under ``torch.compile(fullgraph=True)``: loss and parameter gradients.

    The model's dispatch (which sends CPU tensors to plain torch) is pointed at the ops directly;
    drop-path is off so that both steps see the same network."""
    import torch
    import torch.nn.functional as F

    import segment._wkv_triton as WT
    import segment.blocks as blocks
    from segment.dwconv import _dwconv2d
    from segment.model import create_model

    WT.CHUNK_T = 8
    blocks.depthwise_conv2d = lambda x, w, stride=1, backend="auto": _dwconv2d(x, w, int(stride))
    blocks.bi_wkv = lambda w, u, k, v, backend="auto": WT.wkv_triton(w, u, k, v)
    torch.manual_seed(0)
    m = create_model("rwkv_unet_test", num_classes=2, drop_path_rate=0.0, ccm_drop_path=0.0).train()
    x = torch.randn(2, 3, 32, 40).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (2, 32, 40))

    def step(f):
        m.zero_grad(set_to_none=True)
        loss = F.cross_entropy(f(x), y)
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in m.named_parameters()}

    l_eager, g_eager = step(m)
    l_comp, g_comp = step(torch.compile(m, fullgraph=True))
    return [{"param": n, "grad_max": float(g.abs().max()), "rel": _rel(g_comp[n], g), "loss_eager": l_eager,
             "loss_compiled": l_comp} for n, g in g_eager.items()]


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    _patch_interpreter()
    which = sys.argv[1]
    cases = {"dwconv": dwconv_cases, "wkv": wkv_cases, "opcheck": opcheck_cases, "compile": compile_cases}
    print(json.dumps(cases[which]()))
