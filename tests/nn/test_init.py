"""gmcore.nn.init: PyTorch's formulas (gains, fans, bounds), statistics of the draws with a
fixed seed, generators, in-place semantics and errors."""
import importlib.util
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore.nn import init
from gmcore.testing import assert_close

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


def _gen(seed=0):
    return gm.Generator().manual_seed(seed)


def _a(t):
    return t.detach().numpy().astype(np.float64)


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("leaky_relu", 1) == pytest.approx(1.0)
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


def test_fans():
    assert init._calculate_fan_in_and_fan_out(gm.empty(3, 5)) == (5, 3)
    assert init._calculate_fan_in_and_fan_out(gm.empty(8, 4, 3, 2)) == (24, 48)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(gm.empty(5))


@needs_torch
def test_gains_and_fans_match_torch():
    import torch

    for nl, p in [("linear", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                  ("leaky_relu", 0.3), ("selu", None), ("conv_transpose2d", None)]:
        assert init.calculate_gain(nl, p) == pytest.approx(torch.nn.init.calculate_gain(nl, p))
    for shape in [(3, 5), (8, 4, 3), (2, 6, 3, 5)]:
        assert init._calculate_fan_in_and_fan_out(gm.empty(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))


def test_uniform_and_normal_statistics():
    w = init.uniform_(gm.empty(100, 200, dtype=gm.float64), -1.0, 3.0, generator=_gen())
    a = _a(w)
    assert a.min() >= -1 and a.max() < 3
    assert a.mean() == pytest.approx(1.0, abs=0.02)
    assert a.std() == pytest.approx(4 / math.sqrt(12), rel=0.01)
    w = init.normal_(gm.empty(100, 200), mean=-2.0, std=0.5, generator=_gen())
    assert w.dtype == gm.float32
    assert _a(w).mean() == pytest.approx(-2.0, abs=0.01)
    assert _a(w).std() == pytest.approx(0.5, rel=0.01)


def test_constant_zeros_ones_eye():
    w = gm.empty(2, 3)
    assert init.constant_(w, 0.25) is w and w.tolist() == [[0.25] * 3] * 2
    assert init.zeros_(w).tolist() == [[0.0] * 3] * 2
    assert init.ones_(w).tolist() == [[1.0] * 3] * 2
    assert init.eye_(w).tolist() == [[1.0, 0, 0], [0, 1.0, 0]]


@pytest.mark.parametrize("fn, gain_args, mode_std", [
    (init.xavier_uniform_, {"gain": 2.0}, lambda fi, fo: 2.0 * math.sqrt(2 / (fi + fo))),
    (init.xavier_normal_, {}, lambda fi, fo: math.sqrt(2 / (fi + fo))),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, lambda fi, fo: math.sqrt(2 / 6) / math.sqrt(fi)),
    (init.kaiming_normal_, {"nonlinearity": "relu"}, lambda fi, fo: math.sqrt(2 / fi)),
    (init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "tanh"},
     lambda fi, fo: 5 / 3 / math.sqrt(fo)),
    (init.kaiming_uniform_, {"mode": "fan_out", "a": 0.2},
     lambda fi, fo: math.sqrt(2 / 1.04) / math.sqrt(fo)),
])
def test_scaled_inits_have_the_formula_std(fn, gain_args, mode_std):
    w = gm.empty(64, 32, 3, 3)  # fan_in 288, fan_out 576: 18k draws
    fn(w, generator=_gen(3), **gain_args)
    std = mode_std(288, 576)
    a = _a(w)
    assert a.mean() == pytest.approx(0.0, abs=0.03 * std)
    assert a.std() == pytest.approx(std, rel=0.02)
    if "uniform" in fn.__name__:
        assert np.abs(a).max() <= math.sqrt(3) * std * (1 + 1e-6)


def test_kaiming_errors_and_zero_element():
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(gm.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="fewer than 2"):
        init.kaiming_normal_(gm.empty(4))
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(gm.empty(0, 3))
    with pytest.raises(TypeError, match="floating-point"):
        init.normal_(gm.zeros(3, dtype=gm.int64))


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (8, 3), (6, 2, 2, 2)])
def test_orthogonal(shape):
    w = init.orthogonal_(gm.empty(*shape, dtype=gm.float64), gain=1.5, generator=_gen(1))
    m = _a(w).reshape(shape[0], -1)
    r, c = m.shape
    gram = m @ m.T if r <= c else m.T @ m
    assert_close(gram, 1.5 ** 2 * np.eye(min(r, c)), atol=1e-12)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(gm.empty(4))


def test_orthogonal_is_haar_distributed():
    """With the QR sign fix the diagonal of Q has mean 0 (without it, it is biased positive)."""
    diag = [np.trace(_a(init.orthogonal_(gm.empty(3, 3, dtype=gm.float64), generator=_gen(s))))
            for s in range(400)]
    assert abs(np.mean(diag)) < 0.15


def _truncnorm_moments(mean, std, a, b):
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: (1 + math.erf(z / math.sqrt(2))) / 2  # noqa: E731
    z = cdf(beta) - cdf(alpha)
    m = mean + std * (pdf(alpha) - pdf(beta)) / z
    var = std ** 2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z
                      - ((pdf(alpha) - pdf(beta)) / z) ** 2)
    return m, math.sqrt(var)


@pytest.mark.parametrize("mean, std, a, b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04),
                                             (1.0, 2.0, -1.0, 4.0), (0.0, 1.0, 2.0, 3.0)])
def test_trunc_normal_moments(mean, std, a, b):
    w = init.trunc_normal_(gm.empty(40000, dtype=gm.float64), mean, std, a, b, generator=_gen(2))
    x = _a(w)
    assert x.min() >= a and x.max() <= b
    m, s = _truncnorm_moments(mean, std, a, b)
    assert x.mean() == pytest.approx(m, abs=0.02 * s)
    assert x.std() == pytest.approx(s, rel=0.02)


def test_erfinv_inverts_erf():
    from gmcore.functional._special import erf

    y = np.linspace(-0.9999999, 0.9999999, 2001)
    assert np.abs(erf(init._erfinv(y)) - y).max() < 1e-14


def test_generator_reproducibility_and_in_place():
    w = gm.nn.Parameter(gm.empty(4, 6))
    data_id, version = id(w.data), w._version.value
    out = init.xavier_uniform_(w, generator=_gen(5))
    assert out is w and id(w.data) == data_id and w._version.value > version
    assert w.requires_grad and w.is_leaf
    first = w.tolist()
    init.xavier_uniform_(w, generator=_gen(5))
    assert w.tolist() == first
    init.xavier_uniform_(w, generator=_gen(6))
    assert w.tolist() != first
    gm.manual_seed(11)
    a = init.normal_(gm.empty(5)).tolist()
    gm.manual_seed(11)
    assert init.normal_(gm.empty(5)).tolist() == a
    # a view of a tensor is filled in place (the base sees it)
    base = gm.zeros(4, 4)
    init.ones_(base[1])
    assert base.sum().item() == 4.0
