"""Shape ops: forward against NumPy, gradients (first and second order), views, errors."""
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


def _np_pad(a, pad, mode="constant", value=0.0):
    """NumPy oracle for pad with PyTorch's (last dim first) order; negative amounts crop."""
    k = len(pad) // 2
    widths = [(0, 0)] * a.ndim
    sl = [slice(None)] * a.ndim
    for i in range(k):
        d = a.ndim - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        widths[d] = (max(lo, 0), max(hi, 0))
        sl[d] = slice(max(-lo, 0), a.shape[d] - max(-hi, 0))
    a = a[tuple(sl)]
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]
    kw = {"constant_values": value} if mode == "constant" else {}
    return np.pad(a, widths, mode=np_mode, **kw)


# ---- one-line op checks ---------------------------------------------------------------------

def test_reshape_view(device):
    check_op(lambda a: a.reshape(5, -1), lambda a: a.reshape(5, -1), [(3, 5, 7)], device=device,
             torch_fn=lambda a: a.reshape(5, -1))
    check_op(lambda a: a.view(7, 15), lambda a: a.reshape(7, 15), [(3, 5, 7)], device=device)


def test_permute_transpose(device):
    check_op(lambda a: a.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1), [(3, 5, 7)],
             device=device, torch_fn=lambda a: a.permute(2, 0, 1))
    check_op(lambda a: a.transpose(0, -1), lambda a: a.swapaxes(0, -1), [(3, 5, 7)],
             device=device)
    check_op(lambda a: a.T, lambda a: a.T, [(3, 5)], device=device)


def test_expand_squeeze_unsqueeze(device):
    check_op(lambda a: a.expand(4, -1, 5), lambda a: np.broadcast_to(a, (4, 3, 5)), [(3, 1)],
             device=device)
    check_op(lambda a: a.expand(4, 3, 5), lambda a: np.broadcast_to(a, (4, 3, 5)), [(3, 1)],
             device=device, torch_fn=lambda a: a.expand(4, 3, 5))
    check_op(lambda a: a.squeeze(1), lambda a: a.squeeze(1), [(3, 1, 5)], device=device)
    check_op(lambda a: a.squeeze(), lambda a: a.squeeze(), [(1, 3, 1, 5)], device=device)
    check_op(lambda a: a.unsqueeze(-1), lambda a: a[..., None], [(3, 5)], device=device)


def test_flatten_unflatten_movedim(device):
    check_op(lambda a: a.flatten(1), lambda a: a.reshape(3, 35), [(3, 5, 7)], device=device,
             torch_fn=lambda a: a.flatten(1))
    check_op(lambda a: a.flatten(), lambda a: a.reshape(-1), [(3, 5, 7)], device=device)
    check_op(lambda a: a.unflatten(1, (5, -1)), lambda a: a.reshape(3, 5, 7), [(3, 35)],
             device=device)
    check_op(lambda a: a.movedim(0, -1), lambda a: np.moveaxis(a, 0, -1), [(3, 5, 7)],
             device=device, torch_fn=lambda a: a.movedim(0, -1))
    check_op(lambda a: gm.movedim(a, (0, 1), (2, 0)), lambda a: np.moveaxis(a, (0, 1), (2, 0)),
             [(3, 5, 7)], device=device)
    assert gm.tensor(3.0).flatten().shape == (1,)


def test_repeat_tile(device):
    check_op(lambda a: a.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3)), [(3, 5)],
             device=device, torch_fn=lambda a: a.repeat(2, 1, 3))
    check_op(lambda a: a.repeat(2, 3), lambda a: np.tile(a, (2, 3)), [(3, 5)], device=device)
    check_op(lambda a: a.tile(2), lambda a: np.tile(a, 2), [(3, 5)], device=device,
             torch_fn=lambda a: a.tile(2))
    assert gm.zeros(2, 3).repeat(0, 1).shape == (0, 3)


def test_flip_roll(device):
    check_op(lambda a: a.flip((0, 2)), lambda a: np.flip(a, (0, 2)), [(3, 5, 7)], device=device,
             torch_fn=lambda a: a.flip((0, 2)))
    check_op(lambda a: a.roll(2, 1), lambda a: np.roll(a, 2, 1), [(3, 5)], device=device,
             torch_fn=lambda a: a.roll(2, 1))
    check_op(lambda a: a.roll((-1, 4), (0, 1)), lambda a: np.roll(a, (-1, 4), (0, 1)), [(3, 5)],
             device=device)
    check_op(lambda a: a.roll(4), lambda a: np.roll(a, 4), [(3, 5)], device=device)


