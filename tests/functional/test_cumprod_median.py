"""cumprod (exact gradient with zeros) and median (lower middle value) in reduction.py."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.testing import gradcheck, gradgradcheck
from helpers import HAVE_TORCH, check_op

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cumprod(dim):
    check_op(lambda x: gm.cumprod(x, dim), lambda x: np.cumprod(x, axis=dim), [(3, 4, 5)],
             torch_fn=lambda x: torch.cumprod(x, dim))


@needs_torch
def test_cumprod_gradient_with_zeros():
    # a naive grad_i = revcumsum(g * y)_i / x_i gives NaN/inf here
    x = np.array([[2.0, 0.0, 3.0, -1.5, 0.0], [0.0, 1.2, 0.7, 2.0, -0.4]])
    g = gm.tensor(x, requires_grad=True)
    t = torch.tensor(x, requires_grad=True)
    w = np.random.default_rng(0).normal(size=x.shape)
    (gm.cumprod(g, 1) * gm.tensor(w)).sum().backward()
    (torch.cumprod(t, 1) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda a: gm.cumprod(a, 1), [gm.tensor(x, requires_grad=True)])
    assert gradgradcheck(lambda a: gm.cumprod(a, 1), [gm.tensor(x, requires_grad=True)])
    assert gm.cumprod(gm.tensor([1, 2, 3]), 0).dtype == gm.int64


@needs_torch
def test_median_all_and_dim():
    x = np.random.default_rng(0).normal(size=(4, 6))
    assert gm.median(gm.tensor(x)).item() == torch.median(torch.tensor(x)).item()
    for dim in (0, 1):
        v, i = gm.median(gm.tensor(x), dim)
        tv, ti = torch.median(torch.tensor(x), dim)
        assert v.tolist() == tv.tolist() and i.tolist() == ti.tolist()
        v, i = gm.tensor(x).median(dim, keepdim=True)
        assert tuple(v.shape) == tuple(torch.median(torch.tensor(x), dim, True).values.shape)
    # lower of the two middle values, not their mean
    assert gm.median(gm.tensor([1.0, 2.0, 3.0, 4.0])).item() == 2.0
    # NaN propagates, index of the NaN
    v, i = gm.median(gm.tensor([[1.0, float("nan"), 2.0]]), 1)
    assert np.isnan(v.item()) and i.tolist() == [1]
    assert np.isnan(gm.median(gm.tensor([1.0, float("nan"), 2.0])).item())


def test_median_grad():
    check_op(lambda x: gm.median(x, 1).values, lambda x: np.sort(x, 1)[:, (x.shape[1] - 1) // 2],
             [(3, 6)], torch_fn=lambda x: torch.median(x, 1).values)
    check_op(lambda x: gm.median(x), lambda x: np.sort(x.ravel())[(x.size - 1) // 2], [(3, 5)],
             torch_fn=lambda x: torch.median(x))
