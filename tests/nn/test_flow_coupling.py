"""Coupling flows (additive, affine; channel and checkerboard masks), NICE's scaling, the
multi-scale pieces (squeeze, factor-out, reshape) and Glow's step.

Every transform: inverse(forward(x)) == x in float32 (check_invertible, atol 1e-5) and its
log-determinant equals slogdet of the autodiff Jacobian in float64 (check_logdet).
"""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.flows import (AdditiveCoupling, AffineCoupling, FactorOut, FlowSequential,
                             GlowStep, Reshape, Scaling, Squeeze, Unsqueeze, channel_split,
                             checkerboard_mask, conv_conditioner, mlp_conditioner)
from flow_checks import check_invertible, check_logdet, jacobian_logdets, perturb


def _net(kind, c_in, c_out):
    return conv_conditioner(c_in, c_out, hidden=6) if kind == "conv" else \
        mlp_conditioner(c_in, c_out, hidden=6, layers=1)


def _coupling(cls, mask, parity, shape, scale_fn="exp"):
    """A coupling on events of ``shape`` ((C, H, W) -> conv network, (D,) -> MLP)."""
    kind = "conv" if len(shape) == 3 else "mlp"
    k = 2 if cls is AffineCoupling else 1
    c = shape[0]
    if mask == "channel":
        c_a, c_b = channel_split(c, parity)
        net = _net(kind, c_a, k * c_b)
    else:
        net = _net(kind, c, k * c)
    kw = {"scale_fn": scale_fn} if cls is AffineCoupling else {}
    return perturb(cls(net, mask=mask, parity=parity, **kw))


def _x(shape, b=3, seed=1, dtype="float32"):
    return gm.tensor(np.random.default_rng(seed).standard_normal((b,) + shape).astype(dtype))


CASES = [(cls, mask, parity, shape)
         for cls in (AffineCoupling, AdditiveCoupling)
         for mask in ("channel", "checkerboard")
         for parity in (0, 1)
         for shape in ((3, 4, 4), (5,))]


@pytest.mark.parametrize("cls,mask,parity,shape", CASES)
def test_coupling_inverts(cls, mask, parity, shape):
    gm.manual_seed(0)
    check_invertible(_coupling(cls, mask, parity, shape), _x(shape))


@pytest.mark.parametrize("scale_fn", ["exp", "sigmoid", "tanh"])
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_affine_scale_fns_invert_and_logdet(scale_fn, mask):
    gm.manual_seed(0)
    layer = _coupling(AffineCoupling, mask, 1, (3, 2, 2), scale_fn)
    check_invertible(layer, _x((3, 2, 2)))
    check_logdet(layer.double(), _x((3, 2, 2), b=2, dtype="float64"))


@pytest.mark.parametrize("cls,mask,parity,shape",
                         [c for c in CASES if c[3] == (5,)] +
                         [(AffineCoupling, m, p, (2, 2, 2)) for m in ("channel", "checkerboard")
                          for p in (0, 1)])
def test_coupling_logdet_matches_jacobian(cls, mask, parity, shape):
    gm.manual_seed(0)
    layer = _coupling(cls, mask, parity, shape).double()
    x = _x(shape, b=2, dtype="float64")
    check_logdet(layer, x)
    if cls is AffineCoupling:   # a real scaling: the check above is not trivially 0 == 0
        assert np.abs(jacobian_logdets(layer, x)).min() > 1e-3


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_conditioning_entries_pass_through_and_alone_feed_the_network(mask):
    gm.manual_seed(0)
    shape = (4, 2, 2)
    layer = _coupling(AffineCoupling, mask, 0, shape)
    x = _x(shape)
    keep = np.zeros(shape, dtype=bool)
    if mask == "channel":
        keep[:2] = True
    else:
        keep = checkerboard_mask(shape, 0)
    with gm.no_grad():
        z, _ = layer(x)
        # changing the transformed entries changes neither the kept ones nor their effect
        x2 = gm.tensor(np.where(keep, x.numpy(), x.numpy() + 1.0))
        z2, ld2 = layer(x2)
        _, ld = layer(x)
    np.testing.assert_array_equal(z.numpy()[:, keep], x.numpy()[:, keep])
    # x_b + 1 moves y_b by exactly s(x_a): the network never saw x_b, and logdet = sum log s
    s = (z2 - z).numpy()[:, ~keep]
    np.testing.assert_allclose(np.log(s).sum(1), ld.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld2.numpy(), ld.numpy(), rtol=1e-6)
    assert np.abs(np.log(s)).max() > 1e-2          # a real scaling, not the identity


def test_checkerboard_mask_layout():
    m = checkerboard_mask((2, 3, 3), 1)
    assert m.shape == (2, 3, 3) and (m[0] == m[1]).all()
    assert m[0].astype(int).tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert channel_split(5, 0) == (2, 3) and channel_split(5, 1) == (3, 2)


