"""nn.functional against PyTorch as a peer: forward values and gradients, in float64.

Skipped where torch is not installed (CI); run with the ``bench`` extra to include it.
"""
import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _pair(arrays, diff):
    gt = [gm.tensor(a, dtype=gm.float64 if a.dtype.kind == "f" else gm.int64,
                    requires_grad=i in diff) for i, a in enumerate(arrays)]
    tt = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    return gt, tt


def _compare(gm_fn, torch_fn, arrays, grad=True, diff=None):
    """``diff``: indices of the inputs to differentiate (default: every float input)."""
    if diff is None:
        diff = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"] if grad else []
    gt, tt = _pair(arrays, diff)
    g_out, t_out = gm_fn(*gt), torch_fn(*tt)
    g_out = g_out if isinstance(g_out, tuple) else (g_out,)
    t_out = t_out if isinstance(t_out, tuple) else (t_out,)
    for g, t in zip(g_out, t_out):
        assert_close(g, t.detach().numpy(), rtol=1e-10, atol=1e-12, check_dtype=False)
    if grad:
        rng = np.random.default_rng(1)
        ws = [rng.standard_normal(tuple(t.shape)) for t in t_out]
        sum(((g * gm.tensor(w)).sum() for g, w in zip(g_out, ws) if g.requires_grad)).backward()
        sum(((t * torch.tensor(w)).sum() for t, w in zip(t_out, ws) if t.requires_grad)).backward()
        for g, t in zip(gt, tt):
            if t.grad is not None:
                assert_close(g.grad, t.grad.numpy(), rtol=1e-9, atol=1e-12, check_dtype=False)


rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 7, 6))


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=3, stride=2, ceil_mode=True),
                                dict(kernel_size=(2, 3), stride=1, dilation=2)])
def test_max_pool2d(kw):
    _compare(lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), [X])


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                                dict(kernel_size=3, stride=2, ceil_mode=True)])
def test_avg_pool2d(kw):
    _compare(lambda x: F.avg_pool2d(x, **kw), lambda x: TF.avg_pool2d(x, **kw), [X])


@pytest.mark.parametrize("kw", [dict(scale_factor=2, mode="nearest"), dict(size=(5, 9), mode="nearest"),
                                dict(scale_factor=2, mode="bilinear", align_corners=False),
                                dict(size=(4, 11), mode="bilinear", align_corners=True),
                                dict(size=(3, 4), mode="bilinear", align_corners=False)])
def test_interpolate(kw):
    _compare(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw), [X])


def test_pixel_shuffle_roundtrip():
    x = rng.standard_normal((2, 8, 3, 5))
    _compare(lambda t: F.pixel_shuffle(t, 2), lambda t: TF.pixel_shuffle(t, 2), [x])
    _compare(lambda t: F.pixel_unshuffle(t, 2), lambda t: TF.pixel_unshuffle(t, 2),
             [rng.standard_normal((2, 3, 6, 4))])


def test_layer_and_group_norm():
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    _compare(lambda x, w, b: F.layer_norm(x, (6,), w, b), lambda x, w, b: TF.layer_norm(x, (6,), w, b),
             [X, w, b])
    x = rng.standard_normal((2, 6, 4, 3))
    _compare(lambda x, w, b: F.group_norm(x, 3, w, b), lambda x, w, b: TF.group_norm(x, 3, w, b),
             [x, w, b])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_and_running_stats(training):
    x = rng.standard_normal((4, 3, 5, 2))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    gm_rm, gm_rv = gm.zeros(3, dtype=gm.float64), gm.ones(3, dtype=gm.float64)
    t_rm, t_rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    _compare(lambda x, w, b: F.batch_norm(x, gm_rm, gm_rv, w, b, training=training),
             lambda x, w, b: TF.batch_norm(x, t_rm, t_rv, w, b, training=training), [x, w, b])
    assert_close(gm_rm, t_rm.numpy(), rtol=1e-12, atol=1e-12, check_dtype=False)
    assert_close(gm_rv, t_rv.numpy(), rtol=1e-12, atol=1e-12, check_dtype=False)


