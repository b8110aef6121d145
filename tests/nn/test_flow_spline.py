"""Rational-quadratic spline (gmcore.functional.spline) and the spline flow layers: identity at
zero parameters, monotone, end knots fixed, invertible to 1e-5 in float32 (tails, knots and
bounds included), log-derivative = autodiff slogdet, C1 at the knots, gradients and double
gradients against finite differences, clear errors."""
import numpy as np
import pytest
from flow_checks import check_invertible, check_logdet

import gmcore as gm
from gmcore.functional.spline import _knots
from gmcore.nn.flows import Flow, RQSplineAutoregressive, RQSplineCoupling
from gmcore.testing import gradcheck, gradgradcheck

spline = gm.nn.functional.rational_quadratic_spline
B = 3.0


def _params(shape, k, rng, scale=1.5, dtype="float32"):
    def t(*s):
        return gm.tensor(rng.normal(0, scale, size=shape + s), dtype=dtype)
    return t(k), t(k), t(k - 1)


def _shared_params(n, k, rng, dtype="float64"):
    """The same spline for n elements (rows repeated): one monotone map evaluated at n points."""
    w, h, d = (rng.normal(0, 1.5, size=(1, s)) for s in (k, k, k - 1))
    return [gm.tensor(np.repeat(a, n, 0), dtype=dtype) for a in (w, h, d)]


class _Elementwise(Flow):
    """The spline as a Flow on (B, D) with fixed parameters: (B, D, K) per example, or (D, K)
    shared by every example (then flow_checks may slice the batch)."""

    def __init__(self, w, h, d):
        super().__init__()
        self.p = (w, h, d)

    def _p(self, x):
        return [p if p.ndim == 3 else p.expand(x.shape[0], *p.shape) for p in self.p]

    def forward(self, x, context=None):
        y, ld = spline(x, *self._p(x), tail_bound=B)
        return y, ld.sum(1)

    def inverse(self, z, context=None):
        x, ld = spline(z, *self._p(z), inverse=True, tail_bound=B)
        return x, ld.sum(1)


def test_zero_parameters_give_the_identity():
    x = gm.tensor(np.linspace(-5, 5, 41), dtype="float32")
    z = gm.zeros(41, 6)
    y, ld = spline(x, z, z, gm.zeros(41, 5), tail_bound=B)
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(ld.detach().numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 7])
def test_monotone_with_fixed_ends_and_identity_tails(k):
    rng = np.random.default_rng(k)
    x = np.linspace(-4.5, 4.5, 901)
    y, ld = spline(gm.tensor(x), *_shared_params(x.size, k, rng), tail_bound=B)
    y = y.numpy()
    assert np.all(np.diff(y) > 0)
    out = np.abs(x) > B
    np.testing.assert_array_equal(y[out], x[out])
    np.testing.assert_array_equal(ld.numpy()[out], 0.0)
    ends, _ = spline(gm.tensor([-B, B]), *_shared_params(2, k, rng), tail_bound=B)
    np.testing.assert_allclose(ends.numpy(), [-B, B], atol=1e-12)


def _knot_points(w, h, d, inverse=False):
    """Every knot of each element's spline (as inputs for the forward or the inverse)."""
    knots, _ = _knots(h if inverse else w, 1e-3, B)
    return knots


@pytest.mark.parametrize("dtype,scale,atol", [("float32", 0.5, 1e-5), ("float64", 2.5, 1e-10)])
def test_inverse_including_tails_knots_and_bounds(dtype, scale, atol):
    # The inverse's error is y's rounding error over the slope dy/dx: float32 is held to 1e-5
    # on moderate parameters (slopes above ~0.02); float64 checks the algebra on wild ones
    # (slopes down to ~1e-5).
    rng = np.random.default_rng(0)
    k, n = 6, 40
    w, h, d = _params((n,), k, rng, scale=scale, dtype=dtype)
    x_knots = _knot_points(w, h, d).numpy()            # (n, k + 1): -B, interior knots, B
    cols = [rng.uniform(-2.9, 2.9, n), rng.uniform(3.1, 6, n), -rng.uniform(3.1, 6, n)]
    cols += [x_knots[:, j] for j in range(k + 1)]
    x = gm.tensor(np.stack(cols, 1), dtype=dtype)      # (n, 3 + k + 1)
    rep = x.shape[1]

    def per_point(t):
        return gm.tensor(np.repeat(t.numpy()[:, None], rep, 1))

    check_invertible(_Elementwise(per_point(w), per_point(h), per_point(d)), x, atol=atol)
    # and the inverse's own knots (the y knots) map back exactly
    y_knots = _knot_points(w, h, d, inverse=True).numpy()
    f = _Elementwise(*(gm.tensor(np.repeat(t.numpy()[:, None], k + 1, 1)) for t in (w, h, d)))
    with gm.no_grad():
        x2, _ = f.inverse(gm.tensor(y_knots))
        y2, _ = f(x2)
    np.testing.assert_allclose(y2.numpy(), y_knots, atol=atol, rtol=0)


def test_logdet_matches_autodiff_jacobian():
    rng = np.random.default_rng(1)
    x = gm.tensor(np.concatenate([rng.uniform(-2.5, 2.5, (3, 3)), [[4.0], [-3.5], [0.0]]], 1))
    check_logdet(_Elementwise(*_params((4,), 5, rng, dtype="float64")), x)


