"""Indexing ops: getitem (basic/advanced/bool), index_put and setitem, gather/scatter family,
masks, one_hot, embedding, nonzero; gradients to second order, views, errors."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
from gmcore.testing import assert_close, gradcheck, gradgradcheck
from helpers import check_op, shapes

try:  # torch is a peer oracle only (check_op calls torch_fn when torch is installed)
    import torch
except ImportError:
    torch = None

I = np.array  # noqa: E741  (short for index arrays in the tables below)


# ---- getitem -----------------------------------------------------------------------------------

BASIC = [
    (1,), (-1,), (slice(1, None),), (slice(None, None, -1),), (slice(4, 0, -2),),
    (Ellipsis, 2), (None, 1, Ellipsis, None), (0, slice(None), 3), (slice(None), None, -2),
    (Ellipsis,), (1, 2, 3),
]

ADVANCED = [
    (I([0, 2, 0]),),                                  # repeated rows accumulate gradient
    (slice(None), [4, 4, 0]),                         # a list on a middle dim
    (I([[0], [2]]), slice(1, 3), I([1, 6, 1])),       # broadcast arrays split by a slice
    (Ellipsis, I([-1, 0, -1])),                       # negative indices
    (I([1, 0]), I([3, 3])),                           # two arrays side by side
    (None, I([2, 2]), 0),                             # with None and an int
    (I([], dtype=np.int64),),                         # empty
]


def _t_index(ix):
    return tuple(torch.as_tensor(p) if isinstance(p, np.ndarray) else p for p in ix)


@pytest.mark.parametrize("ix", BASIC + ADVANCED)
def test_getitem(device, ix):
    check_op(lambda a: a[ix], lambda a: a[ix], [(3, 5, 7)], device=device,
             torch_fn=(lambda a: a[_t_index(ix)]) if all(
                 not isinstance(p, slice) or (p.step or 1) > 0 for p in ix) else None)


def test_getitem_with_index_tensors(device):
    rows = gm.tensor([2, 0, 2], device=device)
    check_op(lambda a: a[rows, 1:], lambda a: a[[2, 0, 2], 1:], [(3, 4)], device=device)
    cols = gm.tensor([[0, 3], [3, 3]])  # a cpu index works for any device
    check_op(lambda a: a[:, cols], lambda a: a[:, [[0, 3], [3, 3]]], [(3, 4)], device=device)


def test_getitem_bool_masks(device):
    rng = np.random.default_rng(1)
    m2 = rng.random((3, 5)) > 0.4
    m1 = np.array([True, False, True])
    for m, np_ix in [(gm.tensor(m2, device=device), m2), ((gm.tensor(m1), 1), (m1, 1)),
                     ((Ellipsis, gm.tensor(m2[0])), (Ellipsis, m2[0]))]:
        check_op(lambda a: a[m], lambda a: a[np_ix], [(3, 5)], device=device)
    x = gm.arange(6.0).reshape(2, 3)
    assert x[True].shape == (1, 2, 3) and x[False].shape == (0, 2, 3)
    assert x[[True, False]].tolist() == [[0.0, 1.0, 2.0]]


def test_repeated_indices_accumulate_gradient(device):
    x = gm.ones(4, 2, dtype=gm.float64, device=device, requires_grad=True)
    y = x[gm.tensor([3, 0, 3, 3], device=device)]
    (y * gm.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=gm.float64, device=device)).sum().backward()
    assert x.grad.tolist() == [[2.0, 2.0], [0.0, 0.0], [0.0, 0.0], [8.0, 8.0]]


def test_basic_getitem_is_a_view():
    x = gm.arange(12.0).reshape(3, 4)
    v = x[1:, ::-2]
    assert np.shares_memory(v.data, x.data)
    x.data[2, 3] = -1.0
    assert v[1, 0].item() == -1.0
    s = x[1, 2]  # a 0-d view, not a scalar copy
    assert s.shape == () and np.shares_memory(s.data, x.data)
    old = s._version_value
    x.mul_(2.0)
    assert s._version_value == old + 1 and s.item() == 12.0
    a = x[[0, 1]]  # advanced indexing copies
    assert not np.shares_memory(a.data, x.data)


def test_getitem_double_backward_is_getitem():
    x = gm.randn(4, 3, dtype=gm.float64, requires_grad=True)
    idx = (gm.tensor([0, 3, 3]), slice(None, None, -1))
    assert gradgradcheck(lambda t: t[idx] ** 2, (x,))
    v = gm.randn(3, 3, dtype=gm.float64, requires_grad=True)
    (g,) = gm.autograd.grad(x[idx], x, grad_outputs=v, create_graph=True)
    (gv,) = gm.autograd.grad((g * x.detach()).sum(), v)
    assert_close(gv, x.detach()[idx])


@given(shape=shapes(1, 3, max_side=5), data=st.data())
def test_getitem_random_advanced(shape, data):
    nd = len(shape)
    k = data.draw(st.integers(1, nd))
    length = data.draw(st.integers(1, 3))
    ix = []
    for d in range(k):
        kind = data.draw(st.sampled_from(["int", "slice", "array", "none"]))
        n = shape[d]
        if kind == "int":
            ix.append(data.draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            ix.append(slice(data.draw(st.integers(-n, n)), data.draw(st.integers(-n, n)),
                            data.draw(st.sampled_from([1, 2, -1, -3]))))
        elif kind == "array":  # all arrays share length ``length`` so they broadcast
            ix.append(I(data.draw(st.lists(st.integers(-n, n - 1), min_size=length,
                                           max_size=length))))
        else:
            ix.append(None)
            ix.append(slice(None))
    ix = tuple(ix)
    a = np.random.default_rng(0).standard_normal(shape)
    check_op(lambda t: t[ix], lambda x: _ints_first(x, ix), None, arrays=[a], gradgrad=False)


def _ints_first(a, ix):
    """PyTorch's rule in NumPy: integers select first (removing their dims), then NumPy's
    indexing of what is left (NumPy itself would count the integers as advanced indices)."""
    rest, d = [], 0
    for p in ix:
        if isinstance(p, int):
            a = np.take(a, p, axis=d)
        else:
            rest.append(p)
            d += p is not None
    return a[tuple(rest)]


def _random_index(rng, shape):
    """A random index mixing ints, slices, None, Ellipsis, lists, int tensors and bool masks."""
    parts, d, nd = [], 0, len(shape)
    length = int(rng.integers(1, 4))  # every index array has this length: they broadcast
    ellipsis = rng.random() < 0.3
    while d < nd and rng.random() < 0.85:
        n = shape[d]
        kind = rng.choice(["int", "slice", "list", "tensor", "tensor0", "mask", "none",
                           "bool", "ellipsis"])
        if kind == "int":
            parts.append(int(rng.integers(-n, n)))
        elif kind == "slice":
            parts.append(slice(int(rng.integers(-n, n)), None, int(rng.integers(1, 3))))
        elif kind == "list":
            parts.append(rng.integers(-n, n, length).tolist())
        elif kind == "tensor":
            parts.append(("t", rng.integers(0, n, (length,) if rng.random() < 0.5
                                            else (1, length))))
        elif kind == "tensor0":
            parts.append(("t", np.asarray(int(rng.integers(0, n)))))
        elif kind == "mask" and d + 1 < nd and rng.random() < 0.5:
            parts.append(("t", rng.random(shape[d:d + 2]) < 0.5))
            d += 1
        elif kind == "mask":
            parts.append(("t", rng.random(n) < 0.6))
        elif kind == "none":
            parts.append(None)
            continue
        elif kind == "bool":
            parts.append(bool(rng.random() < 0.7))
            continue
        elif ellipsis:
            parts.append(Ellipsis)
            ellipsis = False
            d = max(d, nd - int(rng.integers(0, nd - d + 1)))
            continue
        else:
            continue
        d += 1
    return tuple(parts)


def _as_module_index(ix, module):
    return tuple(module.tensor(p[1]) if isinstance(p, tuple) else p for p in ix)


@pytest.mark.skipif(torch is None, reason="torch is the oracle")
def test_mixed_indexing_matches_torch():
    """getitem, its gradient and setitem against PyTorch over random mixed index tuples."""
    rng = np.random.default_rng(12)
    checked = 0
    for case in range(400):
        shape = tuple(int(k) for k in rng.integers(1, 5, int(rng.integers(1, 5))))
        ix = _random_index(rng, shape)
        a = rng.standard_normal(shape)
        tx = torch.tensor(a, requires_grad=True)
        try:
            ty = tx[_as_module_index(ix, torch)]
        except (IndexError, RuntimeError):  # e.g. arrays that don't broadcast
            with pytest.raises((IndexError, RuntimeError)):
                gm.tensor(a)[_as_module_index(ix, gm)]
            continue
        checked += 1
        x = gm.tensor(a, requires_grad=True)
        y = x[_as_module_index(ix, gm)]
        assert tuple(y.shape) == tuple(ty.shape), (case, ix)
        assert_close(y, ty.detach().numpy())
        w = rng.standard_normal(tuple(ty.shape))
        (ty * torch.tensor(w)).sum().backward()
        (y * gm.tensor(w)).sum().backward()  # the scatter-add lands where torch's does
        assert_close(x.grad, tx.grad.numpy())
        # setitem: only where every written position is distinct (else the winner is unspecified)
        ids = torch.arange(a.size).reshape(shape)[_as_module_index(ix, torch)]
        if ids.unique().numel() == ids.numel():
            tz, z = torch.tensor(a), gm.tensor(a)
            tz[_as_module_index(ix, torch)] = torch.tensor(w)
            z[_as_module_index(ix, gm)] = gm.tensor(w)
            assert_close(z, tz.numpy())
    assert checked > 250


def test_int_and_array_split_by_a_slice_follow_torch():
    """Issue 11.12: an int applies first (basic indexing), so the array's dim stays in place."""
    x = gm.arange(24.0).reshape(2, 3, 4)
    assert x[0, :, [1, 2]].shape == (3, 2)  # NumPy gives (2, 3)
    assert x[0, :, [1, 2]].tolist() == [[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]]
    assert x[gm.tensor(1), :, gm.tensor([0, 3])].shape == (3, 2)  # a 0-d tensor selects too
    x = gm.zeros(2, 3, 4, requires_grad=True)
    x[0, :, [1, 2]].backward(gm.arange(6.0).reshape(3, 2))
    assert x.grad[0].tolist() == [[0, 0, 1, 0], [0, 2, 3, 0], [0, 4, 5, 0]]
    y = gm.zeros(2, 3, 4)
    y[1, :, [0, 3]] = gm.tensor([[1.0, 2.0]] * 3)
    assert y[1, :, 0].tolist() == [1.0] * 3 and y[1, :, 3].tolist() == [2.0] * 3


