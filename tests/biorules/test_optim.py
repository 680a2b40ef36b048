"""The optimisers compute torch.optim's numbers to the bit (its single-tensor CPU path)."""

import pytest
import torch

from biorules.errors import InputError
from biorules.optim import SGD, Adam


def _run(make, dtype, steps=25, skip=None):
    """Parameters after ``steps`` steps on fixed pseudo-random gradients; ``skip`` leaves one
    parameter without a gradient on the even steps."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype)) for shape in ((3, 5, 5), (3, 5), ())]
    opt = make(params)
    for k in range(steps):
        opt.zero_grad(set_to_none=True)
        for i, p in enumerate(params):
            if skip == i and k % 2 == 0:
                continue
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype) * 10.0 ** (k % 3 - 1)
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("skip", [None, 1])
def test_adam_equals_torch(dtype, skip):
    ours = _run(lambda ps: Adam(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-7), dtype, skip=skip)
    ref = _run(lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-7, foreach=False), dtype, skip=skip)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    assert not torch.equal(ours[0], _run(lambda ps: Adam(ps, lr=0.0), dtype)[0])  # the steps moved them


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_equals_torch(dtype):
    ours = _run(lambda ps: SGD(ps, lr=0.05), dtype, skip=0)
    ref = _run(lambda ps: torch.optim.SGD(ps, lr=0.05), dtype, skip=0)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))


def test_bad_settings_raise():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(InputError, match="learning rate"):
        SGD(p, lr=-1.0)
    with pytest.raises(InputError, match="betas"):
        Adam(p, betas=(1.0, 0.9))
