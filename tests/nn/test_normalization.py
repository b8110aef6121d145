"""Normalization layers against float64 NumPy, running-stat updates, gradients to 2nd order."""
import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close
from helpers import check_op


def np_norm(x, axes, eps):
    m = x.mean(axis=axes, keepdims=True)
    v = x.var(axis=axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps)


def test_layer_norm(device):
    check_op(lambda x, w, b: F.layer_norm(x, (5,), w, b),
             lambda x, w, b: np_norm(x, (-1,), 1e-5) * w + b,
             [(3, 2, 5), (5,), (5,)], device=device)
    check_op(lambda x: F.layer_norm(x, (3, 4), eps=1e-3),
             lambda x: np_norm(x, (-2, -1), 1e-3), [(2, 3, 4)], device=device)


def test_group_norm(device):
    def ref(x, w, b):
        n, c = x.shape[:2]
        y = np_norm(x.reshape(n, 3, -1), (2,), 1e-5).reshape(x.shape)
        return y * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
    check_op(lambda x, w, b: F.group_norm(x, 3, w, b), ref, [(2, 6, 3, 2), (6,), (6,)],
             device=device)


def test_batch_norm_training_updates_running_stats(device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 5)) * 2 + 1
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm0, rv0 = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    rm, rv = gm.tensor(rm0, device=device), gm.tensor(rv0, device=device)
    y = F.batch_norm(gm.tensor(x, device=device), rm, rv, gm.tensor(w, device=device),
                     gm.tensor(b, device=device), training=True, momentum=0.3)
    expected = np_norm(x, (0, 2, 3), 1e-5) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
    assert_close(y.cpu(), expected)
    # running stats: the unbiased batch variance, as PyTorch
    assert_close(rm.cpu(), 0.7 * rm0 + 0.3 * x.mean(axis=(0, 2, 3)))
    assert_close(rv.cpu(), 0.7 * rv0 + 0.3 * x.var(axis=(0, 2, 3), ddof=1))


def test_batch_norm_gradients(device):
    check_op(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
             lambda x, w, b: np_norm(x, (0, 2), 1e-5) * w.reshape(1, -1, 1) + b.reshape(1, -1, 1),
             [(3, 2, 4), (2,), (2,)], device=device)


def test_batch_norm_eval(device):
    rng = np.random.default_rng(1)
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    check_op(lambda x: F.batch_norm(x, gm.tensor(rm, device=device),
                                    gm.tensor(rv, device=device), training=False),
             lambda x: (x - rm) / np.sqrt(rv + 1e-5), [(5, 4)], device=device)


def test_instance_norm(device):
    check_op(lambda x: F.instance_norm(x), lambda x: np_norm(x, (2, 3), 1e-5), [(2, 3, 4, 3)],
             device=device)


def test_errors():
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[4\]"):
        F.layer_norm(gm.randn(2, 3), (4,))
    with pytest.raises(RuntimeError, match="divisible by num_groups"):
        F.group_norm(gm.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(gm.randn(1, 3), gm.zeros(3), gm.ones(3), training=True)
    with pytest.raises(RuntimeError, match=r"running_mean of shape \(3,\)"):
        F.batch_norm(gm.randn(4, 3), gm.zeros(2), gm.ones(3))
    with pytest.raises(RuntimeError, match="floating point"):
        F.layer_norm(gm.tensor([[1, 2]]), (2,))
