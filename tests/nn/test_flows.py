"""Flow pieces: actnorm, invertible 1x1 conv (plain, LU), squeeze; ActNorm2d and InvConv2d1x1.

Every log-det is checked against log|det| of the full per-example Jacobian built row by row by
autodiff (float64), and every inverse against the forward map.
"""
import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close, gradcheck


def _jacobian_logdet(f, x):
    """Per-example log|det J| of f on (B, ...) inputs (same number of elements per example out)."""
    x = gm.tensor(x, requires_grad=True)
    y = f(x)
    y = y[0] if isinstance(y, tuple) else y
    bsz = x.shape[0]
    d = x.numel() // bsz
    yf = y.reshape((bsz, -1))
    assert yf.shape[1] == d
    jac = np.zeros((bsz, d, d))
    for i in range(d):  # examples are independent: one backward gives row i of every example
        (gi,) = gm.autograd.grad(yf[:, i].sum(), [x], retain_graph=True)
        jac[:, i, :] = gi.numpy().reshape(bsz, d)
    return np.linalg.slogdet(jac)[1]


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---- actnorm --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (3, 2), (2, 2, 5)])
@pytest.mark.parametrize("inverse", [False, True])
def test_actnorm_logdet_and_inverse(shape, inverse):
    rng = _rng(1)
    c = shape[1]
    loc = gm.tensor(rng.standard_normal(c))
    scale = gm.tensor(rng.standard_normal(c) * 2)  # negative entries: log|scale|
    x = rng.standard_normal(shape)
    f = lambda t: F.actnorm(t, loc, scale, inverse=inverse)  # noqa: E731
    y, ld = f(gm.tensor(x))
    np.testing.assert_allclose(ld.numpy(), _jacobian_logdet(f, x), rtol=1e-10, atol=1e-10)
    back, ld2 = F.actnorm(y, loc, scale, inverse=not inverse)
    assert_close(back, gm.tensor(x), rtol=1e-12, atol=1e-12)
    assert_close(ld + ld2, gm.zeros(shape[0], dtype=gm.float64), atol=1e-12)


def test_actnorm_gradcheck():
    rng = _rng(2)
    ts = [gm.tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 2, 2), (3,), (3,)]]
    assert gradcheck(lambda x, l, s: F.actnorm(x, l, s), ts)
    assert gradcheck(lambda x, l, s: F.actnorm(x, l, s, inverse=True), ts)