def test_coupling_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 2 channels"):
        AffineCoupling(_net("conv", 1, 2), mask="channel")(gm.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="mask must be one of"):
        AffineCoupling(_net("mlp", 1, 2), mask="stripes")
    with pytest.raises(ValueError, match="scale_fn must be one of"):
        AffineCoupling(_net("mlp", 1, 2), scale_fn="softplus")
    with pytest.raises(ValueError, match=r"returned shape \(2, 1\), expected \(2, 2\)"):
        AffineCoupling(_net("mlp", 1, 1))(gm.zeros(2, 2))
    with pytest.raises(ValueError, match=r"returned shape .* expected \(2, 8, 2, 2\)"):
        AffineCoupling(_net("conv", 4, 4), mask="checkerboard")(gm.zeros(2, 4, 2, 2))


def test_coupling_uses_the_fused_kernel_and_matches_reference(kernels_env):
    gm.manual_seed(0)
    layer = _coupling(AffineCoupling, "checkerboard", 0, (3, 4, 4), "sigmoid")
    x = _x((3, 4, 4))
    outs = []
    for impl in ("coupling=reference", None):
        kernels_env(impl)
        z, ld = layer(x.detach().requires_grad_(True))
        (z.sum() + ld.sum()).backward()
        outs.append((z.detach().numpy(), ld.detach().numpy(), layer.net[0].weight.grad.numpy().copy()))
        layer.zero_grad()
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_scaling_and_reshape():
    layer = perturb(Scaling((2, 3)))
    check_invertible(layer, _x((2, 3)))
    check_logdet(layer.double(), _x((2, 3), b=2, dtype="float64"))
    r = Reshape((1, 2, 3), (6,))
    check_invertible(r, _x((1, 2, 3)))
    with pytest.raises(ValueError, match="differ in size"):
        Reshape((2, 2), (5,))
    with pytest.raises(ValueError, match=r"got input of shape \(3, 6\)"):
        r(gm.zeros(3, 6))


def test_squeeze_factor_out_multiscale():
    gm.manual_seed(0)
    inner = FlowSequential(Squeeze(), _coupling(AffineCoupling, "channel", 0, (8, 1, 1)),
                           Unsqueeze())
    flow = FlowSequential(Squeeze(), _coupling(AffineCoupling, "channel", 1, (4, 2, 2)),
                          FactorOut(inner), Unsqueeze())
    x = _x((1, 4, 4))
    check_invertible(flow, x)
    with gm.no_grad():
        z, _ = flow(x)
    assert z.shape == x.shape
    check_logdet(flow.double(), _x((1, 4, 4), b=2, dtype="float64"))
    with pytest.raises(ValueError, match="cannot keep"):
        FactorOut(Scaling((1,)), keep=3)(gm.zeros(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        Squeeze()(gm.zeros(1, 1, 3, 4))


def test_factor_out_leaves_the_rest_untouched():
    f = FactorOut(perturb(Scaling((2, 2, 2))))
    x = _x((4, 2, 2))
    with gm.no_grad():
        z, _ = f(x)
    np.testing.assert_array_equal(z.numpy()[:, 2:], x.numpy()[:, 2:])
    assert not np.allclose(z.numpy()[:, :2], x.numpy()[:, :2])


@pytest.mark.parametrize("lu", [True, False])
@pytest.mark.parametrize("vector", [False, True])
def test_glow_step(lu, vector):
    gm.manual_seed(0)
    shape = (3,) if vector else (4, 2, 2)
    step = GlowStep(shape[0], hidden=6, lu=lu, vector=vector, mlp_layers=1)
    x = _x(shape, b=8)
    step(x)                          # data-dependent actnorm initialisation
    assert bool(step.actnorm.initialized)
    perturb(step, 0.1)
    check_invertible(step, x)
    step = step.double()
    check_logdet(step, _x(shape, b=2, dtype="float64"))


def test_batchnorm_flow():
    from gmcore.nn.flows import BatchNormFlow

    bn = BatchNormFlow(3, momentum=0.5)
    x = _x((3, 2, 2), b=16) * 2 + 1
    z, ld = bn(x)                                     # training: batch statistics
    zn = z.detach().numpy()
    np.testing.assert_allclose(zn.mean((0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(zn.var((0, 2, 3)), 1, atol=1e-3)
    xn = x.numpy()
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.5 * xn.mean((0, 2, 3)), rtol=1e-5)
    # the batch-statistics map's logdet, by hand
    want = 4 * (-0.5 * np.log(xn.var((0, 2, 3)) + bn.eps)).sum()
    np.testing.assert_allclose(ld.detach().numpy(), want, rtol=1e-5)
    perturb(bn)
    bn.eval()                                         # eval: a fixed affine map
    check_invertible(bn, x)
    check_logdet(bn.double(), _x((3, 2, 2), b=2, dtype="float64"))
    with pytest.raises(ValueError, match=r"expected input \(B, 3, ...\)"):
        bn(gm.zeros(2, 4))


@pytest.mark.parametrize("lu", [True, False])
def test_invconv_keeps_the_default_dtype(lu):
    # regression: the rotation it starts from is float64, and the parameters used to keep that
    # dtype, turning every float32 flow around them into float64
    from gmcore.nn.flows import InvConv2d1x1

    conv = InvConv2d1x1(4, lu=lu)
    assert {p.dtype for p in conv.parameters()} == {gm.float32}
    assert conv(gm.randn(2, 4, 2, 2))[0].dtype == gm.float32
    assert {p.dtype for p in InvConv2d1x1(3, lu=lu, dtype=gm.float64).parameters()} == {gm.float64}
