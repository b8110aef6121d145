"""Conditional batch norm (gmcore.nn.ConditionalBatchNorm2d, LinearConditionalBatchNorm2d) against
batch norm computed by hand with per-example gains and biases, and BigGAN's orthogonal
regulariser (gmcore.nn.gan.orthogonal_regularization) against its formula and gradient."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn import gan


def _bn(x, eps=1e-5):
    mean, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def test_class_conditional_bn_uses_the_rows_of_its_embedding():
    gm.manual_seed(0)
    cbn = gm.nn.ConditionalBatchNorm2d(3, num_classes=4).double()
    x = np.random.default_rng(0).normal(size=(5, 3, 2, 2))
    y = np.array([0, 3, 3, 1, 2])
    # at construction: gains 1, biases 0 -- plain batch norm whatever the class
    np.testing.assert_allclose(cbn(gm.tensor(x), gm.tensor(y)).detach().numpy(), _bn(x), rtol=1e-9, atol=1e-12)
    table = np.random.default_rng(1).normal(size=(4, 6))
    cbn.embed.weight.data[...] = table
    out = cbn(gm.tensor(x), gm.tensor(y)).detach().numpy()
    expect = _bn(x) * table[y, :3, None, None] + table[y, 3:, None, None]
    np.testing.assert_allclose(out, expect, rtol=1e-9, atol=1e-12)
    # running statistics as an unconditional batch norm's, used in eval
    cbn.eval()
    rm, rv = cbn.bn.running_mean.numpy(), cbn.bn.running_var.numpy()
    ev = cbn(gm.tensor(x), gm.tensor(y)).detach().numpy()
    norm = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(ev, norm * table[y, :3, None, None] + table[y, 3:, None, None], rtol=1e-9)


def test_biggan_bn_gain_and_bias_are_linear_in_the_condition():
    gm.manual_seed(0)
    cbn = gm.nn.LinearConditionalBatchNorm2d(3, cond_features=5).double()
    rng = np.random.default_rng(2)
    x, c = rng.normal(size=(4, 3, 2, 3)), rng.normal(size=(4, 5))
    wg, wb = cbn.gain.weight.detach().numpy(), cbn.bias.weight.detach().numpy()
    out = cbn(gm.tensor(x), gm.tensor(c)).detach().numpy()
    expect = _bn(x) * (1.0 + c @ wg.T)[:, :, None, None] + (c @ wb.T)[:, :, None, None]
    np.testing.assert_allclose(out, expect, rtol=1e-9, atol=1e-12)


def test_conditional_bn_names_bad_input():
    cbn = gm.nn.ConditionalBatchNorm2d(3, num_classes=4)
    with pytest.raises(ValueError, match=r"labels must be \(2,\)"):
        cbn(gm.randn(2, 3, 2, 2), gm.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        cbn(gm.randn(2, 4, 2, 2), gm.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"condition must be \(2, 5\)"):
        gm.nn.LinearConditionalBatchNorm2d(3, 5)(gm.randn(2, 3, 2, 2), gm.randn(2, 4))


def test_orthogonal_regularization_is_the_off_diagonal_gram_norm_and_its_gradient():
    rng = np.random.default_rng(3)
    net = gm.nn.Sequential(gm.nn.Conv2d(3, 4, 3), gm.nn.Linear(5, 6), gm.nn.Embedding(7, 2)).double()
    for p in net.parameters():
        p.data[...] = rng.normal(size=p.shape)
    weights = [p.detach().numpy().reshape(p.shape[0], -1) for p in net.parameters() if p.ndim >= 2]
    emb = net[2].weight
    r = gan.orthogonal_regularization(net, exclude=[emb])       # biases and the embedding skipped
    expect = sum((((w @ w.T) * (1 - np.eye(len(w)))) ** 2).sum() for w in weights[:2])
    assert r.item() == pytest.approx(expect, rel=1e-12)
    r.backward()
    w = weights[1]   # d/dW ||W W^T (1 - I)||^2 = 4 ((W W^T) (1 - I)) W (twice BigGAN code's update)
    np.testing.assert_allclose(net[1].weight.grad.numpy(), 4 * ((w @ w.T) * (1 - np.eye(6))) @ w, rtol=1e-10)
    assert emb.grad is None and net[1].bias.grad is None
    # orthogonal filters (any norms) cost nothing
    q = gm.nn.Linear(3, 3, bias=False)
    q.weight.data[...] = np.diag([1.0, 2.0, 3.0])
    assert gan.orthogonal_regularization(q).item() == 0.0
    with pytest.raises(ValueError, match="no weight"):
        gan.orthogonal_regularization(gm.nn.BatchNorm2d(3))


def test_orthogonal_regularization_fused_backward_and_its_recorded_twin():
    # the fused array backward (plain .backward()) and the Tensor-op backward (create_graph=True,
    # e.g. a penalty on this gradient) against finite differences
    from gmcore.testing import gradcheck, gradgradcheck

    w = gm.tensor(np.random.default_rng(4).normal(size=(3, 2, 2)), requires_grad=True)
    assert gradcheck(lambda t: gan.orthogonal_regularization([t]), (w,))
    assert gradgradcheck(lambda t: gan.orthogonal_regularization([t]), (w,))
