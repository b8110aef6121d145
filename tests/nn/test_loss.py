"""Losses against float64 NumPy references of PyTorch's definitions (weights, ignore_index,
label smoothing, reductions), gradients to second order, and edge cases (0/1 probabilities,
huge logits, -inf log-probabilities at ignored targets)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close, gradcheck, gradgradcheck
from helpers import check_op

REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(device, reduction):
    r = REDUCE[reduction]
    check_op(lambda a, b: F.mse_loss(a, b, reduction=reduction), lambda a, b: r((a - b) ** 2),
             [(3, 5), (3, 5)], device=device)
    check_op(lambda a, b: F.l1_loss(a, b, reduction=reduction), lambda a, b: r(np.abs(a - b)),
             [(3, 5), (3, 5)], device=device)

    def huber(a, b, d=0.7):
        e = np.abs(a - b)
        return r(np.where(e < d, 0.5 * e * e, d * (e - 0.5 * d)))
    check_op(lambda a, b: F.huber_loss(a, b, reduction=reduction, delta=0.7), huber,
             [(3, 5), (3, 5)], device=device)
    check_op(lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=0.7),
             lambda a, b: huber(a, b) / 0.7, [(3, 5), (3, 5)], device=device)


# ---- binary cross-entropy ----------------------------------------------------------------------

def np_bce(x, t, w=1.0):
    with np.errstate(divide="ignore"):
        return -w * (t * np.maximum(np.log(x), -100) + (1 - t) * np.maximum(np.log(1 - x), -100))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce(device, reduction):
    unit = lambda a: 0.05 + 0.9 / (1 + np.exp(-a))  # noqa: E731  (probabilities away from 0/1)
    check_op(lambda x, t, w: F.binary_cross_entropy(x, t, w, reduction=reduction),
             lambda x, t, w: REDUCE[reduction](np_bce(x, t, w)),
             [(2, 3, 4), (2, 3, 4), (3, 4)], domain=unit, device=device, grad_inputs=[0, 1])


def test_bce_at_exact_zero_and_one():
    x = gm.tensor([0.0, 1.0, 0.0, 1.0], dtype=gm.float64, requires_grad=True)
    t = gm.tensor([1.0, 0.0, 0.0, 1.0], dtype=gm.float64)
    loss = F.binary_cross_entropy(x, t, reduction="none")
    assert loss.detach().numpy().tolist() == [100.0, 100.0, 0.0, 0.0]  # logs clamped at -100
    loss.sum().backward()
    g = x.grad.numpy()
    assert np.isfinite(g).all() and g.tolist() == [-1e12, 1e12, 0.0, 0.0]  # PyTorch's eps form


def test_bce_with_logits(device):
    def ref(x, t, w, pw):
        ls = -np.logaddexp(0, -x)
        return np.mean(w * ((1 - t) * x - (1 + (pw - 1) * t) * ls))
    unit = lambda a: (a + 2) / 4  # noqa: E731
    check_op(lambda x, t, w, pw: F.binary_cross_entropy_with_logits(x, t, w, pos_weight=pw),
             ref, [(3, 4), (3, 4), (4,), (4,)], device=device, grad_inputs=[0, 1],
             arrays=[np.random.default_rng(0).uniform(-3, 3, (3, 4)),
                     unit(np.random.default_rng(1).uniform(-2, 2, (3, 4))),
                     np.random.default_rng(2).uniform(0.5, 2, (4,)),
                     np.random.default_rng(3).uniform(0.5, 3, (4,))])


def test_bce_with_logits_extremes():
    x = gm.tensor([-1000.0, 1000.0, 0.0], dtype=gm.float64, requires_grad=True)
    t = gm.tensor([1.0, 0.0, 1.0], dtype=gm.float64)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert_close(loss, np.array([1000.0, 1000.0, math.log(2)]))
    loss.sum().backward()
    assert_close(x.grad, np.array([-1.0, 1.0, -0.5]))  # sigmoid(x) - t, also at x = 0


# ---- nll / cross-entropy -----------------------------------------------------------------------

def np_nll(logp, t, w, ignore, reduction):
    """PyTorch's nll_loss via explicit loops over samples (class dim 1)."""
    c = logp.shape[1]
    lp = np.moveaxis(logp, 1, -1).reshape(-1, c)
    tt = t.reshape(-1)
    w = np.ones(c) if w is None else w
    losses, weights = np.zeros(len(tt)), np.zeros(len(tt))
    for i, k in enumerate(tt):
        if k != ignore:
            losses[i], weights[i] = -w[k] * lp[i, k], w[k]
    if reduction == "none":
        return losses.reshape(t.shape)
    return losses.sum() if reduction == "sum" else losses.sum() / weights.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3)])
