"""vq-prior: causality of every level's logits in raster order (and no blind spot), the bottom's
dependence on the top codes, the bound's arithmetic, sampling shapes and ranges, class
conditioning, and clear errors for a missing or wrong base. A two-level stub base stands in
for vqvae2 (these tests need only the "vq-codes" protocol); the real vqvae is the one-level base.
"""
import numpy as np
import pytest

import gmcore as gm
from gmcore.models.base import DataInfo, GenerativeModel
from gmcore.models.latent.vq_prior import VQPrior
from gmcore.models.latent.vqvae import VQVAE

INFO = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
SMALL = dict(embed_dim=6, channels=8, layers=4, heads=2, cond_channels=6, out_hidden=8, attention=1)


class TwoLevelStub(GenerativeModel):
    """The "vq-codes" protocol with two levels (top 5 codes on 2x2, bottom 7 codes on 4x4) and a
    fixed decoder: image = the bottom codes, upsampled; -log p(x|z) = a squared error."""

    latent_kind = "vq-codes"
    code_levels = ((5, 2, 2), (7, 4, 4))

    def __init__(self):
        super().__init__(None, INFO)
        self.scale = gm.nn.Parameter(gm.ones(1))

    def encode(self, x):
        pooled = x.reshape(x.shape[0], 4, 2, 4, 2).mean((2, 4))                 # (B, 4, 4)
        bottom = (pooled * 6).round().long()
        top = (pooled.reshape(x.shape[0], 2, 2, 2, 2).mean((2, 4)) * 4).round().long()
        return top, bottom

    def decode(self, codes):
        b = codes[1].float() / 6
        return b.repeat_interleave(2, 1).repeat_interleave(2, 2).unsqueeze(1) * self.scale

    def recon_nll(self, x, codes=None):
        codes = self.encode(x) if codes is None else codes
        return ((x - self.decode(codes)) ** 2).sum((1, 2, 3)) * 10.0


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = gm.tensor((rng.integers(0, 17, (n, 1, 8, 8)) / 16).astype(np.float32))
    return x, gm.tensor(rng.integers(0, 10, n))


def _prior(base=None, **kw):
    gm.manual_seed(0)
    model = VQPrior(VQPrior.Config(**{**SMALL, **kw}), INFO, base=base or TwoLevelStub())
    return model.eval()


def _logits(model, codes, labels=None):
    """Every level's logits as NumPy arrays (no graph)."""
    with gm.no_grad():
        return [lg.numpy() for lg in model.level_logits(codes, labels)]


def _random_codes(model, n, seed):
    rng = np.random.default_rng(seed)
    return [gm.tensor(rng.integers(0, K, (n, h, w))) for K, h, w in model.levels]


def test_every_level_is_causal_in_raster_order_without_blind_spot():
    model = _prior()
    labels = gm.tensor([3, 7])
    codes = _random_codes(model, 2, seed=1)
    base_logits = _logits(model, codes, labels)
    for lv, (K, h, w) in enumerate(model.levels):
        for t in range(h * w):
            i, j = divmod(t, w)
            changed = [c.clone() for c in codes]
            changed[lv].data[:, i, j] = (changed[lv].data[:, i, j] + 1) % K
            new_all = _logits(model, changed, labels)
            new = new_all[lv].reshape(2, K, h * w)
            old = base_logits[lv].reshape(2, K, h * w)
            diff = np.abs(new - old).max(axis=(0, 1))                         # per position
            assert np.all(diff[:t + 1] <= 1e-6), (lv, t, diff)              # itself and earlier: untouched
            assert np.all(diff[t + 1:] > 1e-7), (lv, t, diff)               # every later one sees it
            # a finer level never looks back at a coarser level's logits
            for other in range(lv):
                assert np.allclose(new_all[other], base_logits[other])