def test_derivative_is_continuous_at_knots():
    rng = np.random.default_rng(2)
    k = 5
    w, h, d = _shared_params(1, k, rng)
    knots = _knot_points(w, h, d).numpy()[0]
    eps = 1e-10      # the one-sided slopes differ by O(eps / bin width^2): tiny bins here
    pts = np.stack([knots - eps, knots + eps], 1).reshape(-1)     # both sides of each knot
    y, ld = spline(gm.tensor(pts), *_shared_params(pts.size, k, np.random.default_rng(2)),
                   tail_bound=B)
    ld = ld.numpy().reshape(-1, 2)
    np.testing.assert_allclose(ld[:, 0], ld[:, 1], atol=1e-5)
    # slope 1 at the end knots (the tails' slope) and softplus-derived slopes inside
    np.testing.assert_allclose(ld[[0, -1]], 0.0, atol=1e-5)
    slopes = 1e-3 + np.log1p(np.exp(d.numpy()[0] + np.log(np.expm1(1 - 1e-3))))
    np.testing.assert_allclose(np.exp(ld[1:-1, 0]), slopes, rtol=1e-5)


@pytest.mark.parametrize("inverse", [False, True])
def test_gradients_in_inputs_and_parameters(inverse):
    rng = np.random.default_rng(3)
    x = gm.tensor(np.array([[-2.0, 0.3, 1.7], [3.5, -0.8, 2.9]]), requires_grad=True)
    w, h, d = (t.requires_grad_(True) for t in _params((2, 3), 4, rng, dtype="float64"))

    def fn(x, w, h, d):
        return spline(x, w, h, d, inverse=inverse, tail_bound=B)

    assert gradcheck(fn, (x, w, h, d), max_full=80)
    assert gradgradcheck(fn, (x, w, h, d), n_directions=2, max_full=0)


def test_errors_name_the_problem():
    x = gm.zeros(4, 3)
    with pytest.raises(ValueError, match=r"derivatives .*\(4, 3, 4\)"):
        spline(x, gm.zeros(4, 3, 5), gm.zeros(4, 3, 5), gm.zeros(4, 3, 5))
    with pytest.raises(ValueError, match="widths"):
        spline(x, gm.zeros(4, 5), gm.zeros(4, 3, 5), gm.zeros(4, 3, 4))
    with pytest.raises(ValueError, match="tail_bound"):
        spline(x, gm.zeros(4, 3, 5), gm.zeros(4, 3, 5), gm.zeros(4, 3, 4), tail_bound=0)
    with pytest.raises(ValueError, match="min_bin_width"):
        spline(x, gm.zeros(4, 3, 5), gm.zeros(4, 3, 5), gm.zeros(4, 3, 4), min_bin_width=0.3)
    with pytest.raises(TypeError, match="floating"):
        spline(x.long(), gm.zeros(4, 3, 5), gm.zeros(4, 3, 5), gm.zeros(4, 3, 4))


def _randomize(flow, seed, scale=0.2):
    """Move a zero-initialised flow away from the identity (log-dets of a few nats: a larger
    scale gives slopes so flat that float32 rounding alone breaks 1e-5 inversion)."""
    g = gm.Generator().manual_seed(seed)
    with gm.no_grad():
        for p in flow.parameters():
            p.add_(gm.randn(*p.shape, generator=g, dtype=p.dtype) * scale)
    return flow


@pytest.mark.parametrize("make", [
    lambda: RQSplineCoupling([1, 0, 0, 1, 0], hidden=16, num_bins=5, context_features=2),
    lambda: RQSplineAutoregressive(5, hidden=16, num_bins=5, context_features=2,
                                   ordering=[3, 0, 4, 1, 2]),
], ids=["coupling", "autoregressive"])
def test_spline_layers_invert_and_logdet(make):
    gm.manual_seed(0)
    flow = _randomize(make(), 1)
    rng = np.random.default_rng(4)
    x = gm.tensor(rng.normal(0, 2, (6, 5)).astype(np.float32))     # some in the tails
    ctx = gm.tensor(rng.normal(size=(6, 2)).astype(np.float32))
    check_invertible(flow, x, ctx, atol=1e-5)
    flow64 = flow.to(gm.float64)
    check_logdet(flow64, x[:3].double(), ctx[:3].double())


def test_coupling_keeps_the_conditioning_half_and_starts_at_identity():
    gm.manual_seed(0)
    flow = RQSplineCoupling([0, 1, 1], hidden=8, num_bins=4)
    x = gm.randn(4, 3)
    z, ld = flow(x)
    np.testing.assert_allclose(z.detach().numpy(), x.numpy(), atol=1e-5)
    np.testing.assert_allclose(ld.detach().numpy(), 0.0, atol=1e-5)
    z, _ = _randomize(flow, 2)(x)
    np.testing.assert_array_equal(z.detach().numpy()[:, 1:], x.numpy()[:, 1:])
    assert np.abs(z.detach().numpy()[:, 0] - x.numpy()[:, 0]).max() > 1e-3
    with pytest.raises(ValueError, match="mask"):
        RQSplineCoupling([1, 1, 1])
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        flow(gm.randn(4, 2))
