"""gmcore.nn.utils.parametrize / parametrizations: registration, state_dict keys, assignment
through right_inverse, removal, caching, weight_norm and spectral_norm (against PyTorch where
installed), and gradients through parametrizations (gradcheck)."""
import importlib.util

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn as nn
from gmcore.nn.utils import parametrize
from gmcore.nn.utils.parametrizations import spectral_norm, weight_norm
from gmcore.testing import assert_close, gradcheck

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).T

    def right_inverse(self, A):
        return A.triu()


class Scale(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, X):
        return X * self.s

    def right_inverse(self, Y):
        return Y / self.s


class NoInverse(nn.Module):
    def forward(self, X):
        return X.exp()


def _np(t):
    return t.detach().numpy()


def test_register_reads_and_keys():
    m = nn.Linear(4, 4).double()
    w0 = _np(m.weight).copy()
    original = m.weight
    parametrize.register_parametrization(m, "weight", Symmetric())
    assert parametrize.is_parametrized(m) and parametrize.is_parametrized(m, "weight")
    assert not parametrize.is_parametrized(m, "bias")
    assert "weight" not in m._parameters
    # the original Parameter object is kept (optimizers holding it keep working) and now holds
    # right_inverse(weight)
    assert m.parametrizations.weight.original is original
    assert_close(m.parametrizations.weight.original, np.triu(w0))
    w = m.weight
    assert_close(w, np.triu(w0) + np.triu(w0, 1).T)
    assert list(m.state_dict()) == ["bias", "parametrizations.weight.original"]
    assert [n for n, _ in m.named_parameters()] == ["bias", "parametrizations.weight.original"]
    # forward uses the parametrized weight
    x = gm.randn(3, 4, dtype=gm.float64)
    assert_close(m(x), _np(x) @ _np(w).T + _np(m.bias))


def test_assignment_goes_through_right_inverse():
    m = nn.Linear(3, 3).double()
    parametrize.register_parametrization(m, "weight", Symmetric())
    orig = m.parametrizations.weight.original
    a = np.arange(9.0).reshape(3, 3)
    sym = a + a.T
    m.weight = gm.tensor(sym)
    assert m.parametrizations.weight.original is orig
    assert_close(m.weight, sym)
    # assigning a Parameter is an assignment of values too (as PyTorch's property setter)
    m.weight = nn.Parameter(gm.tensor(sym * 2))
    assert_close(m.weight, sym * 2) and "weight" not in m._parameters
    p = nn.Linear(2, 2)
    parametrize.register_parametrization(p, "weight", NoInverse())
    with pytest.raises(RuntimeError, match="does not implement right_inverse"):
        p.weight = gm.ones(2, 2)


def test_gradient_reaches_the_original():
    m = nn.Linear(3, 2).double()
    parametrize.register_parametrization(m, "weight", Scale(3.0))
    x = gm.randn(5, 3, dtype=gm.float64)
    m(x).sum().backward()
    g = m.parametrizations.weight.original.grad
    assert_close(g, 3.0 * np.tile(_np(x).sum(0), (2, 1)))
    assert gradcheck(lambda orig: m.parametrizations.weight[0](orig),
                     (gm.randn(2, 3, dtype=gm.float64, requires_grad=True),))


def test_chained_parametrizations_and_remove():
    m = nn.Linear(3, 3).double()
    w0 = _np(m.weight).copy()
    parametrize.register_parametrization(m, "weight", Scale(2.0))
    parametrize.register_parametrization(m, "weight", Scale(5.0))
    assert len(m.parametrizations.weight) == 2
    # appending does not touch the original (as PyTorch): Scale5(Scale2(w0 / 2))
    assert_close(m.parametrizations.weight.original, w0 / 2)
    assert_close(m.weight, 5 * w0)
    m.weight = gm.tensor(w0)  # assignment runs both right inverses, last first
    assert_close(m.parametrizations.weight.original, w0 / 10)
    m.parametrizations.weight.original.data[...] = 1.0
    assert_close(m.weight, np.full((3, 3), 10.0))
    orig = m.parametrizations.weight.original
    parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    assert not parametrize.is_parametrized(m) and "parametrizations" not in m._modules
    assert m.weight is orig and isinstance(m.weight, nn.Parameter)
    assert_close(m.weight, np.full((3, 3), 10.0))
    assert list(m.state_dict()) == ["weight", "bias"] or list(m.state_dict()) == ["bias", "weight"]
    # leave_parametrized=False restores the unconstrained value
    parametrize.register_parametrization(m, "weight", Scale(2.0))
    parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    assert_close(m.weight, np.full((3, 3), 5.0))
    with pytest.raises(ValueError, match="does not have a parametrization"):
        parametrize.remove_parametrizations(m, "weight")


