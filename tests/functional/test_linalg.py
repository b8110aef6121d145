"""einsum (all forms, gradients of any order), mm/bmm/dot/mv/outer, inverse and slogdet."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmcore as gm
from gmcore.testing import assert_close, gradgradcheck
from helpers import check_op

EINSUM_CASES = [
    ("ij,jk->ik", [(3, 5), (5, 2)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("i,i->", [(7,), (7,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij->ji", [(3, 5)]),
    ("ij->", [(3, 5)]),
    ("ij", [(3, 5)]),                      # implicit output: 'ij'
    ("ij,jk", [(3, 4), (4, 2)]),           # implicit output: 'ik'
    ("ba", [(3, 5)]),                      # implicit: sorted letters -> transpose
    ("ii->i", [(4, 4)]),                   # diagonal
    ("ii->", [(4, 4)]),                    # trace
    ("iij->j", [(3, 3, 2)]),
    ("ij,ij,ij->i", [(3, 4), (3, 4), (3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(3, 1, 2, 4), (5, 4, 2)]),   # broadcast batch dims
    ("...i->...", [(2, 3, 4)]),
    ("i...->...i", [(2, 3, 4)]),
    ("b i , b i -> b", [(3, 4), (3, 4)]),  # spaces are ignored
    ("ij,ij->ij", [(3, 1), (3, 4)]),       # size-1 broadcasting of a subscript
    (",ij->ij", [(), (2, 3)]),             # 0-d operand
]


@pytest.mark.parametrize("eq,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_matches_numpy_with_gradients(device, eq, shapes):
    np_eq = eq
    if eq == "ij,ij->ij":  # NumPy's einsum does not broadcast a named size-1 subscript
        def np_fn(a, b):
            return a * b
    else:
        def np_fn(*arrays):
            return np.einsum(np_eq, *arrays)
    check_op(lambda *ts: gm.einsum(eq, *ts), np_fn, shapes, device=device,
             torch_fn=lambda *ts: __import__("torch").einsum(eq, *ts))


def test_einsum_list_form_dtype_promotion_and_int():
    a = gm.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=gm.float32)
    b = gm.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=gm.float64)
    out = gm.einsum("ij,jk->ik", [a, b])
    assert out.dtype == gm.float64 and out.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    i = gm.tensor([[1, 2], [3, 4]])
    assert gm.einsum("ii->", i).item() == 5 and gm.einsum("ii->", i).dtype == gm.int64


def test_einsum_mixed_dtype_double_backward():
    a = gm.randn(3, 4, dtype=gm.float64, requires_grad=True)
    b = gm.randn(4, 2, dtype=gm.float32)
    assert gradgradcheck(lambda t: gm.einsum("ij,jk->ik", t, b) ** 2, (a,))


def test_einsum_third_order():
    x = gm.tensor([[1.0, 2.0], [3.0, 5.0]], dtype=gm.float64, requires_grad=True)
    # f = sum_ij (x x)_ij x_ij : a cubic, so its third derivative is a nonzero constant
    y = gm.einsum("ij,jk,ik->", x, x, x)
    g1, = gm.autograd.grad(y, x, create_graph=True)
    g2, = gm.autograd.grad(g1.sum(), x, create_graph=True)
    g3, = gm.autograd.grad(g2.sum(), x)
    eps = 1e-4
    def second(xv):
        t = gm.tensor(xv, requires_grad=True)
        a, = gm.autograd.grad(gm.einsum("ij,jk,ik->", t, t, t), t, create_graph=True)
        return gm.autograd.grad(a.sum(), t)[0].numpy()
    base = x.detach().numpy()
    num = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        d = np.zeros_like(base)
        d[idx] = eps
        num[idx] = ((second(base + d) - second(base - d)) / (2 * eps)).sum()
    assert_close(g3, num, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eq,shapes,match", [
    ("ij,jk->ik", [(2, 3)], "2 operand subscript"),
    ("ijk->i", [(2, 3)], "names 3 dimension"),
    ("ij,jk->ik", [(2, 3), (4, 5)], "subscript 'j' has size 4"),
    ("i1->i", [(2, 3)], "invalid subscript"),
    ("ij->iz", [(2, 3)], "'z' does not appear"),
    ("ij->ii", [(2, 2)], "repeats a letter"),
    ("ii->i", [(2, 3)], "different sizes"),
    ("i->i->i", [(2,)], "more than one '->'"),
    ("...i...->i", [(2,)], "invalid subscript"),
])
def test_einsum_errors(eq, shapes, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        gm.einsum(eq, *[gm.ones(*s) for s in shapes])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 4), m=st.integers(1, 4), p=st.integers(1, 4), b=st.integers(1, 3))
def test_mm_bmm_mv_dot_outer(device, n, m, p, b):
    check_op(gm.mm, lambda x, y: x @ y, [(n, m), (m, p)], device=device)
    check_op(gm.bmm, lambda x, y: x @ y, [(b, n, m), (b, m, p)], device=device)
    check_op(gm.mv, lambda x, y: x @ y, [(n, m), (m,)], device=device)
    check_op(gm.dot, lambda x, y: np.dot(x, y), [(m,), (m,)], device=device)
    check_op(gm.outer, np.outer, [(n,), (p,)], device=device)
    x = gm.ones(n, m, device=device)
    assert x.mm(gm.ones(m, p, device=device)).shape == (n, p)
    assert x.mv(gm.ones(m, device=device)).shape == (n,)


def test_product_shape_errors():
    with pytest.raises(RuntimeError, match=r"mm\(\): shapes \(2, 3\) and \(4, 5\)"):
        gm.mm(gm.ones(2, 3), gm.ones(4, 5))
    with pytest.raises(RuntimeError, match=r"mm\(\): input must be a 2-D tensor"):
        gm.mm(gm.ones(3), gm.ones(3, 2))
    with pytest.raises(RuntimeError, match="batch sizes differ"):
        gm.bmm(gm.ones(2, 3, 4), gm.ones(3, 4, 5))
    with pytest.raises(RuntimeError, match=r"bmm\(\): mat2 must be a 3-D"):
        gm.bmm(gm.ones(2, 3, 4), gm.ones(4, 5))
    with pytest.raises(RuntimeError, match="different lengths 3 and 4"):
        gm.dot(gm.ones(3), gm.ones(4))
    with pytest.raises(RuntimeError, match=r"mv\(\): shapes \(2, 3\) and \(4,\)"):
        gm.mv(gm.ones(2, 3), gm.ones(4))
    with pytest.raises(RuntimeError, match=r"outer\(\): vec2 must be a 1-D"):
        gm.outer(gm.ones(3), gm.ones(2, 2))


def _well_conditioned(a):
    """Random matrices pushed away from singularity (diagonally dominant)."""
    n = a.shape[-1]
    return a + 3.0 * np.eye(n) * np.where(np.arange(n) % 2, -1.0, 1.0)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 4, 4), (2, 1, 3, 3)])
def test_inverse(device, shape):
    check_op(gm.inverse, np.linalg.inv, [shape], device=device, domain=_well_conditioned,
             torch_fn=lambda t: __import__("torch").linalg.inv(t))
    a = _well_conditioned(np.random.default_rng(1).uniform(-1, 1, shape))
    assert_close(gm.tensor(a, device=device).inverse() @ gm.tensor(a, device=device),
                 np.broadcast_to(np.eye(shape[-1]), shape), atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 4, 4), (2, 1, 3, 3)])
def test_slogdet(device, shape):
    check_op(lambda t: gm.slogdet(t).logabsdet, lambda a: np.linalg.slogdet(a)[1], [shape],
             device=device, domain=_well_conditioned,
             torch_fn=lambda t: __import__("torch").linalg.slogdet(t)[1])
    a = _well_conditioned(np.random.default_rng(2).uniform(-1, 1, shape))
    x = gm.tensor(a, device=device, requires_grad=True)
    sign, logabs = gm.linalg_slogdet(x)
    assert_close(sign.cpu(), np.linalg.slogdet(a)[0])
    assert not sign.requires_grad and logabs.requires_grad
    logabs.sum().backward()
    assert_close(x.grad.cpu(), np.swapaxes(np.linalg.inv(a), -1, -2))  # d log|det A| = A^-T


def test_slogdet_negative_determinant_and_method():
    a = gm.tensor([[0.0, 2.0], [3.0, 0.0]], requires_grad=True)  # det = -6
    s, l = a.slogdet()
    assert s.item() == -1.0 and abs(l.item() - np.log(6.0)) < 1e-6
    l.backward()
    assert_close(a.grad, gm.tensor([[0.0, 0.5], [1 / 3, 0.0]]))


def test_inverse_and_slogdet_errors():
    with pytest.raises(RuntimeError, match=r"square matri.*\(2, 3\)"):
        gm.inverse(gm.ones(2, 3))
    with pytest.raises(RuntimeError, match="square"):
        gm.slogdet(gm.ones(3))
    with pytest.raises(RuntimeError, match="singular"):
        gm.inverse(gm.zeros(2, 2))
    with pytest.raises(RuntimeError, match="floating point"):
        gm.inverse(gm.tensor([[1, 0], [0, 1]]))
    s, l = gm.slogdet(gm.zeros(2, 2))
    assert s.item() == 0.0 and l.item() == -np.inf
