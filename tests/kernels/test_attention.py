"""attention family kernels (cpp, triton via the interpreter, reference) against a float64 NumPy
oracle on odd shapes; the op scaled_dot_product_attention on its fused path (masks, causal with
Lq != Lk, all-masked rows, large logits, empty batches), its fused and recorded backwards
(gradcheck / gradgradcheck), dispatch, and torch as a peer."""
import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional import attention as A
from gmcore.nn.functional.attention import _attention
from gmcore.testing import gradcheck, gradgradcheck

from helpers import HAVE_TORCH

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)}
IMPLS = ["cpp", "triton", "reference"]


def _impl(name):
    """(forward, backward) array implementations of ``name``, or skip."""
    if name == "reference":
        return A.attention_forward_reference, A.attention_backward_reference
    if name == "cpp":
        _C = pytest.importorskip("gmcore._C", reason="gmcore._C not built")
        if not hasattr(_C, "attention_forward_cpu"):
            pytest.skip("gmcore._C predates the attention family")
        return A._load_cpp("forward")(), A._load_cpp("backward")()
    pytest.importorskip("triton")
    from gmcore.kernels._launch import interpreting
    if not interpreting():
        pytest.skip("triton runs on NumPy arrays only in the interpreter (TRITON_INTERPRET=1)")
    mod = importlib.import_module("gmcore.kernels.triton.attention")
    return mod.attention_forward, mod.attention_backward


# ---- the float64 oracle (dense, written independently of the implementations) ----------------

def _oracle(q, k, v, mask, scale, causal, dout):
    """out, lse, dq, dk, dv in float64 from the (BH, L, S) probability matrix."""
    q, k, v, dout = (a.astype(np.float64) for a in (q, k, v, dout))
    L, S = q.shape[1], k.shape[1]
    s = np.einsum("ble,bse->bls", q, k) * scale
    if mask is not None:
        s = s + mask
    if causal:
        s = np.where(np.arange(S)[None, :] <= np.arange(L)[:, None], s, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s.max(axis=2, keepdims=True) if S else np.zeros(s.shape[:2] + (1,))
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(s - m)
        z = e.sum(axis=2, keepdims=True)
        p = np.where(z > 0, e / np.where(z > 0, z, 1), 0.0)
        lse = np.where(z[..., 0] > 0, m[..., 0] + np.log(z[..., 0]), -np.inf)
    out = p @ v
    dv = p.transpose(0, 2, 1) @ dout
    dp = dout @ v.transpose(0, 2, 1)
    ds = p * (dp - (dp * p).sum(axis=2, keepdims=True))
    return out, lse, ds @ k * scale, ds.transpose(0, 2, 1) @ q * scale, dv


def _draw_case(rng, dtype, BH, L, S, E, Ev, masked):
    q, k, v = (rng.standard_normal(s).astype(dtype) for s in ((BH, L, E), (BH, S, E), (BH, S, Ev)))
    mask = None
    if masked:  # a (L, S) additive mask shared by every head, some keys blocked, one row fully
        mask = np.where(rng.random((L, S)) < 0.3, -np.inf, rng.standard_normal((L, S)))
        mask[L // 2] = -np.inf
        mask = mask.astype(dtype)
    return q, k, v, mask


def _check_impl(name, dtype, BH, L, S, E, Ev, causal, masked, seed=0, scale=None):
    fwd, bwd = _impl(name)
    rng = np.random.default_rng(seed)
    q, k, v, mask = _draw_case(rng, dtype, BH, L, S, E, Ev, masked)
    scale = 1 / math.sqrt(E) if scale is None else scale
    view = A._mask_view(mask, (BH,), L, S)
    out, lse = fwd(q, k, v, view, scale, causal)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = bwd(q, k, v, out, dout, lse, view, scale, causal)
    want = _oracle(q, k, v, mask, scale, causal, dout)
    assert out.dtype == lse.dtype == dtype and all(g.dtype == dtype for g in grads)
    tol = TOL[dtype]
    for got, ref, what in zip((out, lse) + tuple(grads), want, ("out", "lse", "dq", "dk", "dv")):
        assert got.shape == ref.shape, what
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref), err_msg=what)
        fin = np.isfinite(ref)
        assert np.isfinite(got[fin]).all(), what
        scale_ref = max(1.0, float(np.abs(ref[fin]).max())) if fin.any() else 1.0
        np.testing.assert_allclose(got[fin], ref[fin], rtol=tol["rtol"],
                                   atol=tol["atol"] * scale_ref, err_msg=what)


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=6, deadline=None)
@given(BH=st.integers(1, 3), L=st.integers(1, 70), S=st.integers(1, 70),
       E=st.integers(0, 16).map(lambda n: 2 * n + 1), Ev=st.integers(1, 20), causal=st.booleans(),
       masked=st.booleans())
