"""nn.VectorQuantizer: shapes, straight-through gradient, losses, EMA updates, dead-code restarts."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.nn import VectorQuantizer


def _vq(k=6, d=3, seed=0, **kw):
    vq = VectorQuantizer(k, d, **kw)
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((k, d)) * 2
    vq.embedding.data[...] = codes
    if vq.ema:
        vq.embed_sum.data[...] = codes
    return vq, codes


def _nearest(x, codes):
    return ((x[:, None, :] - codes[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize("shape", [(20, 3), (2, 3, 4, 5), (3, 3, 7)])
def test_shapes_and_values(shape):
    vq, codes = _vq()
    vq.eval()
    z = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    q, loss, info = vq(gm.tensor(z))
    assert q.shape == shape and loss.shape == ()
    flat = np.moveaxis(z, 1, -1).reshape(-1, 3) if len(shape) > 2 else z
    idx = _nearest(flat.astype(np.float64), codes.astype(np.float32).astype(np.float64))
    expected_idx_shape = (shape[0],) + shape[2:] if len(shape) > 2 else (shape[0],)
    assert info["indices"].shape == expected_idx_shape and info["indices"].dtype == gm.int64
    np.testing.assert_array_equal(info["indices"].numpy().reshape(-1), idx)
    qf = np.moveaxis(q.numpy(), 1, -1).reshape(-1, 3) if len(shape) > 2 else q.numpy()
    np.testing.assert_allclose(qf, codes.astype(np.float32)[idx], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss.item(), 0.25 * ((flat - qf) ** 2).mean(), rtol=1e-5)


def test_straight_through_and_commitment_gradient():
    vq, _ = _vq(beta=0.0)
    z = gm.tensor(np.random.default_rng(2).standard_normal((2, 3, 4)), dtype=gm.float32, requires_grad=True)
    w = np.random.default_rng(3).standard_normal((2, 3, 4)).astype(np.float32)
    q, loss, _ = vq(z)
    ((q * gm.tensor(w)).sum() + loss).backward()
    np.testing.assert_allclose(z.grad.numpy(), w, rtol=1e-6)  # identity through the quantizer
    vq2, _ = _vq(beta=0.5)
    z2 = gm.tensor(z.detach().numpy(), requires_grad=True)
    q2, loss2, _ = vq2(z2)
    loss2.backward()  # d/dz beta * mean((z - sg(q))^2) = 2 beta (z - q) / numel
    np.testing.assert_allclose(z2.grad.numpy(), 2 * 0.5 * (z2.detach().numpy() - q2.detach().numpy()) / 24,
                               rtol=1e-5, atol=1e-7)


def test_codebook_loss_without_ema():
    vq, codes = _vq(ema=False, beta=0.25)
    assert vq.embedding.requires_grad and not hasattr(vq, "embed_sum")
    z = np.random.default_rng(4).standard_normal((30, 3)).astype(np.float32)
    q, loss, info = vq(gm.tensor(z))
    idx = info["indices"].numpy()
    c32 = codes.astype(np.float32)
    np.testing.assert_allclose(loss.item(), 1.25 * ((z - c32[idx]) ** 2).mean(), rtol=1e-5)
    loss.backward()
    expected = np.zeros_like(codes)
    np.add.at(expected, idx, 2 * (c32[idx] - z) / z.size)  # codebook term only
    np.testing.assert_allclose(vq.embedding.grad.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_ema_update_matches_formula_and_eval_freezes():
    k, d, decay, eps = 5, 3, 0.9, 1e-5
    vq, codes = _vq(k, d, decay=decay, eps=eps, dead_code_threshold=0.0)
    assert not vq.embedding.requires_grad
    z = np.random.default_rng(5).standard_normal((40, d)).astype(np.float32)
    c32 = codes.astype(np.float32)
    idx = _nearest(z.astype(np.float64), c32.astype(np.float64))
    vq.train()
    vq(gm.tensor(z))
    counts = np.bincount(idx, minlength=k)
    sums = np.zeros((k, d))
    np.add.at(sums, idx, z.astype(np.float64))
    cs = decay * 1.0 + (1 - decay) * counts
    es = decay * c32 + (1 - decay) * sums
    n = cs.sum()
    emb = es / ((cs + eps) / (n + k * eps) * n)[:, None]
    np.testing.assert_allclose(vq.cluster_size.numpy(), cs, rtol=1e-6)
    np.testing.assert_allclose(vq.embed_sum.numpy(), es, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.embedding.detach().numpy(), emb, rtol=1e-5, atol=1e-6)
    before = {name: t.numpy().copy() for name, t in vq.state_dict().items()}
    vq.eval()
    vq(gm.tensor(z))
    for name, t in vq.state_dict().items():
        np.testing.assert_array_equal(t.numpy(), before[name])


def test_dead_code_restart_is_seeded():
    def run(seed):
        vq, codes = _vq(8, 3, generator=gm.Generator().manual_seed(seed), dead_code_threshold=0.5)
        vq.cluster_size.data[[2, 5]] = 0.1  # dead, and far away so no batch vector picks them
        vq.embedding.data[[2, 5]] = 100.0
        vq.embed_sum.data[[2, 5]] = 100.0
        z = np.random.default_rng(6).standard_normal((16, 3)).astype(np.float32)
        vq.train()
        vq(gm.tensor(z))
        return vq, z

    vq, z = run(7)
    emb = vq.embedding.detach().numpy()
    for c in (2, 5):  # restarted from batch vectors, alive again
        assert any(np.array_equal(emb[c], row) for row in z)
        assert vq.cluster_size.numpy()[c] == 1.0
    np.testing.assert_array_equal(vq.embed_sum.numpy()[[2, 5]], emb[[2, 5]])
    assert vq.dead_codes() == 0
    vq_again, _ = run(7)
    np.testing.assert_array_equal(vq_again.embedding.detach().numpy(), emb)


def test_perplexity_usage_and_state_dict():
    vq, codes = _vq(4, 2)
    vq.eval()
    z = np.repeat(codes[[1]].astype(np.float32), 10, axis=0)  # all rows on code 1
    _, _, info = vq(gm.tensor(z))
    assert info["perplexity"].item() == pytest.approx(1.0) and info["usage"].item() == pytest.approx(0.25)
    z = codes.astype(np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]  # even use of all codes
    _, _, info = vq(gm.tensor(z))
    assert info["perplexity"].item() == pytest.approx(4.0, rel=1e-5) and info["usage"].item() == 1.0
    np.testing.assert_array_equal(info["counts"].numpy(), [2, 2, 2, 2])
    sd = vq.state_dict()
    assert set(sd) == {"embedding", "cluster_size", "embed_sum"}
    other = VectorQuantizer(4, 2)
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other.embedding.detach().numpy(), vq.embedding.detach().numpy())


def test_bad_input():
    vq = VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match="D=3"):
        vq(gm.zeros(5, 2))
    with pytest.raises(ValueError, match="channels-first"):
        vq(gm.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(4, 3, decay=1.0)


@pytest.mark.parametrize("training", [False, True])
def test_nonfinite_input_raises_and_leaves_state_alone(training):
    """Issue 11 item 10: a NaN vector used to be quantized to code 0 silently."""
    vq, _ = _vq()
    vq.train(training)
    z = np.random.default_rng(7).standard_normal((2, 3, 4, 5)).astype(np.float32)
    z[0, 1, 2, 3] = np.nan
    z[1, :, 0, 0] = np.nan
    z[1, 2, 3, 4] = -np.inf
    before = {name: t.numpy().copy() for name, t in vq.state_dict().items()}
    with pytest.raises(ValueError, match="3 of 40 rows of z contain NaN or inf"):
        vq(gm.tensor(z))
    for name, t in vq.state_dict().items():
        np.testing.assert_array_equal(t.numpy(), before[name])


def test_nan_code_is_never_chosen_and_gets_restarted():
    vq, codes = _vq(6, 3, dead_code_threshold=0.995)
    vq.embedding.data[2] = np.nan
    vq.embed_sum.data[2] = np.nan
    z = np.repeat(codes[[2]], 8, axis=0).astype(np.float32)  # right where code 2 was
    vq.eval()
    q, _, info = vq(gm.tensor(z))
    assert 2 not in info["indices"].numpy() and np.isfinite(q.numpy()).all()
    vq.train()
    vq(gm.tensor(z))  # code 2 goes unused: its usage decays below the threshold, it restarts
    assert np.isfinite(vq.embedding.detach().numpy()).all()
    assert np.isfinite(vq.embed_sum.numpy()).all()


def test_kmeans_init_seeds_one_code_per_cluster_once():
    """Issue 14: k-means++ seeding from the first training batch. Eight tight, far-apart clusters
    and eight codes: D^2 sampling puts one code in each (a second draw in a cluster already
    holding a code has probability ~1e-8 here); the seeding happens once and is in the state."""
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((8, 3)) * 50
    z = (centres[rng.integers(0, 8, 200)] + rng.standard_normal((200, 3)) * 0.01).astype(np.float32)
    z[:8] = centres  # every cluster present
    vq = VectorQuantizer(8, 3, kmeans_init=True, dead_code_threshold=0.0,
                         generator=gm.Generator().manual_seed(0))
    assert "initialized" in vq.state_dict() and vq.initialized.item() == 0
    vq.eval()
    vq(gm.tensor(z))                         # eval mode: no seeding
    assert vq.initialized.item() == 0
    vq.train()
    _, _, info = vq(gm.tensor(z))
    assert vq.initialized.item() == 1 and info["usage"].item() == 1.0
    emb = vq.embedding.detach().numpy()
    nearest_centre = ((emb[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    assert sorted(nearest_centre) == list(range(8))
    np.testing.assert_allclose(((emb - centres[nearest_centre]) ** 2).sum(1), 0, atol=1.0)
    before = emb.copy()
    vq(gm.tensor(z[::-1].copy()))            # no second seeding: only the EMA moves the codes
    assert np.abs(vq.embedding.detach().numpy() - before).max() < 1.0
    fresh = VectorQuantizer(8, 3, kmeans_init=True)
    fresh.load_state_dict(vq.state_dict())
    assert fresh.initialized.item() == 1


def test_kmeans_init_with_fewer_vectors_than_codes():
    vq = VectorQuantizer(6, 2, kmeans_init=True, generator=gm.Generator().manual_seed(1))
    z = np.array([[0.0, 0.0], [5.0, 5.0]], np.float32)
    vq.train()
    _, _, info = vq(gm.tensor(z))        # duplicates, not an error
    emb = vq.embedding.detach().numpy()
    assert np.isfinite(emb).all() and info["usage"].item() == pytest.approx(2 / 6)


def test_restart_draws_vectors_by_their_distance_to_the_codes():
    """Issue 14: dead codes restart on batch vectors drawn by squared distance to their code, so
    copies of a vector that a code already holds (blank image patches) are never drawn."""
    vq, codes = _vq(4, 2, generator=gm.Generator().manual_seed(3), dead_code_threshold=0.5, decay=0.999)
    vq.cluster_size.data[[1, 2]] = 0.1          # two dead codes
    z = np.repeat(codes[[0]], 30, axis=0).astype(np.float32)   # 30 copies of code 0
    far = codes[0] + np.array([[40.0, 0.0], [0.0, 40.0]])
    z = np.concatenate([z, far.astype(np.float32)])
    vq.train()
    vq(gm.tensor(z))
    emb = vq.embedding.detach().numpy()
    assert sorted(map(tuple, emb[[1, 2]].round(4))) == sorted(map(tuple, far.astype(np.float32).round(4)))