def test_gated_dropout_is_active_in_training_and_keeps_causality():
    model = _prior(gated_dropout=0.5, dropout=0.0).train()
    labels = gm.tensor([3, 7])
    codes = _random_codes(model, 2, seed=2)

    def logits(c, seed):
        gm.manual_seed(seed)                      # the same dropout masks for the same seed
        return _logits(model, c, labels)

    first = logits(codes, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, logits(codes, 0)))
    assert not np.allclose(first[1], logits(codes, 1)[1])        # the masks differ
    K, h, w = model.levels[1]
    for t in (0, 5, 10):
        changed = [c.clone() for c in codes]
        changed[1].data[:, t // w, t % w] = (changed[1].data[:, t // w, t % w] + 1) % K
        diff = np.abs(logits(changed, 0)[1] - first[1]).reshape(2, K, h * w).max(axis=(0, 1))
        assert np.all(diff[:t + 1] <= 1e-6) and np.all(diff[t + 1:] > 1e-7), (t, diff)
    model.eval()
    assert all(np.array_equal(a, b) for a, b in zip(logits(codes, 0), logits(codes, 1)))


def test_bottom_depends_on_the_top_codes_and_the_top_has_attention():
    model = _prior()
    assert len(model.priors[0].attn) == 1 and len(model.priors[1].attn) == 0
    labels = gm.tensor([0, 1])
    codes = _random_codes(model, 2, seed=2)
    before = _logits(model, codes, labels)[1]
    codes[0] = (codes[0] + 1) % 5
    after = _logits(model, codes, labels)[1]
    assert np.abs(after - before).max() > 1e-4


def test_bound_is_prior_plus_recon_nats():
    base = TwoLevelStub()
    model = _prior(base, code_search="none")
    x, y = _batch(5)
    codes = base.encode(x)
    logits = _logits(model, codes, y)
    prior = np.zeros(5)
    for lg, z in zip(logits, codes):
        logp = lg.astype(np.float64)
        logp = logp - np.log(np.exp(logp - logp.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - logp.max(1, keepdims=True)
        prior -= np.take_along_axis(logp, z.numpy()[:, None], 1).reshape(5, -1).sum(1)
    with gm.no_grad():
        recon = base.recon_nll(x, codes).numpy()
        nll = model.nll((x, y)).numpy()
        nll_codes = model.nll((x, y, *codes)).numpy()
    assert np.allclose(nll, prior + recon, rtol=1e-5, atol=1e-4)
    # the same figure from a batch that carries its codes (what prepare_data serves)
    assert np.allclose(nll_codes, nll, rtol=1e-6)
    loss, logs = model.loss((x, y, *codes))
    assert np.isclose(float(loss.item()), prior.mean(), rtol=1e-5)
    assert np.isclose(logs["top_nats"] + logs["bottom_nats"], logs["prior_nats"], rtol=1e-6)
    assert model.nll_kind.startswith("bound") and "class-conditional" in model.nll_kind


def test_neighbours_bound_sums_the_joint_over_distinct_one_position_changes():
    base = TwoLevelStub()
    model = _prior(base)                                   # "auto": 1 + 4*4 + 16*6 = 113 grids
    assert model.search_size() == 113 and model.searches_codes()
    assert "the 112 code grids one position away" in model.nll_kind
    x, y = _batch(3)
    codes = tuple(c.numpy() for c in base.encode(x))
    with gm.no_grad():
        nll = model.nll((x, y)).numpy()
        single = _prior(base, code_search="none").nll((x, y)).numpy()
    for b in range(3):                                     # brute force, one image at a time
        own = [c[b:b + 1].copy() for c in codes]
        grids, seen = [own], {tuple(a.tobytes() for a in own)}
        for lv, (K, h, w) in enumerate(model.levels):
            for pos in range(h * w):
                for k in range(K):
                    g = [c[b:b + 1].copy() for c in codes]
                    g[lv].reshape(-1)[pos] = k
                    key = tuple(a.tobytes() for a in g)
                    if key not in seen:                    # each change once
                        seen.add(key)
                        grids.append(g)
        assert len(grids) == 113
        n = len(grids)                                     # every grid of image b in one batch
        stacked = tuple(gm.tensor(np.concatenate([g[lv] for g in grids])) for lv in range(2))
        with gm.no_grad():
            joint = model.joint_nats(x[b:b + 1].expand(n, 1, 8, 8), stacked,
                                     y[b:b + 1].expand(n)).numpy().astype(np.float64)
        m = (-joint).max()
        np.testing.assert_allclose(nll[b], -(m + np.log(np.exp(-joint - m).sum())), rtol=1e-5)
        np.testing.assert_allclose(single[b], joint[0], rtol=1e-5)
    assert np.all(nll <= single + 1e-4) and np.all(nll < single)
    # a large search is off under "auto", forced on by "neighbours", refused when misspelt
    big = _prior(TwoLevelStub(), code_search="auto")
    big.levels = ((512, 8, 8),)
    assert not big.searches_codes() and "z = the base's codes of x" in big.nll_kind
    big.config.code_search = "neighbours"
    assert big.searches_codes()
    big.config.code_search = "all"
    with pytest.raises(ValueError, match="code-search"):
        big.searches_codes()


def test_one_level_vqvae_base_samples_codes_in_range():
    gm.manual_seed(0)
    base = VQVAE(VQVAE.Config(codes=9, code_dim=4, hidden=8, res_hidden=4, res_blocks=1, downsample=1), INFO)
    model = _prior(base, conditional=False)
    assert model.levels == ((9, 4, 4),) and model.num_classes == 0
    x, y = _batch(3)
    loss, logs = model.loss((x, y))
    assert set(logs) == {"prior_nats", "codes_nats", "codes_bits_per_code"}
    codes = model.sample_codes(6, generator=gm.Generator().manual_seed(1))
    assert len(codes) == 1 and tuple(codes[0].shape) == (6, 4, 4) and codes[0].dtype == gm.int64
    assert codes[0].numpy().min() >= 0 and codes[0].numpy().max() < 9
    img = model.sample(6, generator=gm.Generator().manual_seed(1), temperature=0.5)
    assert tuple(img.shape) == (6, 1, 8, 8)
    assert img.numpy().min() >= 0.0 and img.numpy().max() <= 1.0


def test_two_level_sampling_shapes_range_and_determinism():
    model = _prior()
    gen = gm.Generator().manual_seed(3)
    top, bottom = model.sample_codes(7, generator=gen)
    assert tuple(top.shape) == (7, 2, 2) and tuple(bottom.shape) == (7, 4, 4)
    assert 0 <= top.numpy().min() and top.numpy().max() < 5
    assert 0 <= bottom.numpy().min() and bottom.numpy().max() < 7
    again = model.sample_codes(7, generator=gm.Generator().manual_seed(3))
    assert np.array_equal(again[1].numpy(), bottom.numpy())
    assert tuple(model.sample(4, generator=gen).shape) == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=0.0)
    with pytest.raises(ValueError, match="labels must lie"):
        model.sample(2, labels=[0, 10])


def test_class_conditioning_changes_the_logits():
    model = _prior()
    for prior in model.priors:   # zero at start (training begins unconditional): give it weights
        prior.label_bias.weight.data[...] = np.random.default_rng(0).standard_normal(
            prior.label_bias.weight.shape).astype(np.float32)
    codes = _random_codes(model, 2, seed=4)
    a = _logits(model, codes, gm.tensor([1, 1]))
    b = _logits(model, codes, gm.tensor([2, 2]))
    for la, lb in zip(a, b):
        assert np.abs(la - lb).max() > 1e-3
    with pytest.raises(ValueError, match="class-conditional"):
        model.level_logits(codes)
    assert model.class_conditional and not _prior(conditional=False).class_conditional


def test_a_few_steps_lower_the_prior_nats():
    model = _prior().train()
    x, y = _batch(16, seed=5)
    codes = model.base.encode(x)
    opt = gm.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(25):
        loss, _ = model.loss((x, y, *codes))
        first = first if first is not None else float(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.item()) < 0.7 * first
    assert model.base.scale.grad is None                              # the base stays frozen


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="--base-run"):
        VQPrior(VQPrior.Config(), INFO)
    from gmcore.models.latent.vae import VAE
    not_vq = VAE(VAE.Config(), INFO)
    with pytest.raises(ValueError, match="vq-codes"):
        VQPrior(VQPrior.Config(), INFO, base=not_vq)
    with pytest.raises(ValueError, match="divisible by --heads"):
        _prior(channels=6, heads=4)
    with pytest.raises(ValueError, match="at most --layers"):
        _prior(layers=2, attention=3)
    model = _prior()
    x, y = _batch(2)
    with pytest.raises(ValueError, match="code grids"):
        model.loss((x, y, gm.zeros(2, 4, 4, dtype=gm.int64)))
    with pytest.raises(ValueError, match="int64"):
        model.loss((x, y, gm.zeros(2, 2, 2, dtype=gm.int64), gm.zeros(2, 3, 3, dtype=gm.int64)))