def test_register_errors():
    m = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="does not have a parameter"):
        parametrize.register_parametrization(m, "kernel", Scale(2.0))

    class Shrink(nn.Module):
        def forward(self, X):
            return X[:1]

    with pytest.raises(ValueError, match="may not change the shape"):
        parametrize.register_parametrization(m, "weight", Shrink())
    assert not parametrize.is_parametrized(m) and "weight" in m._parameters
    parametrize.register_parametrization(m, "weight", Shrink(), unsafe=True)
    assert m.weight.shape == (1, 3)
    with pytest.raises(TypeError, match="Module"):
        parametrize.register_parametrization(nn.Linear(2, 2), "weight", lambda x: x)


def test_buffer_parametrization_and_cached():
    m = nn.Module()
    m.register_buffer("scale", gm.tensor([1.0, 2.0]))
    parametrize.register_parametrization(m, "scale", Scale(10.0))
    assert m.scale.tolist() == [1.0, 2.0]
    assert list(m.state_dict()) == ["parametrizations.scale.original"]
    assert list(m.parameters()) == []
    with parametrize.cached():
        assert m.scale is m.scale
    assert m.scale is not m.scale


def test_parametrized_module_train_eval_deepcopy_and_load():
    import copy

    m = spectral_norm(nn.Linear(4, 3))
    m.eval()
    assert not m.parametrizations.weight[0].training
    m2 = copy.deepcopy(m)
    assert_close(m2.weight, _np(m.weight))
    m3 = spectral_norm(nn.Linear(4, 3))
    m3.load_state_dict(m.state_dict())
    m3.eval()
    assert_close(m3.weight, _np(m.weight))


# ---- weight_norm ----------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [0, 1, None, -2])
def test_weight_norm_reconstructs(dim):
    m = nn.Conv2d(3, 4, 3).double()
    w0 = _np(m.weight).copy()
    weight_norm(m, dim=dim)
    g = m.parametrizations.weight.original0
    v = m.parametrizations.weight.original1
    if dim is None:
        assert tuple(g.shape) == ()
    else:
        d = dim % 4
        assert tuple(g.shape) == tuple(4 if i == d else 1 for i in range(4)) or \
            tuple(g.shape) == tuple(w0.shape[i] if i == d else 1 for i in range(4))
    assert_close(v, w0)
    assert_close(m.weight, w0, atol=1e-12)
    assert list(m.state_dict()) == ["bias", "parametrizations.weight.original0",
                                    "parametrizations.weight.original1"]
    # g sets the norm: doubling g doubles the weight
    g.data[...] *= 2
    assert_close(m.weight, 2 * w0, atol=1e-12)
    # assignment goes back to (g, v)
    m.weight = gm.tensor(w0 * 3)
    assert_close(m.weight, 3 * w0, atol=1e-12)