def test_cat_stack(device):
    check_op(lambda a, b, c: gm.cat([a, b, c], 1), lambda a, b, c: np.concatenate([a, b, c], 1),
             [(3, 1, 2), (3, 4, 2), (3, 2, 2)], device=device,
             torch_fn=lambda a, b, c: torch.cat([a, b, c], 1))
    check_op(lambda a, b: gm.stack([a, b], -1), lambda a, b: np.stack([a, b], -1),
             [(3, 5), (3, 5)], device=device, torch_fn=lambda a, b: torch.stack([a, b], -1))
    assert gm.concat is gm.cat and gm.concatenate is gm.cat


def test_split_chunk_unbind(device):
    check_op(lambda a: a.split(2, 1), lambda a: tuple(np.split(a, [2, 4], 1)), [(3, 5)],
             device=device, torch_fn=lambda a: a.split(2, 1))
    check_op(lambda a: a.split([1, 0, 4], 1), lambda a: tuple(np.split(a, [1, 1], 1)),
             [(3, 5)], device=device)
    check_op(lambda a: a.chunk(3, 0), lambda a: tuple(np.split(a, [3, 6], 0)), [(7, 2)],
             device=device, torch_fn=lambda a: a.chunk(3, 0))
    check_op(lambda a: gm.unbind(a, 1), lambda a: tuple(np.moveaxis(a, 1, 0)), [(3, 4, 2)],
             device=device, torch_fn=lambda a: torch.unbind(a, 1))


def test_chunk_sizes_follow_pytorch():
    # ceil(n / chunks) per chunk, so fewer chunks than asked can come back
    assert [c.shape[0] for c in gm.zeros(5).chunk(3)] == [2, 2, 1]
    assert [c.shape[0] for c in gm.zeros(6).chunk(4)] == [2, 2, 2]
    assert [c.shape[0] for c in gm.zeros(2).chunk(5)] == [1, 1]
    assert [c.shape[0] for c in gm.zeros(5).split(5)] == [5]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes(device, mode):
    p = (2, 1, 1, 2)
    check_op(lambda a: gm.pad(a, p, mode=mode), lambda a: _np_pad(a, p, mode), [(2, 3, 4)],
             device=device,
             torch_fn=lambda a: torch.nn.functional.pad(a, p, mode=mode))


def test_pad_constant_value_and_crop(device):
    check_op(lambda a: gm.pad(a, (1, -2, -1, 3), value=2.5),
             lambda a: _np_pad(a, (1, -2, -1, 3), value=2.5), [(3, 5)], device=device,
             torch_fn=lambda a: torch.nn.functional.pad(a, (1, -2, -1, 3), value=2.5))
    check_op(lambda a: gm.pad(a, (0, 0, 0, 0, 1, 1)), lambda a: _np_pad(a, (0, 0, 0, 0, 1, 1)),
             [(2, 3, 1)], device=device)
    out = gm.pad(gm.arange(4).reshape(2, 2), (1, 0), value=7)
    assert out.dtype == gm.int64 and out.tolist() == [[7, 0, 1], [7, 2, 3]]


def test_reflect_pad_values_match_pytorch_doc():
    x = gm.arange(9.0).reshape(1, 3, 3)
    assert gm.pad(x, (1, 1), mode="reflect")[0, 0].tolist() == [1.0, 0.0, 1.0, 2.0, 1.0]
    assert gm.pad(x, (2, 0), mode="replicate")[0, 1].tolist() == [3.0, 3.0, 3.0, 4.0, 5.0]
    assert gm.pad(x, (1, 3), mode="circular")[0, 2].tolist() == [8.0, 6.0, 7.0, 8.0, 6.0,
                                                                  7.0, 8.0]


