"""SAGAN's self-attention block (gmcore.nn.SAGANSelfAttention) against the paper's formula
computed by hand in NumPy: beta_{j,i} = softmax_i(f(x_i)^T g(x_j)),
y_j = x_j + gamma * v(sum_i beta_{j,i} h(x_i)), with optional max-pooled keys and values."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn.utils import spectral_norm


def _by_hand(block, x, pool):
    def conv1x1(m, a):            # (N, C, H, W) -> (N, K, H, W)
        return np.einsum("kc,nchw->nkhw", m.weight.detach().numpy()[:, :, 0, 0], a)

    def maxpool(a):
        n, k, h, w = a.shape
        return a.reshape(n, k, h // 2, 2, w // 2, 2).max((3, 5))
    f, g, h = conv1x1(block.f, x), conv1x1(block.g, x), conv1x1(block.h, x)
    if pool:
        f, h = maxpool(f), maxpool(h)
    n, k = f.shape[:2]
    f, g, h = f.reshape(n, k, -1), g.reshape(n, k, -1), h.reshape(n, k, -1)
    s = np.einsum("nki,nkj->nji", f, g)                        # s[j, i] = f(x_i) . g(x_j)
    beta = np.exp(s - s.max(-1, keepdims=True))
    beta /= beta.sum(-1, keepdims=True)                       # softmax over i
    o = np.einsum("nji,nki->nkj", beta, h).reshape(n, k, *x.shape[2:])
    return x + block.gamma.item() * conv1x1(block.v, o)


@pytest.mark.parametrize("pool", [False, True])
def test_block_computes_the_papers_formula(pool):
    gm.manual_seed(0)
    block = gm.nn.SAGANSelfAttention(16, pool=pool).double()
    assert block.inner == 2                     # C / 8
    block.gamma.data[...] = 0.7
    x = np.random.default_rng(0).normal(size=(2, 16, 4, 6))
    y = block(gm.tensor(x)).detach().numpy()
    np.testing.assert_allclose(y, _by_hand(block, x, pool), rtol=1e-10, atol=1e-12)


def test_gamma_starts_at_zero_so_the_block_is_the_identity_but_learns():
    gm.manual_seed(0)
    block = gm.nn.SAGANSelfAttention(8)
    x = gm.randn(3, 8, 4, 4)
    y = block(x)
    np.testing.assert_array_equal(y.detach().numpy(), x.numpy())
    (y ** 2).sum().backward()
    assert block.gamma.grad is not None and abs(float(block.gamma.grad.item())) > 0
    assert block.inner == 1 and gm.nn.SAGANSelfAttention(4).inner == 1      # at least one channel


def test_spectral_norm_wraps_each_projection():
    gm.manual_seed(0)
    block = gm.nn.SAGANSelfAttention(16)
    for m in (block.f, block.g, block.h, block.v):
        spectral_norm(m)
    block.gamma.data[...] = 1.0
    assert block(gm.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)
    assert "f.weight_orig" in block.state_dict() and "v.weight_u" in block.state_dict()


def test_bad_input_is_named():
    block = gm.nn.SAGANSelfAttention(8, pool=True)
    with pytest.raises(ValueError, match=r"expects \(N, 8, H, W\)"):
        block(gm.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="even H and W"):
        block(gm.randn(2, 8, 3, 4))
    with pytest.raises(ValueError, match="must be positive"):
        gm.nn.SAGANSelfAttention(0)