LOGITS = rng.standard_normal((5, 4))
TARGET = np.array([0, 3, 1, 3, 2])
CLASS_W = rng.uniform(0.5, 2.0, 4)


@pytest.mark.parametrize("kw", [dict(), dict(reduction="sum"), dict(reduction="none"),
                                dict(ignore_index=3), dict(label_smoothing=0.1)])
def test_cross_entropy_and_nll(kw):
    _compare(lambda x, t: F.cross_entropy(x, t, **kw), lambda x, t: TF.cross_entropy(x, t, **kw),
             [LOGITS, TARGET])
    _compare(lambda x, t, w: F.cross_entropy(x, t, weight=w, **kw),
             lambda x, t, w: TF.cross_entropy(x, t, weight=w, **kw), [LOGITS, TARGET, CLASS_W],
             diff=[0])
    if "label_smoothing" not in kw:
        _compare(lambda x, t, w: F.nll_loss(F.log_softmax(x, 1), t, weight=w, **kw),
                 lambda x, t, w: TF.nll_loss(TF.log_softmax(x, 1), t, weight=w, **kw),
                 [LOGITS, TARGET, CLASS_W], diff=[0])


def test_cross_entropy_spatial_and_probability_targets():
    x = rng.standard_normal((2, 4, 3, 5))
    t = rng.integers(0, 4, (2, 3, 5))
    _compare(lambda x, t: F.cross_entropy(x, t), lambda x, t: TF.cross_entropy(x, t), [x, t])
    p = rng.dirichlet(np.ones(4), size=5)
    _compare(lambda x, p: F.cross_entropy(x, p), lambda x, p: TF.cross_entropy(x, p), [LOGITS, p])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_and_binary_losses(reduction):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p, y = rng.uniform(0.05, 0.95, (3, 4)), rng.uniform(0, 1, (3, 4))
    pw = rng.uniform(0.5, 2, 4)
    _compare(lambda a, b: F.mse_loss(a, b, reduction=reduction),
             lambda a, b: TF.mse_loss(a, b, reduction=reduction), [a, b])
    _compare(lambda a, b: F.l1_loss(a, b, reduction=reduction),
             lambda a, b: TF.l1_loss(a, b, reduction=reduction), [a, b])
    _compare(lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
             lambda p, y: TF.binary_cross_entropy(p, y, reduction=reduction), [p, y])
    _compare(lambda a, y, w: F.binary_cross_entropy_with_logits(a, y, pos_weight=w, reduction=reduction),
             lambda a, y, w: TF.binary_cross_entropy_with_logits(a, y, pos_weight=w, reduction=reduction),
             [a, y, pw], diff=[0, 1])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    inp = np.log(rng.dirichlet(np.ones(4), size=3))
    tgt = rng.dirichlet(np.ones(4), size=3)
    tgt[0, 1] = 0.0  # a zero target contributes 0, not NaN
    if log_target:
        tgt = np.log(tgt + 1e-3)
    _compare(lambda i, t: F.kl_div(i, t, reduction=reduction, log_target=log_target),
             lambda i, t: TF.kl_div(i, t, reduction=reduction, log_target=log_target), [inp, tgt],
             diff=[0, 1] if log_target else [0])  # d/dt of t log t is -inf at t = 0


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1),
                                dict(stride=1, padding=0, dilation=2),
                                dict(stride=2, padding=1, groups=2)])
def test_conv_transpose2d(kw):
    x = rng.standard_normal((2, 4, 5, 4))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(3 * kw.get("groups", 1))
    w = w if kw.get("groups", 1) == 1 else rng.standard_normal((4, 3, 3, 2))
    _compare(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw),
             lambda x, w, b: TF.conv_transpose2d(x, w, b, **kw), [x, w, b])


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                dict(stride=(2, 1), padding=(1, 0), groups=2)])
def test_conv2d(kw):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 2))
    b = rng.standard_normal(6)
    _compare(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw),
             [x, w, b])