# ---- index_put and setitem ---------------------------------------------------------------------

def test_index_put(device):
    ix = (I([0, 2]), slice(1, 4))
    check_op(lambda a, v: gm.index_put(a, ix, v), _np_put(ix), [(3, 5), (2, 3)], device=device)
    check_op(lambda a, v: gm.index_put(a, ix, v), _np_put(ix), [(3, 5), (3,)], device=device)
    check_op(lambda a, v: gm.index_put(a, (1,), v), _np_put((1,)), [(3, 5), (1, 5)],
             device=device)
    m = np.array([[True, False, True, False, False]] * 3)
    check_op(lambda a, v: gm.index_put(a, gm.tensor(m), v), _np_put(m), [(3, 5), ()],
             device=device)


def _np_put(ix):
    def f(a, v):
        out = a.copy()
        out[ix] = v
        return out
    return f


def test_index_put_accumulate_sums_repeats():
    x = gm.zeros(4, dtype=gm.float64, requires_grad=True)
    v = gm.tensor([1.0, 2.0, 3.0], dtype=gm.float64, requires_grad=True)
    out = gm.index_put(x, gm.tensor([1, 1, 3]), v, accumulate=True)
    assert out.tolist() == [0.0, 3.0, 0.0, 3.0]
    assert gradcheck(lambda a, b: gm.index_put(a, gm.tensor([1, 1, 3]), b, accumulate=True),
                     (x, v))
    assert gradgradcheck(lambda a, b: gm.index_put(a, gm.tensor([1, 1, 3]), b, True) ** 2,
                         (x, v))


