"""embedding backward kernels (cpp, reference) against an np.add.at oracle; the op's fused and
recorded backwards (gradcheck / gradgradcheck), padding_idx, repeats, empty input, torch peer."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
from gmcore import dispatch
from gmcore.functional._embedding import embedding_backward_reference
from gmcore.testing import gradcheck, gradgradcheck

from helpers import HAVE_TORCH


def _impl(name):
    if name == "reference":
        return embedding_backward_reference
    _C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")
    if not hasattr(_C, "embedding_backward_cpu"):
        pytest.skip("gmcore._C predates the embedding family")
    return _C.embedding_backward_cpu


def _oracle(idx, g, num, pad):
    gw = np.zeros((num, g.shape[1]))
    np.add.at(gw, idx, g.astype(np.float64))
    if pad >= 0:
        gw[pad] = 0
    return gw


@pytest.mark.parametrize("name", ["cpp", "reference"])
@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 300), D=st.integers(1, 41), num=st.integers(1, 50),
       pad=st.integers(-1, 49), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_backward_matches_oracle(name, n, D, num, pad, dtype, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num, n)  # many repeats when n > num
    g = rng.standard_normal((n, D)).astype(dtype)
    pad = pad if pad < num else -1
    gw = _impl(name)(idx, g, num, pad)
    assert gw.dtype == dtype and gw.shape == (num, D)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, _oracle(idx, g, num, pad), **tol)
    if pad >= 0:
        assert (gw[pad] == 0).all()


def test_cpp_large_parallel_and_deterministic():
    f = _impl("cpp")
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 1000, 20000)
    g = rng.standard_normal((20000, 64)).astype(np.float32)
    a, b = f(idx, g, 1000, 3), f(idx, g, 1000, 3)
    assert np.array_equal(a, b)  # summation order is fixed (stable sort), run to run
    np.testing.assert_allclose(a, _oracle(idx, g, 1000, 3), rtol=1e-4, atol=1e-4)


def test_cpp_rejects_bad_arguments():
    f = _impl("cpp")
    with pytest.raises(IndexError, match="out of range"):
        f(np.array([0, 5]), np.zeros((2, 3)), 5, -1)
    with pytest.raises(ValueError, match="int64"):
        f(np.array([0, 1], dtype=np.int32), np.zeros((2, 3)), 5, -1)
    with pytest.raises(ValueError, match="one entry per gradient row"):
        f(np.array([0, 1, 2]), np.zeros((2, 3)), 5, -1)


@pytest.fixture(params=["default", "reference"])
def kernels(request, kernels_env):
    kernels_env(None if request.param == "default" else "embedding=reference")
    return request.param


@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_op_gradient(kernels, padding_idx):
    rng = np.random.default_rng(1)
    w64 = rng.standard_normal((6, 5))
    idx = gm.tensor(np.array([[2, 0, 2], [5, 2, 1]]))
    for dtype in (gm.float64, gm.float32):
        w = gm.tensor(w64, dtype=dtype, requires_grad=True)
        out = gm.embedding(idx, w, padding_idx=padding_idx)
        g = rng.standard_normal(tuple(out.shape))
        (out * gm.tensor(g, dtype=dtype)).sum().backward()
        pad = -1 if padding_idx is None else padding_idx % 6
        ref = _oracle(idx.detach().numpy().ravel(), g.reshape(-1, 5), 6, pad)
        assert w.grad.dtype == dtype
        np.testing.assert_allclose(w.grad.detach().numpy(), ref, rtol=1e-6, atol=1e-6)
    w = gm.tensor(w64, requires_grad=True)
    if padding_idx is None:  # (the padding row's zero gradient is by definition, not the derivative)
        assert gradcheck(lambda a: gm.embedding(idx, a), (w,))
    assert gradgradcheck(lambda a: gm.embedding(idx, a, padding_idx=padding_idx) ** 2, (w,))


def test_op_empty_input_and_no_weight_grad():
    w = gm.tensor(np.ones((4, 3)), requires_grad=True)
    gm.embedding(gm.tensor(np.zeros((0, 2), dtype=np.int64)), w).sum().backward()
    assert (w.grad.detach().numpy() == 0).all() and w.grad.shape == (4, 3)
    out = gm.embedding(gm.tensor([1, 2]), gm.tensor(np.ones((4, 3))))
    assert not out.requires_grad


def test_dispatch_registration(kernels_env):
    assert dispatch.implementations("embedding", "cpu") == ["cpp", "reference"]
    kernels_env("embedding=reference")
    assert dispatch.choose("embedding", "backward", "cpu")[0] == "reference"


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_matches_torch_with_padding():
    import torch
    rng = np.random.default_rng(2)
    w64 = rng.standard_normal((50, 8)).astype(np.float32)
    idx = rng.integers(0, 50, (7, 13))
    g = rng.standard_normal((7, 13, 8)).astype(np.float32)
    w = gm.tensor(w64, requires_grad=True)
    (gm.embedding(gm.tensor(idx), w, padding_idx=4) * gm.tensor(g)).sum().backward()
    wt = torch.tensor(w64, requires_grad=True)
    (torch.nn.functional.embedding(torch.tensor(idx), wt, padding_idx=4) * torch.tensor(g)).sum() \
        .backward()
    np.testing.assert_allclose(w.grad.detach().numpy(), wt.grad.detach().numpy(), rtol=1e-6, atol=1e-6)
