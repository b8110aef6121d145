"""The simple flow transforms: LULinear, Permutation, ReversePermutation, ActNorm1d, Planar, Radial.

Every transform passes tests/flow_checks.py: inverse(forward(x)) == x (float32, 1e-5) and the
log-det equals slogdet of the autodiff Jacobian (float64). Planar and radial have no analytic
inverse: ``inverse`` raises, ``numerical_inverse`` is checked in its place.
"""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.flows import (ActNorm1d, Flow, FlowSequential, LULinear, NoAnalyticInverse,
                             Permutation, Planar, Radial, ReversePermutation)
from flow_checks import check_invertible, check_logdet


class _Solved(Flow):
    """A planar/radial layer with its numerical inverse standing in for ``inverse``."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def forward(self, x, context=None):
        return self.flow(x, context)

    def inverse(self, z, context=None):
        return self.flow.numerical_inverse(z, context)


def _x(b, d, dtype="float32", seed=0, scale=1.5):
    return gm.tensor(np.random.default_rng(seed).normal(0, scale, (b, d)), dtype=dtype)


def _randomize(module, seed=1, scale=0.5):
    """Every parameter set to random values (so checks do not run at an identity)."""
    rng = np.random.default_rng(seed)
    with gm.no_grad():
        for p in module.parameters():
            p.copy_(gm.tensor(rng.normal(0, scale, tuple(p.shape)), dtype=p.dtype))
    return module


def _lu(d, dtype, perm="random"):
    gm.manual_seed(3)
    return _randomize(LULinear(d, permutation=perm, dtype=dtype))


def _actnorm(d, dtype):
    an = ActNorm1d(d, dtype=dtype)
    an(_x(16, d, dtype, seed=5, scale=3.0) + 2)          # data-dependent initialisation
    return an


def _planar(d, dtype):
    gm.manual_seed(4)
    return _Solved(_randomize(Planar(d, dtype=dtype), scale=1.0))


def _radial(d, dtype):
    gm.manual_seed(5)
    return _Solved(_randomize(Radial(d, dtype=dtype), scale=1.0))


BUILDERS = {
    "lu": _lu,
    "lu-reverse": lambda d, dt: _lu(d, dt, "reverse"),
    "permutation": lambda d, dt: Permutation(np.random.default_rng(d).permutation(d)),
    "reverse": lambda d, dt: ReversePermutation(d),
    "actnorm1d": _actnorm,
    "planar": _planar,
    "radial": _radial,
    "stack": lambda d, dt: FlowSequential(_actnorm(d, dt), _planar(d, dt), _lu(d, dt), _radial(d, dt)),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("d", [2, 5])
def test_invertible_float32(name, d):
    flow = BUILDERS[name](d, "float32")
    check_invertible(flow, _x(7, d), atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_logdet_matches_autodiff_jacobian(name):
    flow = BUILDERS[name](4, "float64")
    check_logdet(flow, _x(3, 4, "float64", seed=2))


def test_planar_and_radial_have_no_analytic_inverse():
    for cls in (Planar, Radial):
        f = cls(2)
        with pytest.raises(NoAnalyticInverse, match=cls.__name__):
            f.inverse(gm.randn(3, 2))


def test_numerical_inverses_are_precise_in_float64():
    for make in (_planar, _radial):
        flow = make(4, "float64")
        x = _x(50, 4, "float64", seed=9, scale=3.0)
        with gm.no_grad():
            y, ld = flow(x)
            x2, ld2 = flow.inverse(y)
        assert np.abs(x2.numpy() - x.numpy()).max() < 1e-9
        assert np.abs(ld2.numpy() + ld.numpy()).max() < 1e-9


def test_planar_constraint_keeps_it_invertible():
    """u against w (w . u << -1) would fold the plane; u_hat keeps w . u_hat > -1."""
    f = Planar(2, dtype="float64")
    with gm.no_grad():
        f.w.copy_(gm.tensor([2.0, 0.0], dtype="float64"))
        f.u.copy_(gm.tensor([-5.0, 1.0], dtype="float64"))
        f.b.copy_(gm.tensor([0.3], dtype="float64"))
    assert float((f.w * f.u_hat()).sum()) > -1
    # along w the map is strictly increasing, and every log-det is finite
    x = gm.tensor(np.stack([np.linspace(-3, 3, 201), np.zeros(201)], 1), dtype="float64")
    with gm.no_grad():
        y, ld = f(x)
    assert (np.diff(y.numpy()[:, 0]) > 0).all() and np.isfinite(ld.numpy()).all()
    check_invertible(_Solved(f), x, atol=1e-9)


def test_radial_constraint_keeps_beta_above_minus_alpha():
    f = Radial(3, dtype="float64")
    with gm.no_grad():
        f.b.copy_(gm.tensor([-30.0], dtype="float64"))         # beta -> -alpha from above
    alpha, beta = (float(v.item()) for v in f.alpha_beta())
    assert beta > -alpha
    x = _x(20, 3, "float64", seed=4)
    with gm.no_grad():
        _, ld = f(x)
    assert np.isfinite(ld.numpy()).all()
    check_invertible(_Solved(f), x, atol=1e-8)


@pytest.mark.parametrize("cls", [Planar, Radial, LULinear, ActNorm1d])
def test_logdet_reaches_every_parameter(cls):
    gm.manual_seed(0)
    f = cls(3)
    y, ld = f(_x(8, 3) + 0.5)
    ((y * y).sum() + ld.sum()).backward()
    for name, p in f.named_parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0, name


def test_lulinear_permutation_and_errors():
    lin = LULinear(4, permutation=[2, 0, 3, 1])
    x = _x(3, 4)
    with gm.no_grad():
        y, ld = lin(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy()[:, [2, 0, 3, 1]])   # W = P at init
    assert ld.tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="permutation"):
        LULinear(3, permutation=[0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        LULinear(3, permutation="shuffle")
    with pytest.raises(ValueError, match="4 features"):
        lin(_x(2, 3))


def test_shape_errors_name_the_layer():
    for f, x in ((Planar(3), gm.randn(2, 4)), (Radial(3), gm.randn(2, 3, 1)),
                 (ActNorm1d(3), gm.randn(2, 3, 4)), (ReversePermutation(3), gm.randn(2, 2))):
        with pytest.raises(ValueError, match=type(f).__name__):
            f(x)


def test_permutation_works_on_channels_of_images():
    p = ReversePermutation(3)
    x = gm.randn(2, 3, 4, 4)
    y, ld = p(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy()[:, ::-1])
    check_invertible(p, x)