def test_kernels_match_float64_oracle(name, dtype, BH, L, S, E, Ev, causal, masked):
    if name == "triton":  # the interpreter costs ~0.5 ms a program, more in float64
        BH = 1
        if dtype == np.float64:
            L, S = min(L, 20), min(S, 24)
    _check_impl(name, dtype, BH, L, S, E, Ev, causal, masked)  # both at once too: the kernels allow it


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("shape", [(2, 65, 130, 128, 128), (1, 129, 3, 32, 7), (3, 1, 1, 1, 1)])
def test_kernels_block_edges_and_wide_heads(name, shape):
    """E up to 128, L and S past one block but not a multiple of it, Lq != Lk, causal."""
    if name == "triton":  # the interpreter is slow: one slice, fewer keys
        shape = (1, shape[1], min(shape[2], 70)) + shape[3:]
    for causal in (False, True):
        _check_impl(name, np.float32, *shape, causal=causal, masked=False, seed=1)


@pytest.mark.parametrize("name", IMPLS)
def test_kernels_empty_batch_and_lengths(name):
    fwd, bwd = _impl(name)
    for BH, L, S in ((0, 4, 5), (2, 0, 5), (2, 4, 0)):
        q, k, v = np.ones((BH, L, 3)), np.ones((BH, S, 3)), np.ones((BH, S, 2))
        out, lse = fwd(q, k, v, None, 0.5, False)
        assert out.shape == (BH, L, 2) and lse.shape == (BH, L)
        assert not out.any() and np.isneginf(lse).all()  # no keys: zero output, lse -inf
        dq, dk, dv = bwd(q, k, v, out, np.ones_like(out), lse, None, 0.5, False)
        assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
        assert not (dq.any() or dk.any() or dv.any())


# ---- the op ------------------------------------------------------------------------------------

def _sdpa(q, k, v, **kw):
    return F.scaled_dot_product_attention(q, k, v, **kw)


def test_op_runs_fused_and_matches_tensor_path():
    """The public op takes the fused path and agrees with the (L, S)-weights tensor-op path."""
    rng = np.random.default_rng(3)
    q = gm.tensor(rng.standard_normal((2, 3, 9, 5)), requires_grad=True)
    k = gm.tensor(rng.standard_normal((1, 3, 11, 5)), requires_grad=True)  # broadcast batch
    v = gm.tensor(rng.standard_normal((2, 1, 11, 4)), requires_grad=True)  # broadcast heads
    mask = gm.tensor(rng.random((9, 11)) > 0.2)
    for kw in (dict(), dict(is_causal=True), dict(attn_mask=mask), dict(scale=0.7)):
        out = _sdpa(q, k, v, **kw)
        assert out.grad_fn.name() == "ScaledDotProductAttentionBackward"
        g = gm.tensor(rng.standard_normal(tuple(out.shape)))
        got = gm.autograd.grad((out * g).sum(), [q, k, v])
        ref_out, _ = _attention(q, k, v, kw.get("attn_mask"), 0.0,
                                            kw.get("is_causal", False), kw.get("scale"), True,
                                            "sdpa")
        want = gm.autograd.grad((ref_out * g).sum(), [q, k, v])
        np.testing.assert_allclose(out.detach().numpy(), ref_out.detach().numpy(), atol=1e-12)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-11)


def test_op_falls_back_where_fusing_does_not_apply():
    rng = np.random.default_rng(4)
    q, k, v = (gm.tensor(rng.standard_normal((2, 4, 3))) for _ in range(3))
    mask = gm.tensor(rng.standard_normal((4, 4)), requires_grad=True)  # a mask that learns
    assert _sdpa(q, k, v, attn_mask=mask).grad_fn.name() != "ScaledDotProductAttentionBackward"
    out = _sdpa(q, k, v, dropout_p=0.5)  # dropout: the tensor path
    assert out.grad_fn is None or out.grad_fn.name() != "ScaledDotProductAttentionBackward"


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_and_gradgradcheck(causal):
    rng = np.random.default_rng(5)
    q = gm.tensor(rng.standard_normal((2, 3, 2)), requires_grad=True)   # Lq = 3
    k = gm.tensor(rng.standard_normal((2, 4, 2)), requires_grad=True)   # Lk = 4 != Lq
    v = gm.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    fn = lambda q, k, v: _sdpa(q, k, v, is_causal=causal)  # noqa: E731
    assert gradcheck(fn, (q, k, v))
    assert gradgradcheck(fn, (q, k, v))


def test_gradgradcheck_with_mask_and_broadcast():
    rng = np.random.default_rng(6)
    q = gm.tensor(rng.standard_normal((2, 1, 3, 2)), requires_grad=True)
    k = gm.tensor(rng.standard_normal((1, 2, 4, 2)), requires_grad=True)
    v = gm.tensor(rng.standard_normal((2, 2, 4, 1)), requires_grad=True)
    mask = gm.tensor(np.array([[0.0, -np.inf, 0.5, 0.0], [-1.0, 0.0, -np.inf, 0.2],
                               [0.0, 0.3, 0.0, -np.inf]]))
    fn = lambda q, k, v: _sdpa(q, k, v, attn_mask=mask)  # noqa: E731
    assert fn(q, k, v).grad_fn.name() == "ScaledDotProductAttentionBackward"
    assert gradcheck(fn, (q, k, v))
    assert gradgradcheck(fn, (q, k, v))