def test_setitem_under_autograd():
    x = gm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 1
    y[0] = 0
    assert y.tolist() == [0.0, 2.0, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0]


def test_setitem_value_receives_gradient():
    w = gm.tensor([2.0, 5.0], requires_grad=True)
    buf = gm.zeros(3, 2)
    buf[1] = w          # a tensor that needs no grad takes a value that does
    buf[gm.tensor([True, False, True]), 0] = 7.0
    assert buf.tolist() == [[7.0, 0.0], [2.0, 5.0], [7.0, 0.0]]
    (buf * gm.tensor([[1.0, 1.0], [3.0, 4.0], [1.0, 1.0]])).sum().backward()
    assert w.grad.tolist() == [3.0, 4.0]


def test_setitem_casts_and_broadcasts():
    x = gm.zeros(2, 3, dtype=gm.int64)
    x[:, 1] = gm.tensor([1.9, 2.2])
    x[0] = 5
    assert x.dtype == gm.int64 and x.tolist() == [[5, 5, 5], [0, 2, 0]]
    with pytest.raises(RuntimeError, match=r"shape \(2,\).*indexed shape \(3,\)"):
        x[0] = gm.tensor([1, 2])


# ---- dim-wise ops ------------------------------------------------------------------------------

def test_index_select(device):
    idx = gm.tensor([4, 0, 4], device=device)
    check_op(lambda a: a.index_select(1, idx), lambda a: a[:, [4, 0, 4]], [(3, 5, 2)],
             device=device, torch_fn=lambda a: a.index_select(1, torch.tensor([4, 0, 4])))


