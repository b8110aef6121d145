"""vq kernels (reference, numba, cpp, triton interpreter) against exact float64 math; the ops.

Index checks are robust to rounding: every chosen code must be within a rounding tolerance of
the exact minimum distance, and the index must equal the exact argmin wherever the best and
second-best exact distances differ by more than that tolerance. Exact ties (duplicate codes)
must go to the lowest index in every implementation.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import dispatch
from gmcore.functional.vq import vq_ema_stats_reference, vq_nearest_reference
from gmcore.testing import gradcheck, gradgradcheck


def _impls():
    impls = {"reference": (vq_nearest_reference, vq_ema_stats_reference)}
    try:
        from gmcore.kernels.numba import vq as nb
        impls["numba"] = (nb.vq_nearest, nb.vq_ema_stats)
    except ImportError:
        pass
    try:
        from gmcore import _C
        impls["cpp"] = (_C.vq_nearest_cpu, _C.vq_ema_stats_cpu)
    except (ImportError, AttributeError):
        pass
    try:
        import os
        if os.environ.get("TRITON_INTERPRET") == "1":
            from gmcore.kernels.triton import vq as tr
            impls["triton"] = (tr.vq_nearest, tr.vq_ema_stats)
    except ImportError:
        pass
    return impls


IMPLS = _impls()
NAMES = list(IMPLS)
# implementations whose products go through BLAS (the reference's matmul; tl.dot in Triton's
# interpreter is NumPy's matmul): equal codes need not get bit-equal scores there.
BLAS_BACKED = ("reference", "triton")
EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}


def _exact(z, c):
    z64, c64 = z.astype(np.float64), c.astype(np.float64)
    return ((z64[:, None, :] - c64[None, :, :]) ** 2).sum(-1)


def check_indices(idx, z, c, dtype):
    """Chosen distance == min within rounding; index == exact argmin where the gap is clear."""
    n, k = z.shape[0], c.shape[0]
    assert idx.dtype == np.int64 and idx.shape == (n,)
    if n == 0:
        return
    assert idx.min() >= 0 and idx.max() < k
    d = _exact(z, c)
    # score rounding ~ eps * (||z||^2 + ||c||^2) per sum of D terms: a generous multiple of that
    scale = (z.astype(np.float64) ** 2).sum(1) + (c.astype(np.float64) ** 2).sum(1).max()
    tol = 64 * EPS[dtype] * (z.shape[1] + 4) * (scale + 1e-300)
    chosen = d[np.arange(n), idx]
    best = d.min(1)
    assert np.all(chosen - best <= tol), np.max(chosen - best - tol)
    if k > 1:
        part = np.partition(d, 1, axis=1)
        clear = part[:, 1] - part[:, 0] > tol
        np.testing.assert_array_equal(idx[clear], d.argmin(1)[clear])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 41), k=st.integers(1, 70), d=st.integers(1, 37),
       dtype=st.sampled_from([np.float32, np.float64]), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       shift=st.sampled_from([0.0, 100.0]), seed=st.integers(0, 2**31 - 1))
def test_nearest_matches_exact(name, n, k, d, dtype, scale, shift, seed):
    rng = np.random.default_rng(seed)
    c = (rng.standard_normal((k, d)) * scale + shift).astype(dtype)
    z = (rng.standard_normal((n, d)) * scale + shift).astype(dtype)
    if n and k > 2:  # some rows sit exactly on a code or halfway between two
        z[0] = c[k // 2]
        if n > 1:
            z[1] = ((c[0].astype(np.float64) + c[1]) / 2).astype(dtype)
    check_indices(IMPLS[name][0](z, c), z, c, dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_ties_and_special_values(name, dtype):
    nearest = IMPLS[name][0]
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5, 7)).astype(dtype)
    c = np.concatenate([base[[3]], base, base, base[[3]]])  # base[j] is code j+1 and j+6; base[3] also 0, 10
    z = np.concatenate([base, base + 0.01, rng.standard_normal((60, 7)).astype(dtype)]).astype(dtype)
    idx = nearest(z, c)
    check_indices(idx, z, c, dtype)
    if name in BLAS_BACKED:  # BLAS may round identical columns differently (edge tiles)
        np.testing.assert_array_equal(c[idx[:5]], base)
    else:  # own arithmetic: duplicates get bit-identical scores, the lowest index wins
        np.testing.assert_array_equal(idx[:5], [1, 2, 3, 0, 5])
    # NaN in a row: no nearest code -> -1; NaN in a code: that code never wins
    zn = z[:4].copy()
    zn[1, 2] = np.nan
    cn = c.copy()
    cn[1, 0] = np.nan  # code 1 (base[0]) is out: row 0 falls to its duplicate, code 6
    got = nearest(zn, cn)
    assert got[1] == -1 and got[0] in (6, 1 + 5) and c[got[2]].tolist() == base[2].tolist()
    if name not in BLAS_BACKED:
        np.testing.assert_array_equal(got, [6, -1, 3, 0])
    # single code: everything maps to 0
    np.testing.assert_array_equal(nearest(z, c[:1]), np.zeros(len(z), np.int64))


def _nonfinite_case(dtype, seed=20):
    """Rows and codes with NaN / +-inf around the kernels' row blocks and code tiles.

    Returns z (45, 6), c (70, 6) and the expected indices: -1 for the rows with a NaN or inf,
    the exact nearest among the finite codes for the others (chosen so the gaps are clear).
    """
    rng = np.random.default_rng(seed)
    c = (rng.standard_normal((70, 6)) * 3).astype(dtype)
    z = (c[rng.integers(0, 70, 45)] + 0.05 * rng.standard_normal((45, 6))).astype(dtype)
    z[0], z[1], z[2] = c[5], c[33], c[66]  # rows sitting on codes that are about to turn bad
    c[5, 2] = np.nan
    c[33, 0] = np.inf
    c[66] = -np.inf
    z[3] = c[40]
    c[40, 1] = np.finfo(dtype).max / 4     # finite, but its squared norm overflows: never chosen
    bad_rows = [7, 8, 11, 12, 13, 44]
    z[7, 3] = np.nan
    z[8] = np.nan
    z[11, 0] = np.inf
    z[12, 5] = -np.inf
    z[13, :2] = np.inf, np.nan
    z[44, 1] = np.inf  # in the last, short row block
    finite_codes = np.flatnonzero(np.isfinite(c).all(1) & (np.abs(c).max(1) < 1e15))
    expected = np.full(len(z), -1)
    ok = np.setdiff1d(np.arange(len(z)), bad_rows)
    expected[ok] = finite_codes[_exact(z[ok], c[finite_codes]).argmin(1)]
    return z, c, expected


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf - inf in the scores of the bad rows/codes
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_nonfinite_rows_and_codes(name, dtype):
    """Issue 11 item 10: a row with NaN or +-inf gets -1 (before: 0 or some code), the same in
    every implementation; codes with NaN / inf (or an overflowing norm) are never chosen."""
    nearest = IMPLS[name][0]
    z, c, expected = _nonfinite_case(dtype)
    np.testing.assert_array_equal(nearest(z, c), expected)
    # no finite code at all: every row is -1
    np.testing.assert_array_equal(nearest(z, np.full((3, 6), np.nan, dtype)), np.full(len(z), -1))
    np.testing.assert_array_equal(nearest(z[:5], c[[33, 66]]), np.full(5, -1))
    # one finite code among bad ones: every finite row takes it
    got = nearest(z, c[[5, 33, 9, 66]])
    np.testing.assert_array_equal(got, np.where(expected < 0, -1, 2))


@pytest.mark.parametrize("name", NAMES)
def test_nearest_block_edges(name):
    # row counts around the kernels' row blocks and code counts around their tiles
    rng = np.random.default_rng(1)
    for n, k, d in [(67, 33, 5), (129, 65, 64), (8, 31, 17), (1, 97, 3)]:
        z = rng.standard_normal((n, d)).astype(np.float32)
        c = rng.standard_normal((k, d)).astype(np.float32)
        check_indices(IMPLS[name][0](z, c), z, c, np.float32)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ema_stats_matches_float64(name, dtype):
    rng = np.random.default_rng(2)
    for n, k, d in [(0, 5, 3), (1, 1, 1), (203, 17, 37), (64, 300, 16)]:
        z = rng.standard_normal((n, d)).astype(dtype)
        idx = rng.integers(0, k, n).astype(np.int64)
        idx[: min(n, 5)] = k - 1  # a crowded code
        counts, sums = IMPLS[name][1](z, idx, k)
        assert counts.dtype == dtype and sums.dtype == dtype and counts.shape == (k,) and sums.shape == (k, d)
        np.testing.assert_array_equal(counts, np.bincount(idx, minlength=k))
        ref = np.zeros((k, d))
        np.add.at(ref, idx, z.astype(np.float64))
        np.testing.assert_allclose(sums, ref, rtol=0, atol=(1e-4 if dtype == np.float32 else 1e-12))


def test_cpp_rejects_bad_arrays():
    _C = pytest.importorskip("gmcore._C")
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="D=3"):
        _C.vq_nearest_cpu(z, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        _C.vq_nearest_cpu(z, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        _C.vq_nearest_cpu(z, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="outside"):
        _C.vq_ema_stats_cpu(z, np.array([0, 1, 2, 5]), 3)
    with pytest.raises(ValueError, match="int64"):
        _C.vq_ema_stats_cpu(z, np.array([0, 1, 2, 1], np.int32), 3)


# ---- dispatch ------------------------------------------------------------------------------


CPU_NAMES = [n for n in ("cpp", "numba", "reference") if n in IMPLS]


@pytest.mark.parametrize("value, name", [("reference", "reference"), ("vq=reference", "reference")]
                         + [(f"vq={n}", n) for n in CPU_NAMES])
def test_dispatch_override(kernels_env, value, name):
    kernels_env(value)
    assert dispatch.choose("vq", "nearest", "cpu")[0] == name
    assert dispatch.choose("vq", "ema_stats", "cpu")[0] == name


def test_dispatch_default_is_fastest_available(kernels_env):
    kernels_env(None)
    assert dispatch.choose("vq", "nearest", "cpu")[0] == CPU_NAMES[0]


# ---- the ops -----------------------------------------------------------------------------------

def _separated(n=23, k=9, d=5, seed=3, dtype=np.float64):
    """Rows near distinct codes, so small perturbations never change the argmin."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((k, d)) * 3
    z = c[rng.integers(0, k, n)] + 0.05 * rng.standard_normal((n, d))
    return z.astype(dtype), c.astype(dtype)


