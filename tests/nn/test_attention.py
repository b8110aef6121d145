"""Attention: scaled_dot_product_attention, MultiheadAttention and SelfAttention2d against
NumPy float64 math, finite differences, mask properties, and PyTorch when installed."""
import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore.testing import assert_close, gradcheck, gradgradcheck


def _t(a, grad=True):
    return gm.tensor(a, dtype=gm.float64, requires_grad=grad)


def _np_attention(q, k, v, add_mask=None, scale=None):
    s = q @ np.swapaxes(k, -1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if add_mask is not None:
        s = s + add_mask
    s = s - s.max(-1, keepdims=True)
    w = np.exp(s)
    w /= w.sum(-1, keepdims=True)
    return w @ v


# ---- scaled_dot_product_attention ---------------------------------------------------------------

def test_sdpa_forward_and_gradients():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    assert_close(F.scaled_dot_product_attention(_t(q), _t(k), _t(v)).detach(),
                 gm.tensor(_np_attention(q, k, v)))
    fm = rng.normal(size=(3, 5))
    bm = rng.random((3, 5)) > 0.4
    bm[:, 0] = True
    assert_close(F.scaled_dot_product_attention(_t(q), _t(k), _t(v), attn_mask=_t(fm, False),
                                                scale=0.7).detach(),
                 gm.tensor(_np_attention(q, k, v, fm, 0.7)))
    assert_close(F.scaled_dot_product_attention(_t(q), _t(k), _t(v),
                                                attn_mask=gm.tensor(bm)).detach(),
                 gm.tensor(_np_attention(q, k, v, np.where(bm, 0.0, -np.inf))))
    ins = (_t(q[:1, :2]), _t(k[:1, :3]), _t(v[:1, :3]))
    assert gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), ins)
    assert gradgradcheck(lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=gm.tensor(bm[:2, :3])), ins)


def test_causal_output_does_not_depend_on_later_positions():
    rng = np.random.default_rng(1)
    L = 6
    q, k, v = (_t(rng.normal(size=(2, L, 4))) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for i in range(L):
        gq, gk, gv = gm.autograd.grad(out[:, i].sum(), (q, k, v), retain_graph=True)
        for g in (gq, gk, gv):
            later = g.numpy()[:, i + 1:] if g is not gq else np.delete(g.numpy(), i, axis=1)
            assert np.all(later == 0.0), i  # exactly zero, not just small


def test_masked_rows_never_nan_and_fully_masked_rows_are_zero():
    rng = np.random.default_rng(2)
    q, k, v = (_t(rng.normal(size=(3, 4))) for _ in range(3))
    mask = np.array([[True, False, False], [False, False, False], [True, True, True]])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=gm.tensor(mask))
    assert np.all(np.isfinite(out.detach().numpy()))
    assert np.all(out.detach().numpy()[1] == 0.0)  # no allowed key: zeros (PyTorch's result)
    assert_close(out[0].detach(), v[0].detach())   # one allowed key: its value exactly
    out.sum().backward()
    for t in (q, k, v):
        assert np.all(np.isfinite(t.grad.numpy()))
    # huge logits stay finite (max-shifted softmax)
    big = F.scaled_dot_product_attention(q * 1e4, k * 1e4, v)
    assert np.all(np.isfinite(big.detach().numpy()))


def test_sdpa_errors():
    x = gm.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="is_causal"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=gm.ones(3, 3, dtype=gm.bool),
                                       is_causal=True)
    with pytest.raises(RuntimeError, match="same feature size"):
        F.scaled_dot_product_attention(x, gm.randn(2, 3, 5), x)
    with pytest.raises(RuntimeError, match="does not broadcast"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=gm.zeros(4, 4))
    with pytest.raises(RuntimeError, match="attn_mask dtype"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=gm.zeros(3, 3, dtype=gm.int64))


# ---- MultiheadAttention -----------------------------------------------------------------------------

def test_mha_shapes_and_parameters():
    m = gm.nn.MultiheadAttention(8, 2)
    assert [n for n, _ in m.named_parameters()] == ["in_proj_weight", "in_proj_bias",
                                                    "out_proj.weight", "out_proj.bias"]
    assert m.in_proj_weight.shape == (24, 8)
    assert float(m.in_proj_bias.abs().max()) == 0 and float(m.out_proj.bias.abs().max()) == 0
    assert float(m.in_proj_weight.abs().max()) <= (6 / 32) ** 0.5
    x = gm.randn(5, 3, 8)
    out, w = m(x, x, x, average_attn_weights=False)
    assert out.shape == (5, 3, 8) and w.shape == (3, 2, 5, 5)
    assert_close(w.sum(-1), gm.ones(3, 2, 5), atol=1e-6, rtol=0)
    out, w = m(x[:, 0], x[:, 0], x[:, 0], need_weights=False)  # unbatched
    assert out.shape == (5, 8) and w is None
    m2 = gm.nn.MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False, add_bias_kv=True)
    names = [n for n, _ in m2.named_parameters()]
    assert names == ["q_proj_weight", "k_proj_weight", "v_proj_weight", "bias_k", "bias_v",
                     "out_proj.weight"]
    out, w = m2(x, gm.randn(4, 3, 3), gm.randn(4, 3, 5))
    assert out.shape == (5, 3, 8) and w.shape == (3, 5, 5)