def test_actnorm_init_standardises():
    x = gm.tensor(_rng(3).standard_normal((64, 3, 4, 4)) * [[[[3.0]], [[0.5]], [[10.0]]]] + 4)
    loc, scale = F.actnorm_init(x)
    y, _ = F.actnorm(x, loc, scale)
    a = y.numpy()
    np.testing.assert_allclose(a.mean((0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(a.std((0, 2, 3)), 1, atol=1e-5)


def test_actnorm_errors():
    with pytest.raises(ValueError, match="loc must have shape"):
        F.actnorm(gm.zeros(2, 3, 4, 4), gm.zeros(4), gm.ones(3))


# ---- invertible 1x1 convolution ---------------------------------------------------------------

@pytest.mark.parametrize("inverse", [False, True])
def test_invconv_logdet_and_inverse(inverse):
    rng = _rng(4)
    w = gm.tensor(rng.standard_normal((3, 3)))
    x = rng.standard_normal((2, 3, 2, 2))
    f = lambda t: F.invconv1x1(t, w, inverse=inverse)  # noqa: E731
    y, ld = f(gm.tensor(x))
    np.testing.assert_allclose(ld.numpy(), _jacobian_logdet(f, x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ld.numpy(), (-1 if inverse else 1) * 4 * np.log(abs(np.linalg.det(
        w.numpy()))), rtol=1e-10)
    back, ld2 = F.invconv1x1(y, w, inverse=not inverse)
    assert_close(back, gm.tensor(x), rtol=1e-10, atol=1e-10)
    assert_close(ld + ld2, gm.zeros(2, dtype=gm.float64), atol=1e-10)


def test_invconv_matches_conv2d():
    rng = _rng(5)
    w = gm.tensor(rng.standard_normal((4, 4)))
    x = gm.tensor(rng.standard_normal((2, 4, 3, 5)))
    y, _ = F.invconv1x1(x, w)
    assert_close(y, F.conv2d(x, w.reshape((4, 4, 1, 1))), rtol=1e-10, atol=1e-10)


def test_lu_decompose_roundtrip_and_logdet():
    rng = _rng(6)
    w = gm.tensor(rng.standard_normal((5, 5)))
    p, lower, upper, sign_s, log_s = F.lu_decompose(w)
    assert_close(F.lu_weight(p, lower, upper, sign_s, log_s), w, rtol=1e-10, atol=1e-10)
    pm = p.numpy()
    assert np.all(pm.sum(0) == 1) and np.all(pm.sum(1) == 1)  # a permutation
    np.testing.assert_allclose(log_s.numpy().sum(), np.linalg.slogdet(w.numpy())[1], rtol=1e-10)
    with pytest.raises(ValueError, match="singular"):
        F.lu_decompose(gm.zeros(3, 3))


@pytest.mark.parametrize("inverse", [False, True])
def test_invconv_lu_logdet_inverse_and_grads(inverse):
    rng = _rng(7)
    c = 3
    p, lower, upper, sign_s, log_s = F.lu_decompose(gm.tensor(rng.standard_normal((c, c))))
    lower = gm.tensor(rng.standard_normal((c, c)))  # the unused triangles must not matter
    upper = gm.tensor(rng.standard_normal((c, c)))
    x = rng.standard_normal((2, c, 2, 1))
    f = lambda t: F.invconv1x1_lu(t, p, lower, upper, sign_s, log_s, inverse=inverse)  # noqa
    y, ld = f(gm.tensor(x))
    np.testing.assert_allclose(ld.numpy(), _jacobian_logdet(f, x), rtol=1e-9, atol=1e-9)
    back, _ = F.invconv1x1_lu(y, p, lower, upper, sign_s, log_s, inverse=not inverse)
    assert_close(back, gm.tensor(x), rtol=1e-10, atol=1e-10)
    params = [t.detach().requires_grad_() for t in (lower, upper, log_s)]
    assert gradcheck(lambda lo, up, ls: F.invconv1x1_lu(gm.tensor(x), p, lo, up, sign_s, ls,
                                                        inverse=inverse), params)


# ---- squeeze ----------------------------------------------------------------------------------

def test_squeeze_layout_matches_pixel_unshuffle():
    x = gm.tensor(_rng(8).standard_normal((2, 3, 4, 6)))
    s = F.squeeze2d(x)
    assert s.shape == (2, 12, 2, 3)
    assert_close(s, F.pixel_unshuffle(x, 2))
    assert_close(F.unsqueeze2d(s), x, rtol=0, atol=0)
    assert_close(F.squeeze2d(F.unsqueeze2d(s)), s, rtol=0, atol=0)
    np.testing.assert_allclose(_jacobian_logdet(F.squeeze2d, _rng(9).standard_normal((1, 1, 2, 2))),
                               [0.0], atol=1e-12)


def test_squeeze_errors():
    with pytest.raises(ValueError, match="divisible"):
        F.squeeze2d(gm.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="divisible"):
        F.unsqueeze2d(gm.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.squeeze2d(gm.zeros(2, 4, 4))


# ---- modules ----------------------------------------------------------------------------------

def test_actnorm2d_data_dependent_init_once():
    an = gm.nn.ActNorm2d(3)
    assert not bool(an.initialized)
    x = gm.tensor(_rng(10).standard_normal((16, 3, 4, 4)) * 4 + 2, dtype=gm.float32)
    y, ld = an(x)
    assert bool(an.initialized) and ld.shape == (16,)
    np.testing.assert_allclose(y.detach().numpy().mean((0, 2, 3)), 0, atol=1e-5)
    loc = an.loc.detach().numpy().copy()
    an(x * 3)  # second call: no re-initialisation
    np.testing.assert_array_equal(an.loc.detach().numpy(), loc)
    x2, ld2 = an.inverse(y)
    assert_close(x2, x, rtol=1e-5, atol=1e-5)
    assert_close(ld + ld2, gm.zeros(16), atol=1e-5)
    assert "initialized" in an.state_dict()
    sorted_names = sorted(n for n, _ in an.named_parameters())
    assert sorted_names == ["loc", "scale"]


def test_actnorm2d_eval_does_not_initialise():
    an = gm.nn.ActNorm2d(2).eval()
    y, _ = an(gm.ones(2, 2, 2, 2))
    assert not bool(an.initialized)
    assert_close(y, gm.ones(2, 2, 2, 2))


def test_actnorm2d_trains():
    an = gm.nn.ActNorm2d(2)
    x = gm.randn(4, 2, 3, 3)
    y, ld = an(x)
    (y.sum() + ld.sum()).backward()
    assert an.loc.grad is not None and an.scale.grad is not None


@pytest.mark.parametrize("lu", [True, False])
def test_invconv2d1x1(lu):
    gm.manual_seed(0)
    conv = gm.nn.InvConv2d1x1(4, lu=lu, dtype=gm.float64)   # float32 by default
    x = _rng(11).standard_normal((2, 4, 1, 2))
    y, ld = conv(gm.tensor(x))
    np.testing.assert_allclose(ld.detach().numpy(), _jacobian_logdet(conv, x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ld.detach().numpy(), 0, atol=1e-10)  # a rotation at initialisation
    x2, ld2 = conv.inverse(y)
    assert_close(x2, gm.tensor(x), rtol=1e-10, atol=1e-10)
    assert_close(ld + ld2, gm.zeros(2, dtype=gm.float64), atol=1e-10)
    (y.sum() + ld.sum()).backward()
    names = sorted(n for n, _ in conv.named_parameters())
    assert names == (["log_s", "lower", "upper"] if lu else ["weight"])
    assert all(p.grad is not None for p in conv.parameters())
    if lu:
        assert sorted(n for n, _ in conv.named_buffers()) == ["p", "sign_s"]
        assert_close(conv.weight_matrix() @ conv.weight_matrix().mT,
                     gm.eye(4, dtype=gm.float64), atol=1e-10)


def test_glow_step_logdet():
    """actnorm -> invconv(LU) -> affine coupling -> squeeze: summed log-dets = full Jacobian's."""
    gm.manual_seed(1)
    an, conv = gm.nn.ActNorm2d(4).double(), gm.nn.InvConv2d1x1(4).double()
    w = gm.tensor(_rng(12).standard_normal((4, 2)) * 0.5)
    x = _rng(13).standard_normal((2, 4, 2, 2))
    an(gm.tensor(x))  # data-dependent init, then fixed

    def step(t):
        h, ld1 = an(t)
        h, ld2 = conv(h)
        xa, xb = h[:, :2], h[:, 2:]
        net = gm.einsum("oc,bchw->bohw", w, xa).tanh()
        yb, ld3 = F.affine_coupling(xb, net[:, :2], net[:, 2:], scale_fn="sigmoid")
        return F.squeeze2d(gm.cat([xa, yb], 1)), ld1 + ld2 + ld3

    _, ld = step(gm.tensor(x))
    np.testing.assert_allclose(ld.detach().numpy(), _jacobian_logdet(step, x), rtol=1e-9, atol=1e-9)