def _np_gather(a, dim, idx):
    grid = list(np.indices(idx.shape, sparse=True))
    grid[dim] = idx
    return a[tuple(grid)]


def test_gather(device):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 5, size=(3, 4, 2))
    t_idx = gm.tensor(idx, device=device)
    check_op(lambda a: a.gather(1, t_idx), lambda a: _np_gather(a, 1, idx), [(3, 5, 2)],
             device=device, torch_fn=lambda a: a.gather(1, torch.tensor(idx)))
    small = idx[:2, :, :1] % 3  # index smaller than input off dim
    check_op(lambda a: gm.gather(a, 0, gm.tensor(small)), lambda a: _np_gather(a, 0, small),
             [(3, 5, 2)], device=device)


def _np_scatter(dim, idx, add):
    def f(a, src):
        out = a.copy()
        grid = list(np.indices(idx.shape, sparse=True))
        grid[dim] = idx
        part = src[tuple(slice(0, k) for k in idx.shape)]
        if add:
            np.add.at(out, tuple(grid), part)
        else:
            out[tuple(grid)] = part
        return out
    return f


def test_scatter_add(device):
    idx = np.array([[0, 2, 0, 0], [1, 1, 2, 0]])
    t = gm.tensor(idx, device=device)
    check_op(lambda a, s: a.scatter_add(1, t, s), _np_scatter(1, idx, True), [(2, 3), (2, 4)],
             device=device, torch_fn=lambda a, s: a.scatter_add(1, torch.tensor(idx), s))
    # src larger than index: only its leading block is read; the rest gets zero gradient
    check_op(lambda a, s: a.scatter_add(1, t, s), _np_scatter(1, idx, True), [(2, 3), (3, 5)],
             device=device)


def test_scatter(device):
    idx = np.array([[2, 0], [1, 2]])  # no repeats along the scattered dim: defined result
    t = gm.tensor(idx, device=device)
    check_op(lambda a, s: a.scatter(1, t, s), _np_scatter(1, idx, False), [(2, 3), (2, 2)],
             device=device, torch_fn=lambda a, s: a.scatter(1, torch.tensor(idx), s))
    check_op(lambda a: a.scatter(0, gm.tensor([[1, 0, 1]]), 9.0),
             lambda a: _np_scatter(0, np.array([[1, 0, 1]]), False)(a, np.full((1, 3), 9.0)),
             [(2, 3)], device=device)