@pytest.mark.parametrize("impl", CPU_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_op_forward_backward(kernels_env, impl, dtype):
    kernels_env(f"vq={impl}")
    z, c = _separated(dtype=dtype)
    cb = gm.tensor(c, requires_grad=True)
    zt = gm.tensor(z, requires_grad=True)
    idx, q = F.vq_nearest(zt, cb)
    assert idx.dtype == gm.int64 and not idx.requires_grad and q.requires_grad and q.dtype == cb.dtype
    np.testing.assert_array_equal(idx.numpy(), _exact(z, c).argmin(1))
    np.testing.assert_array_equal(q.detach().numpy(), c[idx.numpy()])
    w = np.random.default_rng(4).standard_normal(q.shape).astype(dtype)
    (q * gm.tensor(w)).sum().backward()
    expected = np.zeros(c.shape)
    np.add.at(expected, idx.numpy(), w.astype(np.float64))
    np.testing.assert_allclose(cb.grad.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert zt.grad is None  # indices are not differentiable: z gets nothing through the gather


def test_reference_gradcheck_and_double_backward(kernels_env):
    kernels_env("vq=reference")
    z, c = _separated()
    zt = gm.tensor(z)
    cb = gm.tensor(c, requires_grad=True)
    f = lambda cb_: (F.vq_nearest(zt, cb_)[1] ** 3).sum(1)  # noqa: E731
    assert gradcheck(f, (cb,))
    assert gradgradcheck(f, (cb,))


@pytest.mark.parametrize("impl", [n for n in CPU_NAMES if n != "reference"])
def test_fused_is_once_differentiable(kernels_env, impl):
    kernels_env(f"vq={impl}")
    z, c = _separated()
    cb = gm.tensor(c, requires_grad=True)
    q = F.vq_nearest(gm.tensor(z), cb)[1]
    (g,) = gm.autograd.grad((q ** 3).sum(), [cb], create_graph=True)
    with pytest.raises(RuntimeError, match="VQNearest.*once-differentiable"):
        g.sum().backward()


def test_op_float16_and_empty(kernels_env):
    kernels_env(None)
    z, c = _separated(dtype=np.float32)
    idx, q = F.vq_nearest(gm.tensor(z[:0]), gm.tensor(c))
    assert idx.shape == (0,) and q.shape == (0, c.shape[1])
    idx16, q16 = F.vq_nearest(gm.tensor(z).half(), gm.tensor(c).half())  # reference path
    assert q16.dtype == gm.float16
    np.testing.assert_array_equal(idx16.numpy(), _exact(z, c).argmin(1))


def test_op_errors():
    z = gm.zeros(4, 3)
    with pytest.raises(ValueError, match="D=3"):
        F.vq_nearest(z, gm.zeros(5, 2))
    with pytest.raises(TypeError, match="same dtype"):
        F.vq_nearest(z, gm.zeros(5, 3, dtype=gm.float64))
    with pytest.raises(ValueError, match="2-D"):
        F.vq_nearest(gm.zeros(2, 4, 3), gm.zeros(5, 3))
    with pytest.raises(ValueError, match="empty"):
        F.vq_nearest(z, gm.zeros(0, 3))
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        F.vq_ema_stats(z, gm.tensor([0, 1, 3, 0]), 3)
    with pytest.raises(ValueError, match="one entry per row"):
        F.vq_ema_stats(z, gm.tensor([0, 1]), 3)
    with pytest.raises(TypeError, match="integer"):
        F.vq_ema_stats(z, gm.zeros(4), 3)


@pytest.mark.parametrize("impl", CPU_NAMES)
def test_op_ema_stats(kernels_env, impl):
    kernels_env(f"vq={impl}")
    rng = np.random.default_rng(5)
    z = rng.standard_normal((50, 6))
    idx = rng.integers(0, 7, 50)
    counts, sums = F.vq_ema_stats(gm.tensor(z, requires_grad=True), gm.tensor(idx.astype(np.int32)), 7)
    assert not counts.requires_grad and not sums.requires_grad
    np.testing.assert_array_equal(counts.numpy(), np.bincount(idx, minlength=7))
    ref = np.zeros((7, 6))
    np.add.at(ref, idx, z)
    np.testing.assert_allclose(sums.numpy(), ref, atol=1e-12)


def test_op_on_device(device):
    z, c = _separated(n=300, k=70, d=16, dtype=np.float32)
    cb = gm.tensor(c, device=device, requires_grad=True)
    idx, q = F.vq_nearest(gm.tensor(z, device=device), cb)
    np.testing.assert_array_equal(idx.cpu().numpy(), _exact(z, c).argmin(1))
    q.sum().backward()
    np.testing.assert_allclose(cb.grad.cpu().numpy()[:, 0].astype(np.float64), np.bincount(idx.cpu().numpy(), minlength=70))
    counts, sums = F.vq_ema_stats(gm.tensor(z, device=device), idx, 70)
    np.testing.assert_allclose(sums.cpu().numpy(), vq_ema_stats_reference(z, idx.cpu().numpy(), 70)[1],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not gm.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("impl", ["triton", "cuda", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_impls_match_exact(kernels_env, impl, dtype):
    kernels_env(f"vq={impl}")
    nearest = dispatch.get("vq", "nearest", "cuda")
    stats = dispatch.get("vq", "ema_stats", "cuda")
    import cupy as cp
    rng = np.random.default_rng(6)
    for n, k, d in [(1000, 300, 64), (67, 33, 5), (5, 1, 130)]:
        z = rng.standard_normal((n, d)).astype(dtype)
        c = rng.standard_normal((k, d)).astype(dtype)
        idx = cp.asnumpy(nearest(cp.asarray(z), cp.asarray(c)))
        check_indices(idx, z, c, dtype)
        counts, sums = stats(cp.asarray(z), cp.asarray(idx), k)
        np.testing.assert_array_equal(cp.asnumpy(counts), np.bincount(idx, minlength=k))
        rc, rs = vq_ema_stats_reference(z.astype(np.float64), idx, k)
        np.testing.assert_allclose(cp.asnumpy(sums), rs, atol=1e-3 if dtype == np.float32 else 1e-10)


@pytest.mark.cuda
@pytest.mark.skipif(not gm.cuda.is_available(), reason="no CUDA device")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("impl", ["triton", "cuda", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_impls_nonfinite(kernels_env, impl, dtype):
    kernels_env(f"vq={impl}")
    nearest = dispatch.get("vq", "nearest", "cuda")
    import cupy as cp
    z, c, expected = _nonfinite_case(dtype)
    np.testing.assert_array_equal(cp.asnumpy(nearest(cp.asarray(z), cp.asarray(c))), expected)
    nan_book = cp.full((3, 6), np.nan, dtype)
    np.testing.assert_array_equal(cp.asnumpy(nearest(cp.asarray(z), nan_book)), np.full(len(z), -1))
    with pytest.raises(ValueError, match="6 of 45 rows of z contain NaN or inf"):
        F.vq_nearest(gm.tensor(z, device="cuda"), gm.tensor(c, device="cuda"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("impl", CPU_NAMES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_op_refuses_nonfinite_rows(kernels_env, impl, dtype):
    """The public op raises for rows with NaN / inf (the kernels' -1 would gather codebook[-1])."""
    kernels_env(f"vq={impl}")
    z, c, expected = _nonfinite_case(np.float64 if dtype == np.float16 else dtype)
    z, c = z.astype(dtype), c.astype(dtype)
    c[40] = 0.5  # float16: max/4 stays finite; the overflow case is covered above
    with pytest.raises(ValueError, match=r"vq_nearest: 6 of 45 rows of z contain NaN or inf \(the first is row 7\)"):
        F.vq_nearest(gm.tensor(z), gm.tensor(c, requires_grad=True))
    ok = np.isfinite(z).all(1)
    cb = gm.tensor(c, requires_grad=True)
    idx, q = F.vq_nearest(gm.tensor(z[ok]), cb)  # the bad codes are simply never chosen
    assert idx.numpy().min() >= 0 and not np.isin(idx.numpy(), [5, 33, 66]).any()
    np.testing.assert_array_equal(q.detach().numpy(), c[idx.numpy()])
    q.sum().backward()
    assert np.isfinite(cb.grad.numpy()).all()
    with pytest.raises(ValueError, match=r"45 of 45 rows of z have no code at a finite distance \(3 of 3"):
        F.vq_nearest(gm.tensor(np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)),
                     gm.tensor(np.full((3, 6), np.inf, dtype)))


def test_torch_peer_agrees():
    torch = pytest.importorskip("torch")
    z, c = _separated(n=200, k=40, d=8, dtype=np.float32)
    expected = torch.cdist(torch.from_numpy(z), torch.from_numpy(c)).argmin(1).numpy()
    np.testing.assert_array_equal(F.vq_nearest(gm.tensor(z), gm.tensor(c))[0].numpy(), expected)
