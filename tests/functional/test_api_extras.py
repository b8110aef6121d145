"""isclose/allclose, inference_mode, set_num_threads, in-place activations and scatter_."""
import sys

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from helpers import HAVE_TORCH

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


@needs_torch
def test_isclose_allclose_match_torch():
    a = np.array([1.0, 2.0, np.inf, -np.inf, np.nan, 1e-9, 100.0])
    b = np.array([1.0 + 1e-6, 2.1, np.inf, np.inf, np.nan, 0.0, 100.0005])
    for equal_nan in (False, True):
        got = gm.isclose(gm.tensor(a), gm.tensor(b), equal_nan=equal_nan)
        want = torch.isclose(torch.tensor(a), torch.tensor(b), equal_nan=equal_nan)
        assert got.dtype == gm.bool and got.tolist() == want.tolist()
    assert gm.tensor([1.0]).allclose(gm.tensor([1.0 + 1e-9])) is True
    assert gm.allclose(gm.tensor([np.nan]), gm.tensor([np.nan])) is False
    assert gm.allclose(gm.tensor([np.nan]), gm.tensor([np.nan]), equal_nan=True) is True
    assert gm.isclose(gm.tensor([[1.0], [2.0]]), gm.tensor([1.0, 2.0])).shape == (2, 2)
    assert gm.isclose(gm.tensor([3]), gm.tensor([4]), atol=1).tolist() == [True]
    with pytest.raises(RuntimeError, match="same dtype"):
        gm.isclose(gm.tensor([1.0]), gm.tensor([1]))
    with pytest.raises(RuntimeError, match="do not broadcast"):
        gm.isclose(gm.ones(2), gm.ones(3))


def test_inference_mode():
    x = gm.ones(2, requires_grad=True)
    with gm.inference_mode():
        assert gm.is_inference_mode_enabled() and not gm.is_grad_enabled()
        y = x * 2
    assert not y.requires_grad and gm.is_grad_enabled() and not gm.is_inference_mode_enabled()
    with gm.inference_mode(False):  # a no-op, as PyTorch
        assert (x * 2).requires_grad and not gm.is_inference_mode_enabled()
    with gm.no_grad(), gm.inference_mode(False):
        assert not gm.is_grad_enabled()  # mode=False does not re-enable grad

    @gm.inference_mode()
    def f(t):
        return t * 3
    assert not f(x).requires_grad and gm.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):  # the previous mode comes back on errors
        with gm.inference_mode():
            raise ZeroDivisionError
    assert gm.is_grad_enabled() and not gm.is_inference_mode_enabled()


def test_set_num_threads():
    try:  # with numba loaded, its OpenMP layer shares _C's libgomp (the order of the calls matters)
        import numba  # noqa: F401
    except ImportError:
        pass
    before = gm.get_num_threads()
    try:
        gm.set_num_threads(1)
        assert gm.get_num_threads() == 1
        c = sys.modules.get("gmcore._C")
        if c is not None and hasattr(c, "omp_get_num_threads"):
            assert c.omp_get_num_threads() == 1
        if "numba" in sys.modules:
            assert sys.modules["numba"].get_num_threads() == 1
    finally:
        gm.set_num_threads(before)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            gm.set_num_threads(bad)


@needs_torch
@pytest.mark.parametrize("name", ["relu_", "sigmoid_", "tanh_", "leaky_relu_"])
def test_inplace_activation_values_and_grad(name):
    x = np.random.default_rng(0).normal(size=(3, 4))
    gmod, tmod = (F, torch.nn.functional) if name == "leaky_relu_" else (gm, torch)
    g = gm.tensor(x)
    out = getattr(gmod, name)(g)
    assert out is g
    assert np.allclose(g.numpy(), getattr(tmod, name)(torch.tensor(x)).numpy(), atol=1e-15)
    # on a graph tensor: recorded, gradient as the out-of-place op (and torch)
    w = np.random.default_rng(1).normal(size=(3, 4))
    a = gm.tensor(x, requires_grad=True)
    h = a * 1.5
    getattr(gmod, name)(h)
    (h * gm.tensor(w)).sum().backward()
    ta = torch.tensor(x, requires_grad=True)
    th = ta * 1.5
    getattr(tmod, name)(th)
    (th * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_inplace_autograd_rules():
    leaf = gm.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        leaf.relu_()
    with gm.no_grad():
        leaf.tanh_()  # allowed outside recording, as PyTorch
    a = gm.tensor([0.5, -1.0], requires_grad=True)
    h = a * 2
    s = h.sigmoid()  # saves its output; h is an input of mul below
    p = h * h        # saves h
    h.relu_()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        p.sum().backward()
    assert s.requires_grad


@needs_torch
def test_scatter_inplace():
    x = gm.zeros(2, 4)
    idx = gm.tensor([[1, 3], [0, 0]])
    assert x.scatter_(1, idx, gm.tensor([[1.0, 2.0], [3.0, 4.0]])) is x
    t = torch.zeros(2, 4).scatter_(1, torch.tensor([[1, 3], [0, 2]]),
                                   torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert x[0].tolist() == t[0].tolist()
    y = gm.zeros(5).scatter_add_(0, gm.tensor([1, 1, 4, 1]), gm.tensor([1.0, 2.0, 3.0, 4.0]))
    assert y.tolist() == [0.0, 7.0, 0.0, 0.0, 3.0]  # duplicates accumulate
    z = gm.ones(3).scatter_(0, gm.tensor([2, 2]), 2.5, reduce="add")
    assert z.tolist() == [1.0, 1.0, 6.0]
    assert gm.zeros(3).scatter_(0, gm.tensor([1]), value=7.0).tolist() == [0.0, 7.0, 0.0]
    # gradients through the in-place forms, as torch
    base = np.random.default_rng(0).normal(size=(3, 4))
    src = np.random.default_rng(1).normal(size=(3, 2))
    index = np.array([[0, 2], [1, 1], [3, 0]])
    grads = []
    for lib, op in ((gm, "scatter_add_"), (torch, "scatter_add_"), (gm, "scatter_"),
                    (torch, "scatter_")):
        if op == "scatter_":
            index = np.array([[0, 2], [1, 3], [3, 0]])  # no duplicates: defined result
        b = lib.tensor(base, requires_grad=True)
        s = lib.tensor(src, requires_grad=True)
        h = b * 1.0
        getattr(h, op)(1, lib.tensor(index), s)
        (h * lib.tensor(base)).sum().backward()
        grads.append((np.asarray(b.grad.tolist()), np.asarray(s.grad.tolist())))
    for (gb, gs), (tb, ts) in (grads[:2], grads[2:]):
        np.testing.assert_allclose(gb, tb)
        np.testing.assert_allclose(gs, ts)
    with pytest.raises(RuntimeError, match="reduce='multiply'"):
        gm.zeros(2).scatter_(0, gm.tensor([0]), 1.0, reduce="multiply")