def test_scatter_gradients_match_pytorch_rules():
    x = gm.ones(2, 3, dtype=gm.float64, requires_grad=True)
    s = gm.tensor([[5.0, 6.0]], dtype=gm.float64, requires_grad=True)
    out = x.scatter(1, gm.tensor([[2, 0]]), s)
    (out * gm.arange(6.0, dtype=gm.float64).reshape(2, 3)).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [3.0, 4.0, 5.0]]
    assert s.grad.tolist() == [[2.0, 0.0]]


# ---- masks -----------------------------------------------------------------------------------

def test_masked_fill(device):
    m = gm.tensor([[True], [False], [True]], device=device)
    check_op(lambda a: a.masked_fill(m, -3.5), lambda a: np.where(m.tolist(), -3.5, a),
             [(3, 4)], device=device)
    check_op(lambda a, v: a.masked_fill(m, v), lambda a, v: np.where(m.tolist(), v, a),
             [(3, 4), ()], device=device,
             torch_fn=lambda a, v: a.masked_fill(torch.tensor(m.tolist()), v))
    y = gm.tensor([1, 2, 3]).masked_fill(gm.tensor([True, False, False]), 9)
    assert y.dtype == gm.int64 and y.tolist() == [9, 2, 3]


def test_masked_fill_inplace_and_inf():
    x = gm.tensor([1.0, 2.0, 3.0])
    x.masked_fill_(gm.tensor([False, True, False]), float("-inf"))
    assert x.tolist() == [1.0, float("-inf"), 3.0]


def test_masked_select(device):
    m = np.array([True, False, True, True])
    check_op(lambda a: a.masked_select(gm.tensor(m, device=device)), lambda a: a[:, m].ravel(),
             [(3, 4)], device=device)
    out = gm.tensor([1.0, 2.0]).masked_select(gm.tensor([[True, False], [False, True]]))
    assert out.tolist() == [1.0, 2.0]


# ---- one_hot, embedding, nonzero -----------------------------------------------------------

def test_one_hot():
    t = gm.tensor([[0, 3], [1, 1]])
    out = gm.one_hot(t)
    assert out.dtype == gm.int64 and out.shape == (2, 2, 4)
    assert out.tolist() == [[[1, 0, 0, 0], [0, 0, 0, 1]], [[0, 1, 0, 0], [0, 1, 0, 0]]]
    assert gm.one_hot(gm.tensor([2]), 5).tolist() == [[0, 0, 1, 0, 0]]
    assert gm.one_hot(gm.tensor([], dtype=gm.int64), 3).shape == (0, 3)


def test_embedding(device):
    idx = np.array([[3, 0], [3, 3], [1, 2]])
    check_op(lambda w: gm.embedding(gm.tensor(idx, device=device), w), lambda w: w[idx],
             [(4, 5)], device=device,
             torch_fn=lambda w: torch.nn.functional.embedding(torch.tensor(idx), w))


def test_embedding_padding_idx_gets_no_gradient():
    w = gm.ones(4, 2, dtype=gm.float64, requires_grad=True)
    idx = gm.tensor([[3, 0], [3, 3], [1, 2]])
    out = gm.embedding(idx, w, padding_idx=3)
    assert out[0, 0].tolist() == [1.0, 1.0]  # the padding row is still looked up
    out.sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    # the masked gradient is not the true derivative (as PyTorch), but its own derivative is
    f = lambda t: gm.embedding(idx, t, padding_idx=-1) ** 2  # noqa: E731
    assert gradgradcheck(f, (w,))


