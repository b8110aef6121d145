"""softmax / log_softmax, dropout, triu / tril, hardtanh / relu6 / softsign."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
from gmcore.testing import assert_close, gradcheck, gradgradcheck
from helpers import check_op, seeds, shapes


def _torch(name, **kw):
    def fn(*args):
        import torch
        f = getattr(torch, name, None) or getattr(torch.nn.functional, name)
        return f(*args, **kw)
    return fn


def _np_softmax(a, dim):
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def _np_log_softmax(a, dim):
    z = a - a.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


# ---- softmax / log_softmax ------------------------------------------------------------------

@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax(device, dim):
    check_op(lambda x: gm.softmax(x, dim), lambda a: _np_softmax(a, dim), [(3, 5, 7)],
             device=device, torch_fn=_torch("softmax", dim=dim))
    check_op(lambda x: x.softmax(dim), lambda a: _np_softmax(a, dim), [(2, 3, 5)], seed=1,
             device=device)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_log_softmax(device, dim):
    check_op(lambda x: gm.log_softmax(x, dim), lambda a: _np_log_softmax(a, dim), [(3, 5, 7)],
             device=device, torch_fn=_torch("log_softmax", dim=dim))
    check_op(lambda x: x.log_softmax(dim), lambda a: _np_log_softmax(a, dim), [(2, 3, 5)],
             seed=1, device=device)


@given(shape=shapes(min_dims=1), data=st.data(), seed=seeds)
def test_softmax_rows_sum_to_one(shape, data, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = gm.tensor(np.random.default_rng(seed).normal(0, 30, shape), dtype=gm.float64)
    y = gm.softmax(x, dim)
    assert_close(y.sum(dim), np.ones(np.delete(np.array(shape), dim % len(shape))))
    assert_close(gm.log_softmax(x, dim).exp(), y, rtol=1e-12, atol=1e-15)


def test_softmax_is_stable_for_huge_logits():
    x = gm.tensor([[0.0, 1000.0, -1000.0], [1e30, 1e30, 0.0]], requires_grad=True)
    y = gm.softmax(x, 1)
    assert y.tolist() == [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]
    ly = gm.log_softmax(x, 1)
    assert ly[0].tolist() == [-1000.0, 0.0, -2000.0]
    (g,) = gm.autograd.grad((ly * gm.tensor([1.0, 2.0, 3.0])).sum(), x)
    assert bool(gm.isfinite(g).all())


def test_softmax_edge_shapes_and_dtypes():
    s = gm.tensor(3.0, dtype=gm.float64, requires_grad=True)
    assert gm.softmax(s, 0).item() == 1.0 and gm.log_softmax(s, -1).item() == 0.0
    assert gradgradcheck(lambda t: gm.softmax(t, 0) * t, (s,))
    assert gm.softmax(gm.zeros(0, 3), 1).shape == (0, 3)
    y = gm.softmax(gm.tensor([1, 2]), 0, dtype=gm.float64)
    assert y.dtype == gm.float64
    assert gm.softmax(gm.ones(2, 3), 1).dtype == gm.float32
    with pytest.raises(TypeError, match="floating point input, got gmcore.int64"):
        gm.softmax(gm.tensor([1, 2]), 0)
    with pytest.raises(IndexError, match="dim 2 is out of range"):
        gm.softmax(gm.ones(2, 3), 2)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        assert_close(gm.softmax(gm.ones(2, 4)), np.full((2, 4), 0.25))


# ---- dropout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(device, p):
    x = gm.ones(200_000, device=device)
    y = gm.dropout(x, p, generator=gm.Generator(device).manual_seed(1))
    values = y.cpu().numpy()
    kept = values != 0
    assert abs(kept.mean() - (1 - p)) < 0.01
    assert np.allclose(values[kept], 1 / (1 - p))
    assert abs(values.mean() - 1.0) < 0.03  # inverted dropout preserves the mean


def test_dropout_seeded_reproducible(device):
    x = gm.randn(7, 9, device=device)

    def draw(seed):
        return gm.dropout(x, 0.3, generator=gm.Generator(device).manual_seed(seed)).cpu().numpy()
    assert (draw(4) == draw(4)).all()
    assert not (draw(4) == draw(5)).all()
    gm.manual_seed(11)
    a = gm.dropout(x, 0.3).cpu().numpy()
    gm.manual_seed(11)
    assert (a == gm.dropout(x, 0.3).cpu().numpy()).all()


def test_dropout_identities_and_gradients(device):
    x = gm.randn(4, 5, dtype=gm.float64, device=device, requires_grad=True)
    assert gm.dropout(x, 0.0) is x
    assert gm.dropout(x, 0.7, training=False) is x
    z = gm.dropout(x, 1.0)
    assert z.tolist() == [[0.0] * 5] * 4 and z.requires_grad
    g = gm.Generator(device).manual_seed(0)
    y = gm.dropout(x, 0.4, generator=g)
    y.sum().backward()
    assert_close(x.grad, (y / x).detach())  # gradient is the mask times 1/(1-p)
    fn = lambda t: gm.dropout(t, 0.4, generator=gm.Generator(device).manual_seed(3))  # noqa
    assert gradcheck(lambda t: fn(t) * t, (x,))
    assert gradgradcheck(lambda t: fn(t) * t, (x,))
    assert gm.dropout(gm.ones(3, dtype=gm.float64), 0.5).dtype == gm.float64


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        gm.dropout(gm.ones(3), p)


def test_dropout_rejects_integer_input():
    with pytest.raises(TypeError, match="floating point input, got gmcore.int64"):
        gm.dropout(gm.tensor([1, 2]), 0.5)


# ---- triu / tril -------------------------------------------------------------------------------

@pytest.mark.parametrize("diagonal", [-2, -1, 0, 1, 3])
def test_triu_tril(device, diagonal):
    check_op(lambda x: gm.triu(x, diagonal), lambda a: np.triu(a, diagonal), [(2, 3, 4, 5)],
             device=device, torch_fn=_torch("triu", diagonal=diagonal))
    check_op(lambda x: x.tril(diagonal), lambda a: np.tril(a, diagonal), [(5, 3)],
             device=device, torch_fn=_torch("tril", diagonal=diagonal))


@given(shape=shapes(min_dims=2, max_dims=4), k=st.integers(-4, 4))
def test_triu_tril_match_numpy(shape, k):
    a = np.arange(np.prod(shape)).reshape(shape)
    assert (gm.triu(gm.tensor(a), k).numpy() == np.triu(a, k)).all()
    assert (gm.tril(gm.tensor(a > 3), k).numpy() == np.tril(a > 3, k)).all()


def test_triu_errors():
    with pytest.raises(RuntimeError, match="at least 2 dimensions, got shape \\(3,\\)"):
        gm.triu(gm.ones(3))
    with pytest.raises(TypeError, match="diagonal must be an int"):
        gm.tril(gm.ones(3, 3), 0.5)


# ---- clipping activations ----------------------------------------------------------------------

def test_hardtanh_relu6_softsign(device):
    check_op(lambda x: gm.hardtanh(x, -0.5, 1.0), lambda a: np.clip(a, -0.5, 1.0), [(3, 5, 7)],
             device=device, torch_fn=_torch("hardtanh", min_val=-0.5, max_val=1.0))
    check_op(gm.relu6, lambda a: np.clip(a, 0, 6), [(4, 5)], low=-3, high=9, device=device,
             torch_fn=_torch("relu6"))
    check_op(gm.softsign, lambda a: a / (1 + np.abs(a)), [(4, 5)], device=device,
             torch_fn=_torch("softsign"))


def test_hardtanh_gradient_is_zero_on_the_bounds():
    # PyTorch's hardtanh_backward uses the open interval (unlike clamp's closed one)
    x = gm.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=gm.float64, requires_grad=True)
    gm.hardtanh(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="cannot be greater than max_val"):
        gm.hardtanh(x, 1.0, -1.0)


def test_mish_hardswish_celu_modules():
    x = gm.tensor([-4.0, -1.0, 0.5, 4.0])
    assert gm.nn.Mish()(x).tolist() == gm.mish(x).tolist()
    assert gm.nn.Hardswish()(x).tolist() == gm.hardswish(x).tolist()
    assert gm.nn.CELU(0.5)(x).tolist() == gm.celu(x, 0.5).tolist()
    assert repr(gm.nn.CELU(0.5)) == "CELU(alpha=0.5)"