def test_nll_and_cross_entropy(device, reduction, shape):
    rng = np.random.default_rng(5)
    tshape = (shape[0],) + shape[2:]
    t = rng.integers(0, shape[1], tshape)
    t.reshape(-1)[1] = -7  # ignored
    w = rng.uniform(0.5, 2, shape[1])
    tt, wt = gm.tensor(t, device=device), gm.tensor(w, device=device)
    check_op(lambda x: F.nll_loss(x, tt, wt, ignore_index=-7, reduction=reduction),
             lambda x: np_nll(x, t, w, -7, reduction), [shape], device=device)
    check_op(lambda x: F.cross_entropy(x, tt, wt, ignore_index=-7, reduction=reduction),
             lambda x: np_nll(np_log_softmax(x, 1), t, w, -7, reduction), [shape],
             device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_label_smoothing(device, reduction, weighted):
    rng = np.random.default_rng(6)
    t = rng.integers(0, 4, 5)
    t[2] = -100
    w = rng.uniform(0.5, 2, 4) if weighted else None
    eps = 0.2

    def ref(x):
        lp = np_log_softmax(x, 1)
        nll = np_nll(lp, t, w, -100, reduction)
        ww = np.ones(4) if w is None else w
        smooth = np.where(t != -100, -(lp * ww).sum(1), 0.0)
        if reduction == "mean":
            smooth = smooth.sum() / ww[t[t != -100]].sum() if w is not None \
                else smooth.sum() / (t != -100).sum()
        elif reduction == "sum":
            smooth = smooth.sum()
        return (1 - eps) * nll + eps / 4 * smooth
    wt = None if w is None else gm.tensor(w, device=device)
    check_op(lambda x: F.cross_entropy(x, gm.tensor(t, device=device), wt, reduction=reduction,
                                       label_smoothing=eps), ref, [(5, 4)], device=device)


def test_cross_entropy_probability_targets(device):
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(3), size=(2, 4)).transpose(0, 2, 1)  # (N, C, d) on the simplex
    w = rng.uniform(0.5, 2, 3)

    def ref(x):
        q = p * 0.9 + 0.1 / 3
        return (-(np_log_softmax(x, 1) * q * w.reshape(1, 3, 1)).sum(1)).mean()
    check_op(lambda x: F.cross_entropy(x, gm.tensor(p, device=device),
                                       gm.tensor(w, device=device), label_smoothing=0.1),
             ref, [(2, 3, 4)], device=device)


def test_cross_entropy_unbatched_and_inf_logits():
    x = gm.tensor([1.0, 2.0, 0.5], dtype=gm.float64)
    assert_close(F.cross_entropy(x, gm.tensor(1)), -np_log_softmax(np.array([1.0, 2.0, 0.5]), 0)[1])
    # a -inf logit in an ignored row must not turn the loss or the gradient into NaN
    logits = gm.tensor([[0.0, -math.inf], [1.0, 2.0]], dtype=gm.float64, requires_grad=True)
    loss = F.cross_entropy(logits, gm.tensor([-100, 1]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(logits.grad.numpy()).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nll_all_ignored_is_nan():
    loss = F.nll_loss(gm.randn(2, 3), gm.tensor([-100, -100]))
    assert math.isnan(loss.item())  # 0 / 0, as PyTorch


@given(st.integers(1, 4), st.integers(2, 5), st.integers(0, 2**16))
def test_cross_entropy_property(n, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c))
    t = rng.integers(0, c, n)
    got = F.cross_entropy(gm.tensor(x), gm.tensor(t))
    assert_close(got, np_nll(np_log_softmax(x, 1), t, None, -100, "mean"))
    xt = gm.tensor(x, requires_grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, gm.tensor(t)), (xt,))


# ---- KL divergence -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
def test_kl_div(device, reduction):
    r = dict(REDUCE, batchmean=lambda a: a.sum() / a.shape[0])[reduction]
    pos = lambda a: (a + 2.5) / 4  # noqa: E731
    check_op(lambda x, t: F.kl_div(x, t, reduction=reduction),
             lambda x, t: r(t * (np.log(t) - x)), [(3, 4), (3, 4)], device=device,
             arrays=[np.random.default_rng(0).uniform(-3, 0, (3, 4)),
                     pos(np.random.default_rng(1).uniform(-2, 2, (3, 4)))])
    check_op(lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=True),
             lambda x, t: r(np.exp(t) * (t - x)), [(3, 4), (3, 4)], device=device)


def test_kl_div_zero_target():
    x = gm.tensor([[-1.0, -2.0]], dtype=gm.float64, requires_grad=True)
    t = gm.tensor([[1.0, 0.0]], dtype=gm.float64, requires_grad=True)
    loss = F.kl_div(x, t, reduction="sum")
    assert loss.item() == 1.0
    loss.backward()
    assert np.isfinite(t.grad.numpy()).all() and np.isfinite(x.grad.numpy()).all()
    assert x.grad.numpy().tolist() == [[-1.0, 0.0]]


def test_bce_second_order():
    x = gm.tensor(np.random.default_rng(0).uniform(0.1, 0.9, (2, 3)), requires_grad=True)
    t = gm.tensor(np.random.default_rng(1).uniform(0, 1, (2, 3)), requires_grad=True)
    assert gradgradcheck(lambda a, b: F.binary_cross_entropy(a, b), (x, t))


# ---- errors -------------------------------------------------------------------------------------

def test_errors():
    with pytest.raises(IndexError, match="Target 5 is out of bounds"):
        F.nll_loss(gm.randn(2, 3), gm.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"Expected input batch_size \(2\) to match target "
                                         r"batch_size \(3\)"):
        F.cross_entropy(gm.randn(2, 3), gm.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="integer .*target"):
        F.nll_loss(gm.randn(2, 3), gm.tensor([0.0, 1.0]))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(gm.tensor([1.5]), gm.tensor([1.0]))
    with pytest.raises(ValueError, match="different to the input size"):
        F.binary_cross_entropy(gm.tensor([0.5, 0.5]), gm.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.mse_loss(gm.randn(2), gm.randn(2), reduction="avg")
    with pytest.raises(RuntimeError, match="weight tensor should be defined"):
        F.cross_entropy(gm.randn(2, 3), gm.tensor([0, 1]), weight=gm.ones(4))