@pytest.mark.parametrize("dtype", [gm.float32, gm.float64])
def test_fully_masked_rows_give_zeros_as_torch(dtype):
    """torch's safe softmax: a row with no allowed key gives a zero output and zero gradients."""
    rng = np.random.default_rng(7)
    q, k, v = (gm.tensor(rng.standard_normal((2, 5, 3)), dtype=dtype, requires_grad=True)
               for _ in range(3))
    mask = np.ones((5, 5), dtype=bool)
    mask[1] = False
    out = _sdpa(q, k, v, attn_mask=gm.tensor(mask))
    out.sum().backward()
    assert (out.detach().numpy()[:, 1] == 0).all()
    assert np.isfinite(out.detach().numpy()).all()
    assert (q.grad.numpy()[:, 1] == 0).all() and np.isfinite(k.grad.numpy()).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_stay_finite(dtype):
    rng = np.random.default_rng(8)
    q = rng.standard_normal((1, 2, 7, 4)).astype(dtype) * 300  # scores ~ 1e5: exp overflows unshifted
    k, v = (rng.standard_normal((1, 2, 9, 4)).astype(dtype) for _ in range(2))
    tq, tk, tv = (gm.tensor(a, requires_grad=True) for a in (q, k, v))
    out = _sdpa(tq, tk, tv, is_causal=True)
    out.sum().backward()
    assert all(np.isfinite(t.grad.numpy()).all() for t in (tq, tk, tv))
    ref = _oracle(q.reshape(2, 7, 4), k.reshape(2, 9, 4), v.reshape(2, 9, 4), None, 0.5, True,
                  np.ones((2, 7, 4)))
    np.testing.assert_allclose(out.detach().numpy().reshape(2, 7, 4), ref[0],
                               **{np.float32: dict(rtol=1e-4, atol=1e-4),
                                  np.float64: dict(rtol=1e-9, atol=1e-9)}[dtype])


def test_empty_batch_through_the_op():
    q = gm.zeros(0, 2, 5, 3, requires_grad=True)
    k = gm.zeros(0, 2, 6, 3, requires_grad=True)
    v = gm.zeros(0, 2, 6, 4, requires_grad=True)
    out = _sdpa(q, k, v, is_causal=True)
    assert tuple(out.shape) == (0, 2, 5, 4)
    out.sum().backward()
    assert tuple(q.grad.shape) == (0, 2, 5, 3) and tuple(v.grad.shape) == (0, 2, 6, 4)


@pytest.mark.parametrize("impl", ["cpp", "reference"])
def test_dispatch_override_selects_the_implementation(impl, monkeypatch):
    if impl == "cpp":
        _impl("cpp")
    monkeypatch.setenv("GMCORE_KERNELS", f"attention={impl}")
    dispatch.reset()
    try:
        assert dispatch.choose("attention", "forward", "cpu")[0] == impl
        rng = np.random.default_rng(9)
        q, k, v = (gm.tensor(rng.standard_normal((2, 6, 3)), dtype=gm.float32) for _ in range(3))
        ref = _oracle(q.numpy(), k.numpy(), v.numpy(), None, 1 / math.sqrt(3), True,
                      np.zeros((2, 6, 3)))[0]
        np.testing.assert_allclose(_sdpa(q, k, v, is_causal=True).numpy(), ref, rtol=1e-5,
                                   atol=1e-6)
    finally:
        monkeypatch.delenv("GMCORE_KERNELS")
        dispatch.reset()


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
@pytest.mark.parametrize("case", ["plain", "causal-lq<lk", "causal-lq>lk", "bool-mask", "float-mask"])
def test_torch_peer(case):
    import torch

    rng = np.random.default_rng(10)
    L, S = {"causal-lq<lk": (5, 9), "causal-lq>lk": (9, 5)}.get(case, (7, 7))
    arrays = [rng.standard_normal(s) for s in ((2, 3, L, 6), (2, 3, S, 6), (2, 3, S, 5))]
    kw_gm, kw_t = {}, {}
    if case.startswith("causal"):
        kw_gm = kw_t = {"is_causal": True}
    elif case == "bool-mask":
        m = rng.random((L, S)) > 0.3
        m[2] = False  # an all-masked row: torch gives zeros
        kw_gm, kw_t = {"attn_mask": gm.tensor(m)}, {"attn_mask": torch.tensor(m)}
    elif case == "float-mask":
        m = rng.standard_normal((3, L, S))
        kw_gm, kw_t = {"attn_mask": gm.tensor(m)}, {"attn_mask": torch.tensor(m)}
    g_in = [gm.tensor(a, requires_grad=True) for a in arrays]
    t_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = _sdpa(*g_in, **kw_gm)
    tout = torch.nn.functional.scaled_dot_product_attention(*t_in, **kw_t)
    w = rng.standard_normal(tuple(out.shape))
    (out * gm.tensor(w)).sum().backward()
    (tout * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), atol=1e-12)
    for a, b in zip(g_in, t_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-11)
