"""F.normalize, F.cosine_similarity, F.pairwise_distance, F.gumbel_softmax, F.grid_sample."""
import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from helpers import HAVE_TORCH, check_op

torch = pytest.importorskip("torch") if HAVE_TORCH else None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")
TF = torch.nn.functional if torch is not None else None


@pytest.mark.parametrize("p,dim", [(2.0, 1), (1.0, -1), (3.0, 0)])
def test_normalize(p, dim):
    def ref(x):
        n = np.sum(np.abs(x) ** p, axis=dim, keepdims=True) ** (1 / p)
        return x / np.maximum(n, 1e-12)
    check_op(lambda x: F.normalize(x, p, dim), ref, [(3, 4, 5)],
             torch_fn=lambda x: TF.normalize(x, p, dim))
    assert F.normalize(gm.zeros(2, 3)).tolist() == [[0.0] * 3] * 2  # no NaN for zero vectors


def test_cosine_similarity_and_pairwise_distance():
    def cos(a, b):
        return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    check_op(lambda a, b: F.cosine_similarity(a, b), cos, [(4, 5, 3), (4, 5, 3)],
             torch_fn=lambda a, b: TF.cosine_similarity(a, b))
    check_op(lambda a, b: F.cosine_similarity(a, b, dim=-1),
             lambda a, b: cos(np.moveaxis(a, -1, 1), np.moveaxis(b, -1, 1)),
             [(3, 4), (1, 4)], torch_fn=lambda a, b: TF.cosine_similarity(a, b, dim=-1))
    check_op(lambda a, b: F.pairwise_distance(a, b),
             lambda a, b: np.linalg.norm(a - b + 1e-6, axis=-1), [(4, 5), (4, 5)],
             torch_fn=lambda a, b: TF.pairwise_distance(a, b))


def test_gumbel_softmax_distribution_and_gradient():
    logits = gm.tensor(np.log([0.1, 0.2, 0.7]))
    gen = gm.Generator().manual_seed(0)
    n = 4000
    y = F.gumbel_softmax(logits.expand(n, 3), tau=0.5, hard=True, generator=gen)
    freq = y.mean(0).numpy()
    # argmax of logits + Gumbel noise is a Categorical sample: 3-sigma band per class
    assert np.all(np.abs(freq - [0.1, 0.2, 0.7]) < 3 * np.sqrt(0.25 / n) + 1e-3), freq
    assert set(np.unique(y.numpy())) == {0.0, 1.0}
    soft = F.gumbel_softmax(logits.expand(5, 3), tau=2.0, generator=gm.Generator().manual_seed(1))
    np.testing.assert_allclose(soft.sum(-1).numpy(), 1.0)
    # the soft sample's gradient: softmax((logits + g) / tau) with g fixed by the seed
    x = np.random.default_rng(0).normal(size=(4, 6))

    def fixed_noise(hard):
        def fn(lg):
            return F.gumbel_softmax(lg, tau=0.7, hard=hard, generator=gm.Generator().manual_seed(3))
        return fn
    g = -np.log(-np.log1p(-gm.Generator().manual_seed(3).uniform((4, 6), 0.0, 1.0, np.float64)))

    def ref(lg):
        z = (lg + g) / 0.7
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    check_op(fixed_noise(False), ref, arrays=[x], check_float32=False)
    # hard: one-hot forward, the soft gradient (straight-through)
    lg = gm.tensor(x, requires_grad=True)
    w = gm.tensor(np.random.default_rng(2).normal(size=(4, 6)))
    (fixed_noise(True)(lg) * w).sum().backward()
    lg2 = gm.tensor(x, requires_grad=True)
    (fixed_noise(False)(lg2) * w).sum().backward()
    np.testing.assert_allclose(lg.grad.numpy(), lg2.grad.numpy(), rtol=1e-12)
    assert fixed_noise(True)(gm.tensor(x)).sum(-1).tolist() == [1.0] * 4


@needs_torch
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_matches_torch(mode, padding_mode, align_corners):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5))
    grid = rng.uniform(-1.6, 1.6, size=(2, 3, 6, 2))  # includes out-of-range points

    def fn(inp, gr):
        return F.grid_sample(inp, gr, mode, padding_mode, align_corners)

    def tfn(inp, gr):
        return TF.grid_sample(inp, gr, mode, padding_mode, align_corners)
    tx, tg = torch.tensor(x, requires_grad=True), torch.tensor(grid, requires_grad=True)
    check_op(fn, lambda a, b: tfn(torch.tensor(a), torch.tensor(b)).numpy(), arrays=[x, grid],
             torch_fn=tfn, gradgrad=mode == "bilinear" and padding_mode == "zeros",
             grad=mode == "bilinear")
    # nearest: gradient to the input as torch, zero to the grid
    if mode == "nearest":
        w = rng.normal(size=(2, 3, 3, 6))
        gx, gg = gm.tensor(x, requires_grad=True), gm.tensor(grid, requires_grad=True)
        (fn(gx, gg) * gm.tensor(w)).sum().backward()
        (tfn(tx, tg) * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), atol=1e-12)
        assert gg.grad is None or not gg.grad.numpy().any()


def test_grid_sample_errors():
    with pytest.raises(RuntimeError, match="only 2-D"):
        F.grid_sample(gm.zeros(1, 1, 2, 2, 2), gm.zeros(1, 1, 1, 1, 3))
    with pytest.raises(RuntimeError, match="grid must be"):
        F.grid_sample(gm.zeros(2, 1, 2, 2), gm.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="padding_mode"):
        F.grid_sample(gm.zeros(1, 1, 2, 2), gm.zeros(1, 1, 1, 2), padding_mode="wrap")