def test_mha_gradcheck_and_causal_mask():
    rng = np.random.default_rng(3)
    m = gm.nn.MultiheadAttention(4, 2, batch_first=True, dtype=gm.float64)
    q, k, v = (_t(rng.normal(size=(1, 3, 4))) for _ in range(3))
    kpm = gm.tensor(np.array([[False, False, True]]))
    assert gradcheck(lambda q, k, v: m(q, k, v, key_padding_mask=kpm), (q, k, v))
    L = 4
    causal = gm.tensor(np.triu(np.ones((L, L), dtype=bool), 1))  # True = not allowed
    x = _t(rng.normal(size=(1, L, 4)))
    out, _ = m(x, x, x, attn_mask=causal, is_causal=True)
    (g,) = gm.autograd.grad(out[:, 1].sum(), x)
    assert np.all(g.numpy()[:, 2:] == 0.0)


def test_mha_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        gm.nn.MultiheadAttention(6, 4)
    m = gm.nn.MultiheadAttention(8, 2)
    x = gm.randn(5, 3, 8)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        m(x, x, x, is_causal=True)
    with pytest.raises(RuntimeError, match=r"2D attn_mask is \(5, 4\), but should be \(5, 5\)"):
        m(x, x, x, attn_mask=gm.zeros(5, 4))
    with pytest.raises(RuntimeError, match="key_padding_mask of shape"):
        m(x, x, x, key_padding_mask=gm.zeros(3, 4, dtype=gm.bool))
    with pytest.raises(RuntimeError, match="embedding dimension of 8, but got 6"):
        m(gm.randn(5, 3, 6), x, x)
    with pytest.raises(RuntimeError, match="key and value should be 3-D"):
        m(x, x[0], x)


# ---- SelfAttention2d ------------------------------------------------------------------------------

@pytest.mark.parametrize("residual", ["ddpm", "sagan"])
def test_self_attention2d_identity_at_init_and_learns(residual):
    block = gm.nn.SelfAttention2d(8, num_heads=2, num_groups=4, residual=residual,
                                  dtype=gm.float64)
    x = _t(np.random.default_rng(4).normal(size=(2, 8, 3, 5)))
    y = block(x)
    assert np.array_equal(y.detach().numpy(), x.detach().numpy())
    (y ** 2).sum().backward()
    g = block.proj_weight.grad if residual == "ddpm" else block.gamma.grad
    assert float(g.abs().max()) > 0  # the zero-initialised part still receives gradient


def test_self_attention2d_matches_numpy_and_gradcheck():
    rng = np.random.default_rng(5)
    C, nh, H, W = 6, 2, 2, 3
    block = gm.nn.SelfAttention2d(C, num_heads=nh, num_groups=32, dtype=gm.float64)
    assert block.num_groups == 6  # 32 capped to the largest divisor of 6
    with gm.no_grad():
        for p in block.parameters():
            p.copy_(gm.tensor(rng.normal(size=p.shape) * 0.5))
    x = rng.normal(size=(2, C, H, W))
    P = {n: p.detach().numpy() for n, p in block.named_parameters()}
    # float64 NumPy reference of the block (6 groups of 6 channels: one channel per group)
    xr = x.reshape(2, C, -1)
    mu, var = xr.mean(-1, keepdims=True), xr.var(-1, keepdims=True)
    hn = (xr - mu) / np.sqrt(var + 1e-5)
    hn = hn * P["norm_weight"][:, None] + P["norm_bias"][:, None]
    qkv = np.einsum("oc,ncp->npo", P["qkv_weight"], hn) + P["qkv_bias"]
    q, k, v = np.split(qkv, 3, axis=-1)

    def heads(t):
        return t.reshape(2, H * W, nh, -1).transpose(0, 2, 1, 3)
    a = _np_attention(heads(q), heads(k), heads(v)).transpose(0, 2, 1, 3).reshape(2, H * W, C)
    out = a @ P["proj_weight"].T + P["proj_bias"]
    ref = xr + out.transpose(0, 2, 1)
    assert_close(block(_t(x, False)).detach(), gm.tensor(ref.reshape(x.shape)))
    small = gm.nn.SelfAttention2d(2, num_heads=1, norm=None, dtype=gm.float64)
    with gm.no_grad():
        small.proj_weight.copy_(gm.tensor(rng.normal(size=(2, 2))))
    assert gradcheck(small, (_t(rng.normal(size=(1, 2, 2, 2))),))


