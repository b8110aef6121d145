"""MADE conditioner and the masked affine autoregressive (MAF) layer: the autoregressive
property in the chosen ordering, the context reaching every output, invertibility (float32) and
log-determinant (float64, autodiff slogdet), a triangular Jacobian, clear errors."""
import numpy as np
import pytest
from flow_checks import check_invertible, check_logdet

import gmcore as gm
from gmcore.nn.flows import MADENet, MaskedAffineAutoregressive

ORDER = [2, 4, 0, 3, 1]


def _randomize(module, seed, scale=0.3):
    g = gm.Generator().manual_seed(seed)
    with gm.no_grad():
        for p in module.parameters():
            p.add_(gm.randn(*p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def _jacobian(fn, x):
    """(D_out, D_in) Jacobian of fn at one example x (1, D), by autodiff."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x).reshape(-1)
    rows = [gm.autograd.grad(out[i], [x], retain_graph=True)[0].reshape(-1).numpy()
            for i in range(out.shape[0])]
    return np.stack(rows)


def test_made_net_outputs_see_only_earlier_dimensions():
    gm.manual_seed(0)
    net = _randomize(MADENet(5, hidden=32, params_per_dim=3, layers=2, ordering=ORDER), 1)
    x = gm.randn(1, 5, dtype=gm.float32)
    jac = _jacobian(lambda v: net(v), x).reshape(5, 3, 5)        # (out dim, param, in dim)
    rank = np.argsort(ORDER)                                       # position of each dim
    allowed = rank[None, :] < rank[:, None]                        # in j feeds out d
    for p in range(3):
        assert np.all(jac[:, p][~allowed] == 0.0)
    assert np.abs(jac[:, 0][allowed]).min() > 0        # and every allowed path is used here


def test_context_reaches_every_output():
    gm.manual_seed(0)
    net = _randomize(MADENet(3, hidden=16, params_per_dim=2, context_features=4), 2)
    x, c = gm.randn(2, 3), gm.randn(2, 4, requires_grad=True)
    net(x, c)[:, 0].sum().backward()          # the first variable: no input, only the context
    assert float(c.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"context of shape \(2, 4\)"):
        net(x)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net(gm.randn(2, 4), c)
    with pytest.raises(ValueError, match="at least 2"):
        MADENet(1)


def test_maf_layer_starts_at_identity():
    layer = MaskedAffineAutoregressive(4, hidden=8)
    x = gm.randn(3, 4)
    z, ld = layer(x)
    np.testing.assert_allclose(z.detach().numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(ld.detach().numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("scale_fn", ["tanh", "exp", "sigmoid"])
def test_maf_layer_inverts_and_logdet_is_slogdet(scale_fn):
    gm.manual_seed(0)
    rng = np.random.default_rng(0)
    x = gm.tensor(rng.normal(size=(7, 5)).astype(np.float32))
    c = gm.tensor(rng.normal(size=(7, 3)).astype(np.float32))
    # float32 to 1e-5 on a layer perturbed as much as training moves it (scale 0.1) ...
    check_invertible(_randomize(MaskedAffineAutoregressive(
        5, hidden=16, layers=2, context_features=3, ordering=ORDER, scale_fn=scale_fn), 3, 0.1),
        x, c, atol=1e-5)
    # ... and exactly (float64) on a harsher one: at scale 0.3 the sequential inverse amplifies
    # rounding about 56x (measured), which float32's 6e-8 cannot keep under 1e-5
    layer = _randomize(MaskedAffineAutoregressive(5, hidden=16, layers=2, context_features=3,
                                                  ordering=ORDER, scale_fn=scale_fn), 3)
    layer = layer.to(gm.float64)
    check_invertible(layer, x.double(), c.double(), atol=1e-10)
    check_logdet(layer, x[:3].double(), c[:3].double())


def test_maf_layer_jacobian_is_triangular_in_its_ordering():
    gm.manual_seed(0)
    layer = _randomize(MaskedAffineAutoregressive(5, hidden=16, ordering=ORDER), 4).to(gm.float64)
    x = gm.randn(1, 5, dtype=gm.float64)
    jac = _jacobian(lambda v: layer(v)[0], x)
    permuted = jac[np.ix_(ORDER, ORDER)]         # rows and columns in autoregressive order
    np.testing.assert_array_equal(np.triu(permuted, 1), 0.0)
    assert np.abs(np.tril(permuted, -1)).max() > 0
    with gm.no_grad():
        _, ld = layer(x)
    np.testing.assert_allclose(ld.item(), np.log(np.abs(np.diag(jac))).sum(), rtol=1e-10)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="scale_fn"):
        MaskedAffineAutoregressive(3, scale_fn="softplus")
    with pytest.raises(ValueError, match="permutation"):
        MaskedAffineAutoregressive(3, ordering=[0, 0, 1])