def test_pad_reflect_gradient_scatter_is_twice_differentiable():
    # reflect pad's backward is a scatter-add whose backward is the pad itself
    x = gm.randn(2, 4, dtype=gm.float64, requires_grad=True)
    f = lambda t: gm.pad(t, (3, 2), mode="reflect") ** 2  # noqa: E731
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))
    y = gm.pad(x, (3, 2), mode="reflect")
    v = gm.ones(2, 9, dtype=gm.float64, requires_grad=True)
    (g,) = gm.autograd.grad(y, x, grad_outputs=v, create_graph=True)
    # out positions -3..5 read input [3, 2, 1, 0, 1, 2, 3, 2, 1]: counts 1, 3, 3, 2
    counts = np.array([1.0, 3.0, 3.0, 2.0])
    assert_close(g, np.broadcast_to(counts, (2, 4)))
    assert g.requires_grad


# ---- hypothesis: random shapes and dims -----------------------------------------------------

def _arr(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@given(shape=shapes(1, 3, max_side=4), n=st.integers(1, 3), data=st.data())
def test_cat_random(shape, n, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    shp = [list(shape) for _ in sizes]
    for s, k in zip(shp, sizes):
        s[dim] = k
    arrays = [_arr(tuple(s), i) for i, s in enumerate(shp)]
    check_op(lambda *t: gm.cat(list(t), dim), lambda *a: np.concatenate(a, dim), None,
             arrays=arrays, gradgrad=False)


@given(shape=shapes(0, 3, max_side=4), n=st.integers(1, 3), data=st.data())
def test_stack_random(shape, n, data):
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    arrays = [_arr(shape, i) for i in range(n)]
    check_op(lambda *t: gm.stack(list(t), dim), lambda *a: np.stack(a, dim), None,
             arrays=arrays, gradgrad=False)


@given(shape=shapes(1, 3, max_side=6), data=st.data())
def test_split_chunk_random(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    size = data.draw(st.integers(1, 7))
    cuts = list(range(size, n, size))
    check_op(lambda a: a.split(size, dim), lambda a: tuple(np.split(a, cuts, dim)), None,
             arrays=[_arr(shape, 0)], gradgrad=False)
    chunks = data.draw(st.integers(1, 7))
    c = -(-n // chunks)
    check_op(lambda a: a.chunk(chunks, dim),
             lambda a: tuple(np.split(a, list(range(c, n, c)), dim)), None,
             arrays=[_arr(shape, 1)], grad=False)


@given(shape=shapes(1, 4, max_side=4), data=st.data())
def test_flip_roll_permute_transpose_random(shape, data):
    nd = len(shape)
    dims = data.draw(st.lists(st.integers(0, nd - 1), unique=True, max_size=nd))
    a = _arr(shape, 0)
    check_op(lambda t: t.flip(dims), lambda x: np.flip(x, tuple(dims)), None, arrays=[a],
             gradgrad=False)
    shifts = data.draw(st.lists(st.integers(-6, 6), min_size=len(dims), max_size=len(dims)))
    check_op(lambda t: t.roll(shifts, dims), lambda x: np.roll(x, shifts, tuple(dims)), None,
             arrays=[a], gradgrad=False)
    perm = data.draw(st.permutations(range(nd)))
    check_op(lambda t: t.permute(*perm), lambda x: x.transpose(perm), None, arrays=[a],
             gradgrad=False)
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    check_op(lambda t: t.transpose(d0, d1), lambda x: np.swapaxes(x, d0, d1), None, arrays=[a],
             gradgrad=False)


@given(shape=shapes(0, 4, max_side=3), data=st.data())
def test_squeeze_unsqueeze_reshape_expand_random(shape, data):
    nd = len(shape)
    a = _arr(shape, 0)
    d = data.draw(st.integers(-nd - 1, nd))
    check_op(lambda t: t.unsqueeze(d), lambda x: np.expand_dims(x, d), None, arrays=[a],
             gradgrad=False)
    if nd:
        sq = data.draw(st.integers(-nd, nd - 1))
        np_sq = (lambda x: np.squeeze(x, sq)) if shape[sq] == 1 else (lambda x: x)
        check_op(lambda t: t.squeeze(sq), np_sq, None, arrays=[a], gradgrad=False)
    flat = int(np.prod(shape))
    new = data.draw(st.permutations(list(shape) + [1]))
    check_op(lambda t: t.reshape(*new), lambda x: x.reshape(new), None, arrays=[a],
             gradgrad=False)
    check_op(lambda t: t.reshape(-1), lambda x: x.reshape(flat), None, arrays=[a], grad=False)
    lead = data.draw(st.integers(1, 3))
    target = (lead,) + tuple(data.draw(st.integers(1, 3)) if s == 1 else s for s in shape)
    check_op(lambda t: t.expand(*target), lambda x: np.broadcast_to(x, target), None,
             arrays=[a], gradgrad=False)


@given(shape=shapes(1, 3, min_side=2, max_side=4), data=st.data())
def test_pad_random(shape, data):
    k = data.draw(st.integers(1, len(shape)))
    mode = data.draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    pad = []
    for i in range(k):
        n = shape[-1 - i]
        hi = n - 1 if mode == "reflect" else n if mode == "circular" else 3
        lo = -(n // 2) if mode == "constant" else 0
        pad += [data.draw(st.integers(lo, hi)), data.draw(st.integers(lo, hi))]
    check_op(lambda t: gm.pad(t, pad, mode=mode), lambda x: _np_pad(x, pad, mode), None,
             arrays=[_arr(shape, 0)], gradgrad=False)


# ---- dtype promotion, views, errors -------------------------------------------------------

def test_cat_stack_promote_dtypes():
    i = gm.tensor([1, 2])
    f = gm.tensor([0.5])
    assert gm.cat([i, f]).dtype == gm.float32
    assert gm.cat([f, f.double()]).dtype == gm.float64
    assert gm.cat([gm.tensor([True]), i]).dtype == gm.int64
    assert gm.stack([gm.tensor([1, 2]), gm.tensor([0.5, 1.5])]).dtype == gm.float32
    # gradient flows back in each input's own dtype
    a = gm.tensor([1.0], requires_grad=True)
    b = gm.tensor([2.0], dtype=gm.float64, requires_grad=True)
    (gm.cat([a, b]) * 3).sum().backward()
    assert a.grad.dtype == gm.float32 and b.grad.dtype == gm.float64
    assert a.grad.tolist() == [3.0] and b.grad.tolist() == [3.0]


def test_cat_skips_legacy_empty_1d():
    x = gm.ones(2, 3, requires_grad=True)
    out = gm.cat([gm.zeros(0), x], 0)
    assert out.shape == (2, 3)
    out.sum().backward()
    assert x.grad.tolist() == [[1.0] * 3] * 2


def test_views_share_memory_and_version():
    x = gm.arange(24.0).reshape(2, 3, 4)
    views = [x.reshape(6, 4), x.view(-1), x.permute(2, 0, 1), x.transpose(0, 1), x[0],
             x[:, 1:, ::-2], x.unsqueeze(0), x[None].squeeze(0), x.split(1, 0)[1],
             x.chunk(2, 2)[0], x.unbind(1)[2], x.flatten(0, 1), x.movedim(0, 2),
             x[:1].expand(5, 3, 4)]
    before = [v.data.copy() for v in views]
    x.data[...] += 100.0  # an in-place edit of the base is visible through every view
    for v, b in zip(views, before):
        assert_close(v, b + 100.0)
    versions = [v._version_value for v in views]
    x.add_(1.0)
    assert all(v._version_value == old + 1 for v, old in zip(views, versions))
    assert np.shares_memory(x.unbind(0)[1].data, x.data)


def test_copies_do_not_alias():
    x = gm.arange(6.0).reshape(2, 3)
    outs = [x.flip(0), x.roll(1), x.repeat(1, 1), gm.cat([x]), gm.stack([x]), gm.pad(x, (0, 0)),
            gm.pad(x, (0, 0), mode="reflect")]
    for o in outs:
        assert not np.shares_memory(o.data, x.data)


def test_split_grad_partial_use():
    x = gm.randn(5, 3, dtype=gm.float64, requires_grad=True)
    a, b, c = x.split(2)
    (b * 2).sum().backward()
    expected = np.zeros((5, 3))
    expected[2:4] = 2
    assert_close(x.grad, expected)


@pytest.mark.parametrize("fn, match", [
    (lambda: gm.cat([]), "non-empty"),
    (lambda: gm.cat(gm.zeros(3)), "list or tuple"),
    (lambda: gm.cat([gm.zeros(2, 3), np.zeros((2, 3))]), "element 1"),
    (lambda: gm.cat([gm.zeros(2, 3), gm.zeros(2, 4)]), r"dimension 0.*\(2, 4\)"),
    (lambda: gm.cat([gm.zeros(2, 3), gm.zeros(2, 3, 1)], 1), "must match"),
    (lambda: gm.cat([gm.tensor(1.0)]), "zero-dimensional"),
    (lambda: gm.cat([gm.zeros(2, 3)], 2), "out of range"),
    (lambda: gm.stack([gm.zeros(2, 3), gm.zeros(3, 2)]), r"\(3, 2\) at entry 1"),
    (lambda: gm.stack([gm.zeros(2)], 3), "out of range"),
    (lambda: gm.zeros(5).split([2, 2]), r"sum to.*\(5\)"),
    (lambda: gm.zeros(5).split(0), "positive"),
    (lambda: gm.zeros(5).chunk(0), "positive"),
    (lambda: gm.zeros(2, 3).repeat(2), "can not be smaller"),
    (lambda: gm.zeros(2, 3).roll((1, 2), 0), "same length"),
    (lambda: gm.zeros(2, 3).flatten(1, 0), "cannot come after"),
    (lambda: gm.zeros(2, 12).unflatten(1, (5, -1)), "multiply"),
    (lambda: gm.zeros(2, 3).movedim((0, 1), 0), "same number"),
    (lambda: gm.pad(gm.zeros(2, 3), (1,)), "even"),
    (lambda: gm.pad(gm.zeros(3), (1, 1, 1, 1)), "only 1"),
    (lambda: gm.pad(gm.zeros(1, 3), (3, 0), mode="reflect"), r"smaller than.*\(3\)"),
    (lambda: gm.pad(gm.zeros(1, 3), (4, 0), mode="circular"), "at most"),
    (lambda: gm.pad(gm.zeros(1, 3), (-1, 0), mode="replicate"), "negative padding"),
    (lambda: gm.pad(gm.zeros(1, 3), (-2, -2)), "negative size"),
    (lambda: gm.pad(gm.zeros(1, 3), (1, 1), mode="wrap"), "unknown mode"),
])
def test_shape_errors(fn, match):
    with pytest.raises((RuntimeError, TypeError, IndexError, ValueError), match=match):
        fn()


@pytest.mark.skipif(not gm.cuda.is_available(), reason="needs a CUDA device")
def test_cat_stack_mixed_devices_name_both():
    for op in (gm.cat, gm.stack):
        with pytest.raises(RuntimeError, match=r"cpu.*cuda:0"):
            op([gm.zeros(2), gm.zeros(2, device="cuda")])


ZERO_D_DIM_OPS = {  # issue 11.13: a 0-d tensor takes dim 0 or -1, anything else is an IndexError
    "squeeze": lambda m, x, d: x.squeeze(d),
    "squeeze_tuple": lambda m, x, d: x.squeeze((d,)),
    "unsqueeze": lambda m, x, d: x.unsqueeze(d),
    "sum": lambda m, x, d: x.sum(d),
    "softmax": lambda m, x, d: x.softmax(d),
    "log_softmax": lambda m, x, d: x.log_softmax(d),
    "flatten": lambda m, x, d: x.flatten(d),
    "transpose": lambda m, x, d: x.transpose(d, 0),
    "flip": lambda m, x, d: x.flip((d,)),
    "roll": lambda m, x, d: x.roll(1, d),
    "unbind": lambda m, x, d: x.unbind(d),
    "movedim": lambda m, x, d: x.movedim(d, 0),
    "index_select": lambda m, x, d: x.index_select(d, m.tensor([0])),
    "cumsum": lambda m, x, d: x.cumsum(d),
    "argmax": lambda m, x, d: x.argmax(d),
}


@pytest.mark.skipif(torch is None, reason="torch is the oracle")
@pytest.mark.parametrize("op", sorted(ZERO_D_DIM_OPS))
def test_zero_d_dim_range_matches_torch(op):
    f = ZERO_D_DIM_OPS[op]
    for d in (0, -1, 1, -2, 10):
        try:
            expected = f(torch, torch.tensor(2.0), d)
        except IndexError:
            with pytest.raises(IndexError):
                f(gm, gm.tensor(2.0), d)
            continue
        got = f(gm, gm.tensor(2.0), d)
        assert tuple(got.shape) == tuple(expected.shape) and got.tolist() == expected.tolist()


def test_squeeze_zero_d_out_of_range():
    with pytest.raises(IndexError, match="expected in \\[-1, 0\\]"):
        gm.tensor(1.0).squeeze(10)
    assert gm.tensor(1.0).squeeze(-1).shape == ()