def test_self_attention2d_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        gm.nn.SelfAttention2d(6, num_heads=4)
    with pytest.raises(ValueError, match="residual"):
        gm.nn.SelfAttention2d(6, residual="other")
    with pytest.raises(RuntimeError, match=r"expected input of shape \(N, 6, H, W\)"):
        gm.nn.SelfAttention2d(6)(gm.randn(1, 4, 2, 2))


# ---- against PyTorch ------------------------------------------------------------------------------

def _grads_close(pairs):
    for a, b in pairs:
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10,
                                   atol=1e-10)


@pytest.mark.parametrize("case", ["plain", "causal", "bool", "float", "fully_masked_row"])
def test_sdpa_matches_torch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    arrs = [rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 6, 4)),
            rng.normal(size=(2, 3, 6, 7))]
    kw_t, kw_g = {}, {}
    if case == "causal":
        kw_t = kw_g = {"is_causal": True}
    elif case in ("bool", "fully_masked_row"):
        m = rng.random((5, 6)) > 0.5
        m[:, 0] = True
        if case == "fully_masked_row":
            m[2] = False
        kw_t, kw_g = {"attn_mask": torch.tensor(m)}, {"attn_mask": gm.tensor(m)}
    elif case == "float":
        m = rng.normal(size=(3, 5, 6))
        kw_t, kw_g = {"attn_mask": torch.tensor(m)}, {"attn_mask": gm.tensor(m)}
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    gs = [_t(a) for a in arrs]
    ot = torch.nn.functional.scaled_dot_product_attention(*ts, **kw_t)
    og = F.scaled_dot_product_attention(*gs, **kw_g)
    (ot ** 2).sum().backward()
    (og ** 2).sum().backward()
    _grads_close([(ot, og)] + [(a.grad, b.grad) for a, b in zip(ts, gs)])


@pytest.mark.parametrize("kw", [{}, {"batch_first": True}, {"kdim": 3, "vdim": 5},
                                {"bias": False, "add_zero_attn": True},
                                {"add_bias_kv": True, "batch_first": True}])
@pytest.mark.parametrize("masks", ["none", "padding", "bool_attn", "float3d_and_padding",
                                   "per_head_weights"])
def test_mha_matches_torch(kw, masks):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    tm = torch.nn.MultiheadAttention(8, 2, dtype=torch.float64, **kw)
    ours = gm.nn.MultiheadAttention(8, 2, dtype=gm.float64, **kw)
    assert list(ours.state_dict()) == list(tm.state_dict())
    ours.load_state_dict({n: gm.tensor(p.detach().numpy()) for n, p in tm.state_dict().items()})
    N, L, S = 3, 4, 5
    bf = kw.get("batch_first", False)
    dims = [8, kw.get("kdim", 8), kw.get("vdim", 8)]
    arrs = [rng.normal(size=(N, n, d) if bf else (n, N, d)) for n, d in zip((L, S, S), dims)]
    kpm = rng.random((N, S)) > 0.6
    kpm[:, 0] = False
    am = rng.random((L, S)) > 0.6
    am[:, 1] = False
    extra = {"none": {}, "padding": {"key_padding_mask": kpm}, "bool_attn": {"attn_mask": am},
             "float3d_and_padding": {"attn_mask": rng.normal(size=(N * 2, L, S)),
                                     "key_padding_mask": rng.normal(size=(N, S))},
             "per_head_weights": {"attn_mask": am, "average_attn_weights": False}}[masks]
    ts = [torch.tensor(a, requires_grad=True) for a in arrs]
    gs = [_t(a) for a in arrs]
    ot, wt = tm(*ts, **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                        for k, v in extra.items()})
    og, wg = ours(*gs, **{k: gm.tensor(v) if isinstance(v, np.ndarray) else v
                          for k, v in extra.items()})
    ((ot ** 2).sum() + (wt ** 3).sum()).backward()
    ((og ** 2).sum() + (wg ** 3).sum()).backward()
    ours_p = dict(ours.named_parameters())
    _grads_close([(ot, og), (wt, wg)] + [(a.grad, b.grad) for a, b in zip(ts, gs)]
                 + [(p.grad, ours_p[n].grad) for n, p in tm.named_parameters()])


def test_mha_unbatched_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    tm = torch.nn.MultiheadAttention(4, 2, dtype=torch.float64)
    ours = gm.nn.MultiheadAttention(4, 2, dtype=gm.float64)
    ours.load_state_dict({n: gm.tensor(p.detach().numpy()) for n, p in tm.state_dict().items()})
    x = rng.normal(size=(3, 4))
    kpm = np.array([False, True, False])
    ot, wt = tm(*(torch.tensor(x),) * 3, key_padding_mask=torch.tensor(kpm))
    og, wg = ours(*(gm.tensor(x),) * 3, key_padding_mask=gm.tensor(kpm))
    _grads_close([(ot, og), (wt, wg)])