def test_weight_norm_gradcheck_and_direction_invariance():
    wn = weight_norm(nn.Linear(3, 2).double())
    plist = wn.parametrizations.weight
    fn = plist[0]
    g = gm.tensor(np.array([[1.5], [0.7]]), requires_grad=True)
    v = gm.tensor(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    assert gradcheck(fn, (g, v))
    # the weight depends on v's direction only: grad wrt v is orthogonal to v (row-wise)
    x = gm.randn(4, 3, dtype=gm.float64)
    wn(x).sum().backward()
    gv, vv = _np(plist.original1.grad), _np(plist.original1)
    assert_close((gv * vv).sum(1), np.zeros(2), atol=1e-12)
    with pytest.raises(ValueError, match="sequence of tensors"):
        parametrize.remove_parametrizations(wn, "weight", leave_parametrized=False)
    w = _np(wn.weight).copy()
    parametrize.remove_parametrizations(wn, "weight")
    assert isinstance(wn.weight, nn.Parameter)
    assert_close(wn.weight, w)


# ---- spectral_norm --------------------------------------------------------------------------

def test_spectral_norm_converges_to_unit_sigma():
    gm.manual_seed(0)
    m = spectral_norm(nn.Linear(7, 5).double())
    sn = m.parametrizations.weight[0]
    assert sn.n_power_iterations == 1 and tuple(sn._u.shape) == (5,) and tuple(sn._v.shape) == (7,)
    for _ in range(40):
        w = m.weight
    assert np.linalg.svd(_np(w), compute_uv=False).max() == pytest.approx(1.0, abs=1e-8)
    # eval: no power iteration, u and v frozen, weight deterministic
    m.eval()
    u = _np(sn._u).copy()
    a, b = _np(m.weight), _np(m.weight)
    assert_close(sn._u, u) and np.array_equal(a, b)
    m.train()
    m.parametrizations.weight.original.data[...] *= 3  # sigma changes; power iteration tracks it
    for _ in range(40):
        w = m.weight
    assert np.linalg.svd(_np(w), compute_uv=False).max() == pytest.approx(1.0, abs=1e-8)


def test_spectral_norm_dims_and_errors():
    t = spectral_norm(nn.ConvTranspose2d(4, 6, 3))
    sn = t.parametrizations.weight[0]
    assert sn.dim == 1 and tuple(sn._u.shape) == (6,) and tuple(sn._v.shape) == (36,)
    c = spectral_norm(nn.Conv2d(4, 6, 3), n_power_iterations=3)
    assert tuple(c.parametrizations.weight[0]._u.shape) == (6,)
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_norm(nn.Linear(2, 2), n_power_iterations=0)
    with pytest.raises(IndexError, match="Dimension out of range"):
        spectral_norm(nn.Linear(2, 2), dim=2)
    with pytest.raises(ValueError, match="no parameter or buffer"):
        spectral_norm(nn.Linear(2, 2), name="kernel")
    # a 1-D weight is simply normalised
    m = nn.Module()
    m.w = nn.Parameter(gm.tensor([3.0, 4.0], dtype=gm.float64))
    spectral_norm(m, "w")
    assert_close(m.w, np.array([0.6, 0.8]))


def test_spectral_norm_gradcheck():
    m = spectral_norm(nn.Linear(3, 2).double())
    m.eval()  # fixed u, v: the parametrization is a smooth function of the original
    sn = m.parametrizations.weight[0]
    w = gm.tensor(np.random.default_rng(1).standard_normal((2, 3)), requires_grad=True)
    assert gradcheck(sn, (w,))


# ---- against torch --------------------------------------------------------------------------

def _copy_state(ours, theirs):
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict(sd)
    assert list(ours.state_dict()) == list(sd)


def _compare_steps(ours, theirs, x, steps=2):
    import torch

    rng = np.random.default_rng(0)
    for _ in range(steps):
        ours.zero_grad()
        theirs.zero_grad()
        y, yt = ours(gm.tensor(x)), theirs(torch.tensor(x))
        assert_close(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12, check_dtype=False)
        w = rng.standard_normal(tuple(yt.shape))
        (y * gm.tensor(w)).sum().backward()
        (yt * torch.tensor(w)).sum().backward()
        tp = dict(theirs.named_parameters())
        for k, p in ours.named_parameters():
            assert_close(p.grad, tp[k].grad.numpy(), rtol=1e-9, atol=1e-12, check_dtype=False)
    for k, v in theirs.state_dict().items():
        assert_close(ours.state_dict()[k], v.numpy(), rtol=1e-9, atol=1e-12, check_dtype=False)


@needs_torch
@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_matches_torch(dim):
    import torch
    from torch.nn.utils.parametrizations import weight_norm as t_weight_norm

    theirs = t_weight_norm(torch.nn.Conv1d(3, 4, 2).double(), dim=dim)
    ours = weight_norm(nn.Conv1d(3, 4, 2).double(), dim=dim)
    with torch.no_grad():
        theirs.parametrizations.weight.original0.mul_(1.7)
    _copy_state(ours, theirs)
    _compare_steps(ours, theirs, np.random.default_rng(2).standard_normal((2, 3, 5)))


@needs_torch
@pytest.mark.parametrize("make, shape", [
    (lambda m: m.Linear(5, 4), (3, 5)),
    (lambda m: m.Conv2d(2, 3, 3), (2, 2, 4, 4)),
    (lambda m: m.ConvTranspose2d(2, 3, 2), (1, 2, 3, 3)),
])
@pytest.mark.parametrize("train", [True, False])
def test_spectral_norm_matches_torch(make, shape, train):
    import torch
    from torch.nn.utils.parametrizations import spectral_norm as t_spectral_norm

    theirs = t_spectral_norm(make(torch.nn).double(), n_power_iterations=2)
    ours = spectral_norm(make(nn).double(), n_power_iterations=2)
    _copy_state(ours, theirs)
    theirs.train(train)
    ours.train(train)
    _compare_steps(ours, theirs, np.random.default_rng(3).standard_normal(shape))
