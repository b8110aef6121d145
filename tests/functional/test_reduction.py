"""Reductions against NumPy: values, dtypes, dims (lists, negative, empty), edge cases, and
gradients of first and second order (check_op)."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmcore as gm
from gmcore.testing import assert_close, gradgradcheck
from helpers import check_op, shapes

fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def shape_and_dims(draw, min_side=1, max_side=4):
    """A shape, a reduction dim spec (None, an int, or a tuple, maybe negative, maybe empty)
    and the equivalent NumPy axis."""
    shape = draw(shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=max_side))
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return shape, None, None
    if kind == "int":
        d = draw(st.integers(-nd, nd - 1))
        return shape, d, d % nd
    picked = draw(st.lists(st.integers(0, nd - 1), unique=True, max_size=nd))
    spec = tuple(d - nd if draw(st.booleans()) else d for d in picked)
    return shape, spec, (tuple(sorted(picked)) if picked else None)  # () means all, as torch


def _np_var(a, axis, ddof, keepdims):
    return np.var(a, axis=axis, ddof=ddof, keepdims=keepdims)


REDUCTIONS = {
    "sum": (lambda x, d, k: x.sum(d, k), lambda a, ax, k: a.sum(axis=ax, keepdims=k)),
    "mean": (lambda x, d, k: x.mean(d, k), lambda a, ax, k: a.mean(axis=ax, keepdims=k)),
    "prod": (lambda x, d, k: x.prod(d, k), lambda a, ax, k: a.prod(axis=ax, keepdims=k)),
    "amax": (lambda x, d, k: x.amax(d, k), lambda a, ax, k: a.max(axis=ax, keepdims=k)),
    "amin": (lambda x, d, k: gm.amin(x, d, k), lambda a, ax, k: a.min(axis=ax, keepdims=k)),
    "var0": (lambda x, d, k: x.var(d, keepdim=k, correction=0),
             lambda a, ax, k: _np_var(a, ax, 0, k)),
    "std0": (lambda x, d, k: x.std(d, unbiased=False, keepdim=k),
             lambda a, ax, k: np.sqrt(_np_var(a, ax, 0, k))),
    "norm2": (lambda x, d, k: x.norm(2, d, k),
              lambda a, ax, k: np.sqrt((a * a).sum(axis=ax, keepdims=k))),
    "norm3": (lambda x, d, k: gm.norm(x, 3, d, k),
              lambda a, ax, k: (np.abs(a) ** 3).sum(axis=ax, keepdims=k) ** (1 / 3)),
    "norm1": (lambda x, d, k: gm.norm(x, 1, d, k),
              lambda a, ax, k: np.abs(a).sum(axis=ax, keepdims=k)),
    "norminf": (lambda x, d, k: gm.norm(x, math.inf, d, k),
                lambda a, ax, k: np.abs(a).max(axis=ax, keepdims=k)),
}


@fixture_ok
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(sd=shape_and_dims(), keepdim=st.booleans(), seed=st.integers(0, 100))
def test_reduction_matches_numpy_with_gradients(device, name, sd, keepdim, seed):
    shape, spec, axis = sd
    gm_fn, np_fn = REDUCTIONS[name]
    check_op(lambda x: gm_fn(x, spec, keepdim), lambda a: np_fn(a, axis, keepdim), [shape],
             device=device, seed=seed)


@fixture_ok
@given(sd=shape_and_dims(min_side=2), keepdim=st.booleans())
def test_var_std_default_correction_is_bessel(device, sd, keepdim):
    shape, spec, axis = sd
    check_op(lambda x: x.var(spec, keepdim=keepdim), lambda a: _np_var(a, axis, 1, keepdim),
             [shape], device=device, torch_fn=lambda t: t.var(spec, keepdim=keepdim))
    check_op(lambda x: gm.std(x, spec, keepdim=keepdim),
             lambda a: np.sqrt(_np_var(a, axis, 1, keepdim)), [shape], device=device)


def test_var_argument_forms():
    a = np.array([[1.0, 2.0, 4.0], [3.0, 3.0, 9.0]])
    x = gm.tensor(a)
    assert_close(x.var(), np.var(a, ddof=1))
    assert_close(x.var(False), np.var(a))  # legacy positional unbiased
    assert_close(x.var(1, unbiased=False), np.var(a, axis=1))
    assert_close(x.var(0, correction=2), np.full(3, np.inf),
                 msg="N - correction = 0 with a nonzero sum of squares is inf")
    assert_close(x.var((0, 1), correction=0, keepdim=True), np.var(a, keepdims=True))
    assert gm.tensor(a, dtype=gm.float32).var().dtype == gm.float32
    single = gm.tensor([[5.0]]).var()
    assert math.isnan(single.item())  # one sample with correction 1: NaN, as PyTorch
    with pytest.raises(RuntimeError, match="either unbiased= or correction="):
        x.var(unbiased=True, correction=1)
    with pytest.raises(RuntimeError, match="floating point"):
        gm.tensor([1, 2, 3]).var()
    v, m = gm.var_mean(x, 1)
    assert_close(v, np.var(a, axis=1, ddof=1).astype(np.float32))
    assert_close(m, a.mean(1).astype(np.float32))


def test_empty_dim_list_reduces_everything_as_torch():
    a = np.arange(12.0).reshape(3, 4)
    x = gm.tensor(a)
    assert x.sum(()).shape == () and x.sum(()).item() == 66.0
    assert x.sum([], keepdim=True).shape == (1, 1)
    assert x.mean(()).item() == 5.5
    assert x.amax(()).item() == 11.0


def test_zero_dim_tensors_accept_dim_0_and_minus_1():
    x = gm.tensor(3.0, requires_grad=True)
    for y in (x.sum(0), x.mean(-1), x.amax(0), x.prod(0), gm.max(x, 0).values, x.cumsum(0),
              x.norm(dim=0)):
        assert y.shape == () and y.item() == 3.0
    assert gm.max(x, 0).indices.item() == 0 and x.argmax(0).item() == 0
    assert x.argmax().item() == 0
    for f in (lambda t: t.prod(), lambda t: t.cumsum(0), lambda t: gm.max(t, -1).values,
              lambda t: t.amax(), lambda t: t.norm()):
        assert gm.autograd.grad(f(x), x)[0].item() == 1.0
    with pytest.raises(IndexError, match="out of range"):
        x.sum(1)


def test_integer_and_bool_results():
    i32 = gm.tensor([[1, 2], [3, 4]], dtype=gm.int32)
    assert i32.sum().dtype == gm.int64 and i32.sum().item() == 10
    assert i32.sum(0).tolist() == [4, 6]
    assert i32.prod().dtype == gm.int64 and i32.prod().item() == 24
    assert i32.cumsum(1).dtype == gm.int64 and i32.cumsum(1).tolist() == [[1, 3], [3, 7]]
    assert i32.amax().dtype == gm.int32 and i32.amax().item() == 4
    assert gm.tensor([True, True, False]).sum().item() == 2
    assert i32.sum(dtype=gm.float64).dtype == gm.float64
    assert gm.tensor([1.0, 2.0]).sum(dtype=gm.float64).dtype == gm.float64
    with pytest.raises(RuntimeError, match="floating point"):
        i32.mean()
    assert i32.mean(dtype=gm.float32).item() == 2.5
    with pytest.raises(RuntimeError, match="floating point"):
        i32.norm()


def test_reductions_over_empty_dims():
    x = gm.zeros(3, 0, 2)
    assert x.sum(1).tolist() == [[0.0, 0.0]] * 3
    assert x.prod(1).tolist() == [[1.0, 1.0]] * 3
    assert np.isnan(x.mean(1).numpy()).all() and x.mean(1).shape == (3, 2)
    assert x.sum().item() == 0.0 and x.amax(0).shape == (0, 2)  # reducing a nonempty dim
    assert x.all().item() is True and x.any().item() is False
    assert x.all(1).shape == (3, 2) and x.count_nonzero().item() == 0
    for fn in (lambda: x.amax(1), lambda: x.amax(), lambda: gm.max(x, 1), lambda: x.argmax(),
               lambda: x.argmin(1), lambda: gm.min(x)):
        with pytest.raises((IndexError, RuntimeError), match="non-zero size|empty"):
            fn()


def test_dim_errors():
    x = gm.ones(2, 3)
    with pytest.raises(IndexError, match="out of range"):
        x.sum(2)
    with pytest.raises(IndexError, match="out of range"):
        x.amax(-3)
    with pytest.raises(RuntimeError, match="more than once"):
        x.sum((1, -1))
    with pytest.raises(IndexError, match="out of range"):
        x.argmax(5)


def test_prod_gradient_with_zeros(device):
    # one zero in a slice: only the zero gets a gradient (product of the others);
    # two zeros: the gradient is zero everywhere in that slice
    a = np.array([[2.0, 0.0, 3.0, -1.0], [0.0, 1.5, 0.0, 2.0], [1.0, 2.0, -3.0, 0.5]])
    x = gm.tensor(a, requires_grad=True, device=device)
    x.prod(1).sum().backward()
    expected = np.array([[np.prod(np.delete(r, j)) for j in range(4)] for r in a])
    assert_close(x.grad.cpu(), expected)
    assert expected[1].tolist() == [0.0, 0.0, 0.0, 0.0] and expected[0, 1] == -6.0
    # exact double backward at zeros too (the pairwise-products path), and over all dims
    check_op(lambda t: t.prod(1), lambda v: v.prod(1), [a.shape], arrays=[a], device=device)
    check_op(lambda t: t.prod(), lambda v: v.prod(), [a.shape], arrays=[a[:2, :3]],
             device=device)
    check_op(lambda t: t.prod(0, keepdim=True), lambda v: v.prod(0, keepdims=True), [a.shape],
             arrays=[a.T.copy()], device=device)


def test_amax_and_full_max_split_ties_evenly():
    x = gm.tensor([[1.0, 4.0, 4.0], [2.0, 2.0, 2.0]], requires_grad=True)
    x.amax(1).sum().backward()
    assert_close(x.grad, gm.tensor([[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]))
    x.grad = None
    gm.max(x).backward()
    assert_close(x.grad, gm.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]))
    x.grad = None
    x.amin(0).sum().backward()
    assert_close(x.grad, gm.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    x.grad = None
    ((x - 10) * (x - 10)).min().backward()  # the two 4.0 tie: each gets half of -12
    assert_close(x.grad, gm.tensor([[0.0, -6.0, -6.0], [0.0, 0.0, 0.0]]))
    # second order (away from ties, where finite differences are meaningful)
    y = gm.tensor([[1.0, 4.0, 3.0]], dtype=gm.float64, requires_grad=True)
    assert gradgradcheck(lambda t: t.amax(1) * t.sum(), (y,))


def test_nan_propagates_through_amax_and_max():
    x = gm.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    assert math.isnan(x.amax().item()) and math.isnan(gm.max(x, 0).values.item())
    assert gm.max(x, 0).indices.item() == 1
    x.amax().backward()
    assert x.grad.tolist()[1] == 1.0 and x.grad.tolist()[0] == 0.0


@fixture_ok
@given(shape=shapes(min_dims=1, max_dims=3, max_side=4), data=st.data())
def test_max_min_with_dim(device, shape, data):
    d = data.draw(st.integers(-len(shape), len(shape) - 1))
    keepdim = data.draw(st.booleans())
    for fn, npv, npi in ((gm.max, np.max, np.argmax), (gm.min, np.min, np.argmin)):
        res = check_op(lambda t: fn(t, d, keepdim).values,
                       lambda a: npv(a, axis=d, keepdims=keepdim), [shape], device=device)
        arr = np.random.default_rng(0).uniform(-2, 2, size=shape)
        out = fn(gm.tensor(arr, device=device), d, keepdim)
        assert out.indices.dtype == gm.int64 and not out.indices.requires_grad
        assert out.indices.cpu().tolist() == npi(arr, axis=d, keepdims=keepdim).tolist()
        assert res.shape == out.values.shape


def test_max_with_dim_gradient_goes_to_the_index():
    x = gm.tensor([[3.0, 3.0, 1.0], [0.0, 5.0, 5.0]], requires_grad=True)
    out = x.max(1)
    assert type(out).__name__ == "max" and out._fields == ("values", "indices")
    assert out.indices.tolist() == [0, 1]  # first occurrence among ties
    out.values.sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    v, i = gm.min(x, 0, keepdim=True)
    assert v.shape == (1, 3) and i.tolist() == [[1, 0, 0]] and v.tolist() == [[0.0, 3.0, 1.0]]


def test_binary_max_min_delegate_to_maximum():
    from gmcore.functional import pointwise
    if not hasattr(pointwise, "maximum"):
        pytest.skip("pointwise.maximum not available yet")
    a, b = gm.tensor([1.0, 5.0, -2.0]), gm.tensor([3.0, 0.0, -1.0])
    assert gm.max(a, b).tolist() == [3.0, 5.0, -1.0]
    assert gm.min(a, b).tolist() == [1.0, 0.0, -2.0]
    assert a.max(b).tolist() == [3.0, 5.0, -1.0]


def test_argmax_argmin():
    a = np.array([[1.0, 9.0, 9.0], [8.0, 2.0, -4.0]])
    x = gm.tensor(a)
    assert x.argmax().item() == 1 and x.argmin().item() == 5  # flat index, first tie
    assert x.argmax().dtype == gm.int64 and x.argmax().shape == ()
    assert x.argmax(1).tolist() == [1, 0] and x.argmin(0).tolist() == [0, 1, 1]
    assert x.argmax(-1, keepdim=True).tolist() == [[1], [0]]
    assert x.argmax(keepdim=True).shape == (1, 1)
    assert gm.argmin(gm.tensor([3, 1, 1], dtype=gm.int32)).item() == 1


@pytest.mark.parametrize("shape,dim", [((7,), 0), ((3, 5), 1), ((3, 5), -2), ((2, 3, 4), 1)])
def test_cumsum(device, shape, dim):
    check_op(lambda t: t.cumsum(dim), lambda a: np.cumsum(a, axis=dim), [shape], device=device,
             torch_fn=lambda t: t.cumsum(dim))


def test_cumsum_gradient_is_reverse_cumsum():
    x = gm.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    w = gm.tensor([1.0, 10.0, 100.0, 1000.0])
    (x.cumsum(0) * w).sum().backward()
    assert x.grad.tolist() == [1111.0, 1110.0, 1100.0, 1000.0]


def test_norm_variants_and_zero_subgradient(device):
    check_op(lambda t: t.norm(), lambda a: np.linalg.norm(a), [(3, 5)], device=device)
    check_op(lambda t: t.norm("fro", dim=(0, 2)), lambda a: np.sqrt((a * a).sum(axis=(0, 2))),
             [(2, 3, 4)], device=device)
    check_op(lambda t: gm.norm(t, -math.inf, 1), lambda a: np.abs(a).min(1), [(3, 5)],
             device=device)
    check_op(lambda t: gm.norm(t, 0.5, 1), lambda a: (np.abs(a) ** 0.5).sum(1) ** 2, [(3, 5)],
             device=device, domain=lambda a: np.where(np.abs(a) < 0.1, 0.5, a))
    z = gm.tensor(np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]), requires_grad=True)
    n = z.norm(dim=1)
    assert n.tolist() == [0.0, 5.0]
    n.sum().backward()
    assert_close(z.grad, np.array([[0.0, 0.0, 0.0], [0.6, 0.0, 0.8]]))  # 0 subgradient at 0
    z.grad = None
    gm.norm(z, 3, 1).sum().backward()
    assert np.isfinite(z.grad.numpy()).all() and z.grad.tolist()[0] == [0.0, 0.0, 0.0]
    # second order through a zero row stays finite (the norm has no Hessian at 0; any finite
    # value is a valid choice) and is exact on the nonzero row
    w = gm.tensor(np.array([[0.0, 0.0], [3.0, -4.0]]), requires_grad=True)
    g, = gm.autograd.grad(w.norm(dim=1).sum(), w, create_graph=True)
    h, = gm.autograd.grad((g * g * gm.tensor(np.array([[1.0, 1.0], [1.0, 2.0]]))).sum(), w)
    assert np.isfinite(h.numpy()).all()
    assert gradgradcheck(lambda t: t.norm(dim=1), (w[1:].detach().requires_grad_(),))
    c = gm.tensor([[0.0, 2.0, -1.0], [0.0, 0.0, 0.5]], requires_grad=True)
    assert c.norm(0, 1).tolist() == [2.0, 1.0]
    c.norm(0).backward()
    assert c.grad.tolist() == [[0.0] * 3] * 2
    with pytest.raises(NotImplementedError, match="nuc"):
        c.norm("nuc")
    with pytest.raises(RuntimeError, match="at most 2 dims"):
        gm.ones(2, 2, 2).norm("fro", dim=(0, 1, 2))


def test_all_any_count_nonzero():
    a = np.array([[1.0, 0.0, 2.0], [3.0, 4.0, 5.0]])
    x = gm.tensor(a)
    assert x.all().dtype == gm.bool and x.all().item() is False
    assert x.all(1).tolist() == [False, True] and x.any(0).tolist() == [True, True, True]
    assert x.all(-1, keepdim=True).shape == (2, 1)
    assert gm.tensor([0, 0]).any().item() is False
    assert x.count_nonzero().item() == 5 and x.count_nonzero().dtype == gm.int64
    assert gm.count_nonzero(x, dim=(0, 1)).item() == 5
    assert gm.count_nonzero(x, dim=1).tolist() == [2, 3]


def test_sum_to_size_and_mean_gradients(device):
    check_op(lambda t: t.sum_to_size(3, 1), lambda a: a.sum(axis=(0, 2), keepdims=False)
             .reshape(3, 1), [(4, 3, 5)], device=device)
    check_op(lambda t: t.mean((0, -1), keepdim=True), lambda a: a.mean(axis=(0, 2),
                                                                        keepdims=True),
             [(3, 5, 7)], device=device)
