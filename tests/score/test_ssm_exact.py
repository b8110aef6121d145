"""Sliced and exact score matching (gmcore.score.ssm, gmcore.score.exact), in float64: the exact
loss against the closed form of a linear score, SSM's expectation over projections against the
exact loss on a nonlinear network (double backward against the Jacobian trace), the
variance-reduced Rademacher form being exact for a diagonal Jacobian, the parameter gradients of
both losses (finite differences, and PyTorch on the same network), and the argument checks."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.score.exact import EXACT_MAX_DIMS, exact_score_matching_loss
from gmcore.score.ssm import ssm_loss
from gmcore.testing import gradcheck

F64 = gm.float64


def _np(t):
    return t.detach().cpu().numpy().astype(np.float64)


# ---- a tiny MLP score s(x) = W2 silu(W1 x + b1) + b2, written over its parameters ------------

D, H = 3, 5


def _params(device, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(H, D), (H,), (D, H), (D,)]
    return [gm.tensor(rng.normal(size=s) * 0.7, dtype=F64, device=device, requires_grad=True) for s in shapes]


def _mlp(params):
    w1, b1, w2, b2 = params
    return lambda x: gm.nn.functional.silu(x @ w1.T + b1) @ w2.T + b2


def _x(device, n=4, seed=1):
    return gm.tensor(np.random.default_rng(seed).normal(size=(n, D)), dtype=F64, device=device)


# ---- the exact loss -------------------------------------------------------------------------------

def test_exact_loss_equals_the_closed_form_of_a_linear_score(device):
    rng = np.random.default_rng(2)
    A, b = rng.normal(size=(D, D)), rng.normal(size=D)
    x = rng.normal(size=(6, D))
    At, bt = gm.tensor(A, device=device), gm.tensor(b, device=device)
    got = exact_score_matching_loss(lambda x: x @ At.T + bt, gm.tensor(x, device=device), reduction="none")
    s = x @ A.T + b
    want = np.trace(A) + 0.5 * (s * s).sum(1)        # tr(grad s) = tr(A) everywhere
    np.testing.assert_allclose(_np(got), want, rtol=1e-12, atol=1e-12)
    mean = exact_score_matching_loss(lambda x: x @ At.T + bt, gm.tensor(x, device=device))
    assert abs(mean.item() - want.mean()) < 1e-12


def _exact_numpy_trace(params, x, h=1e-5):
    """tr(grad_x s) by central differences, per example."""
    f = _mlp(params)
    tr = np.zeros(len(x))
    for i in range(D):
        e = np.zeros(D)
        e[i] = h
        up = _np(f(gm.tensor(x + e, dtype=F64)))[:, i]
        dn = _np(f(gm.tensor(x - e, dtype=F64)))[:, i]
        tr += (up - dn) / (2 * h)
    return tr


def test_exact_loss_trace_matches_finite_differences_on_an_mlp():
    params = _params("cpu")
    x = _np(_x("cpu"))
    got = _np(exact_score_matching_loss(_mlp(params), gm.tensor(x, dtype=F64), reduction="none"))
    s = _np(_mlp(params)(gm.tensor(x, dtype=F64)))
    want = _exact_numpy_trace(params, x) + 0.5 * (s * s).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)


# ---- SSM against the exact loss ------------------------------------------------------------------

@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduced", [True, False])
def test_ssm_in_expectation_equals_the_exact_loss(device, projection, variance_reduced):
    """Many projections of each example at once (the batch repeated R times, one projection
    each: the network treats examples independently), averaged per example: within 5 standard
    errors of the exact loss (the double backward's v^T J v against D backward passes)."""
    params = _params(device)
    x = _x(device)
    R = 4000
    xr = gm.tensor(np.tile(_np(x), (R, 1)), dtype=F64, device=device)
    per = _np(ssm_loss(_mlp(params), xr, projection=projection, variance_reduced=variance_reduced,
                       generator=gm.Generator(device=device).manual_seed(3), reduction="none")).reshape(R, -1)
    exact = _np(exact_score_matching_loss(_mlp(params), x, reduction="none"))
    stderr = per.std(0) / np.sqrt(R)
    assert np.all(stderr > 0)
    assert np.all(np.abs(per.mean(0) - exact) < 5 * stderr + 1e-12), (per.mean(0), exact, stderr)


def test_ssm_rademacher_is_exact_for_a_diagonal_jacobian(device):
    """s(x) = a * x + b elementwise: v^T diag(a) v = sum(a) for every +-1 vector v, so the
    variance-reduced Rademacher SSM equals the exact loss with no noise at all (Gaussian v does
    not: it carries the diagonal's variance)."""
    a = gm.tensor([0.5, -2.0, 1.5], dtype=F64, device=device)
    b = gm.tensor([0.1, 0.0, -0.3], dtype=F64, device=device)
    x = _x(device, n=7)
    score = lambda x: x * a + b   # noqa: E731
    exact = _np(exact_score_matching_loss(score, x, reduction="none"))
    g = gm.Generator(device=device).manual_seed(0)
    rad = _np(ssm_loss(score, x, n_projections=2, generator=g, reduction="none"))
    np.testing.assert_allclose(rad, exact, rtol=1e-12, atol=1e-12)
    gau = _np(ssm_loss(score, x, projection="gaussian", generator=g, reduction="none"))
    assert np.abs(gau - exact).max() > 1e-3


def test_ssm_n_projections_averages_the_draws():
    params = _params("cpu")
    x = _x("cpu")
    one = [_np(ssm_loss(_mlp(params), x, generator=gm.Generator().manual_seed(s), reduction="none",
                        variance_reduced=False, projection="gaussian")) for s in range(2)]
    assert np.abs(one[0] - one[1]).max() > 1e-6       # the draws differ
    both = ssm_loss(_mlp(params), x, n_projections=3, projection="gaussian", variance_reduced=False,
                    generator=gm.Generator().manual_seed(0), reduction="sum")
    assert np.isfinite(both.item())


# ---- gradients w.r.t. the network's parameters (double backward) ---------------------------------

@pytest.mark.parametrize("which", ["exact", "ssm-rademacher", "ssm-gaussian-plain"])
def test_loss_gradients_wrt_parameters_match_finite_differences(which):
    x = _x("cpu", n=3)

    def loss(*params):
        if which == "exact":
            return exact_score_matching_loss(_mlp(params), x)
        kind = "rademacher" if which == "ssm-rademacher" else "gaussian"
        # the same projections at every evaluation: a fresh generator with one seed
        return ssm_loss(_mlp(params), x, n_projections=2, projection=kind,
                        variance_reduced=which == "ssm-rademacher", generator=gm.Generator().manual_seed(7))
    assert gradcheck(loss, tuple(_params("cpu")), atol=1e-6, rtol=1e-5, n_directions=4, max_full=0)


def test_exact_loss_and_its_parameter_gradients_match_torch():
    torch = pytest.importorskip("torch")
    params = _params("cpu")
    x = _np(_x("cpu"))
    loss = exact_score_matching_loss(_mlp(params), gm.tensor(x, dtype=F64))
    grads = gm.autograd.grad(loss, params)

    tp = [torch.tensor(_np(p), dtype=torch.float64, requires_grad=True) for p in params]
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)

    def score(xx):
        return torch.nn.functional.silu(xx @ tp[0].T + tp[1]) @ tp[2].T + tp[3]
    s = score(tx)
    trace = sum(torch.autograd.grad(s[:, i].sum(), tx, create_graph=True)[0][:, i] for i in range(D))
    tloss = (trace + 0.5 * (s * s).sum(1)).mean()
    tgrads = torch.autograd.grad(tloss, tp)
    assert abs(loss.item() - tloss.item()) < 1e-12
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(_np(g), tg.numpy(), rtol=1e-10, atol=1e-12)