def test_nonzero_argwhere():
    x = gm.tensor([[0.0, 1.5], [2.0, 0.0], [0.0, 0.0]])
    nz = x.nonzero()
    assert nz.dtype == gm.int64 and nz.tolist() == [[0, 1], [1, 0]]
    rows, cols = gm.nonzero(x, as_tuple=True)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    assert gm.argwhere(x).tolist() == [[0, 1], [1, 0]]
    assert gm.nonzero(gm.tensor(3.0)).shape == (1, 0)
    assert gm.nonzero(gm.zeros(2, 2)).shape == (0, 2)


# ---- errors ----------------------------------------------------------------------------------

X = gm.zeros(3, 4)


@pytest.mark.parametrize("fn, exc, match", [
    (lambda: X[3], IndexError, "index 3 is out of bounds for dimension 0 with size 3"),
    (lambda: X[:, -5], IndexError, "index -5 is out of bounds for dimension 1 with size 4"),
    (lambda: X[:, gm.tensor([0, 4])], IndexError, "index 4 .* dimension 1 with size 4"),
    (lambda: X[[0, -4]], IndexError, "index -4 .* dimension 0 with size 3"),
    (lambda: X[0, 0, 0], IndexError, "too many indices"),
    (lambda: X[..., ...], IndexError, "single ellipsis"),
    (lambda: X[gm.tensor([0.0])], IndexError, "integer or bool"),
    (lambda: X[gm.tensor([True, False])], IndexError, r"mask \(2,\).*\(3,\)"),
    (lambda: X["a"], TypeError, "invalid index of type str"),
    (lambda: X[::0], ValueError, "step cannot be zero"),
    (lambda: X.index_select(0, gm.tensor([3])), IndexError, "dimension 0 with size 3"),
    (lambda: X.index_select(0, gm.tensor([[0]])), IndexError, "0-d or 1-d"),
    (lambda: X.gather(1, gm.tensor([[4]])), IndexError, "gather: index 4 .* dimension 1"),
    (lambda: X.gather(1, gm.tensor([-1]).reshape(1, 1)), IndexError, "index -1"),
    (lambda: X.gather(1, gm.tensor([0])), RuntimeError, "as many dimensions"),
    (lambda: X.gather(1, gm.zeros(4, 1, dtype=gm.int64)), RuntimeError, "must not exceed"),
    (lambda: X.gather(1, gm.zeros(1, 1)), RuntimeError, "integer tensor"),
    (lambda: X.scatter_add(0, gm.tensor([[3]]), gm.ones(1, 1)), IndexError,
     "scatter_add: index 3 .* dimension 0 with size 3"),
    (lambda: X.scatter_add(0, gm.tensor([[0, 0]]), gm.ones(1, 1)), RuntimeError, "src"),
    (lambda: X.scatter(1, gm.tensor([[9]]), 1.0), IndexError, "scatter: index 9"),
    (lambda: X.scatter_add(0, gm.tensor([[0]]), 1.0), TypeError, "src must be a tensor"),
    (lambda: X.masked_fill(gm.tensor([1, 0, 1, 0]), 1.0), RuntimeError, "bool"),
    (lambda: X.masked_fill(gm.tensor([True, False, True]), 1.0), RuntimeError, r"\(3,\)"),
    (lambda: X.masked_fill(gm.tensor([True] * 4), gm.ones(2)), RuntimeError, "0-dimensional"),
    (lambda: gm.one_hot(gm.tensor([0.0])), RuntimeError, "integer"),
    (lambda: gm.one_hot(gm.tensor([0, 3]), 3), RuntimeError, r"smaller than num_classes \(3\)"),
    (lambda: gm.one_hot(gm.tensor([-1])), RuntimeError, "non-negative"),
    (lambda: gm.one_hot(gm.tensor([], dtype=gm.int64)), RuntimeError, "empty"),
    (lambda: gm.embedding(gm.tensor([4]), gm.zeros(4, 2)), IndexError, "index 4 .* size 4"),
    (lambda: gm.embedding(gm.tensor([0]), gm.zeros(4)), RuntimeError, "2-d"),
    (lambda: gm.embedding(gm.tensor([0]), gm.zeros(4, 2), padding_idx=4), RuntimeError,
     "padding_idx"),
])
def test_index_errors(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()