def test_ssm_matches_torch_on_the_same_projections():
    """SSM with a Rademacher draw reproduced in torch (the same v: Rademacher v has v_i^2 = 1,
    so the plain form is checked through the projections the test reads back)."""
    torch = pytest.importorskip("torch")
    params = _params("cpu")
    x = _np(_x("cpu"))
    g = gm.Generator().manual_seed(5)
    v = _np((gm.rand(4, D, generator=g, dtype=F64) < 0.5).to(F64) * 2.0 - 1.0)   # ssm's own draw
    loss = ssm_loss(_mlp(params), gm.tensor(x, dtype=F64), variance_reduced=False,
                    generator=gm.Generator().manual_seed(5))
    grads = gm.autograd.grad(loss, params)

    tp = [torch.tensor(_np(p), dtype=torch.float64, requires_grad=True) for p in params]
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tv = torch.tensor(v)
    s = torch.nn.functional.silu(tx @ tp[0].T + tp[1]) @ tp[2].T + tp[3]
    (vj,) = torch.autograd.grad((s * tv).sum(), tx, create_graph=True)
    tloss = ((vj * tv).sum(1) + 0.5 * (s * tv).sum(1) ** 2).mean()
    tgrads = torch.autograd.grad(tloss, tp)
    assert abs(loss.item() - tloss.item()) < 1e-12
    for gg, tg in zip(grads, tgrads):
        np.testing.assert_allclose(_np(gg), tg.numpy(), rtol=1e-10, atol=1e-12)


# ---- argument checks ----------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    x = gm.randn(4, 2)
    ok = lambda x: -x   # noqa: E731
    with pytest.raises(ValueError, match="n_projections must be an int >= 1"):
        ssm_loss(ok, x, n_projections=0)
    with pytest.raises(ValueError, match="n_projections"):
        ssm_loss(ok, x, n_projections=1.5)
    with pytest.raises(ValueError, match="projection must be one of"):
        ssm_loss(ok, x, projection="uniform")
    with pytest.raises(ValueError, match="reduction"):
        ssm_loss(ok, x, reduction="max")
    with pytest.raises(ValueError, match="reduction"):
        exact_score_matching_loss(ok, x, reduction="max")
    for fn in (ssm_loss, exact_score_matching_loss):
        with pytest.raises(TypeError, match="score_fn must be callable"):
            fn(3.0, x)
        with pytest.raises(TypeError, match="gmcore Tensor"):
            fn(ok, np.zeros((4, 2)))
        with pytest.raises(TypeError, match="floating point"):
            fn(ok, gm.zeros(4, 2).long())
        with pytest.raises(ValueError, match=r"batch \(B, ...\)"):
            fn(ok, gm.randn(3))
        with pytest.raises(ValueError, match="x's shape"):
            fn(lambda x: x.sum(1), x)
        with pytest.raises(ValueError, match="does not depend on x"):
            fn(lambda x: gm.zeros(4, 2), x)
    big = gm.randn(2, EXACT_MAX_DIMS + 1)
    with pytest.raises(ValueError, match=f"limited to D <= {EXACT_MAX_DIMS}"):
        exact_score_matching_loss(ok, big)
    # SSM has no such limit: one backward pass per projection whatever D
    assert np.isfinite(ssm_loss(ok, big).item())


def test_losses_are_in_the_public_namespace():
    assert gm.score.ssm_loss is ssm_loss
    assert gm.score.exact_score_matching_loss is exact_score_matching_loss
