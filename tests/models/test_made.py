"""MADE: masks make every output blind to itself and later inputs (exact zero gradients), the
likelihood is normalized (sums to 1 over every configuration of a tiny image), the K-mask
ensemble NLL is the log-mean-exp of the per-mask likelihoods, sampling follows the model,
it overfits a tiny batch, and it trains from the CLI."""
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gmcore as gm
from gmcore.models.autoregressive.made import MADE, made_degrees, made_masks
from gmcore.models.base import DataInfo


def _made(shape=(1, 3, 3), levels=2, seed=0, **kw):
    gm.manual_seed(seed)
    kw.setdefault("hidden", 24)
    kw.setdefault("binarize", "threshold" if levels == 2 else "none")
    return MADE(MADE.Config(**kw), DataInfo(shape, levels, "toy")).double()


def _digits(n, binary):
    from gmcore.data.digits import load_digits_arrays

    x = load_digits_arrays("train")[0][:n].astype(np.float32) / 16.0
    return gm.tensor((x > 0.5).astype(np.float32) if binary else x)


@given(seed=st.integers(0, 10_000), levels=st.sampled_from([2, 3]), layers=st.integers(1, 3),
       direct=st.booleans(), ordering=st.sampled_from(["natural", "random"]))
def test_outputs_never_see_their_own_or_later_inputs(seed, levels, layers, direct, ordering):
    m = _made(levels=levels, seed=seed, layers=layers, direct=direct, ordering=ordering,
              num_masks=2, mask_seed=seed)
    D = 9
    for k in range(2):
        m.use_mask(k)
        rank = np.empty(D, dtype=int)
        rank[m.orderings[k]] = np.arange(D)          # position of each dimension in the order
        x = gm.tensor(np.random.default_rng(seed).integers(0, levels, (2, D)) / (levels - 1),
                      dtype=gm.float64, requires_grad=True)
        out = m.logits(x)
        for d in range(D):
            x.grad = None
            (out[:, d] if levels == 2 else out[:, :, d]).sum().backward(retain_graph=True)
            g = x.grad.numpy()
            forbidden = rank >= rank[d]
            assert np.all(g[:, forbidden] == 0.0), (k, d)      # exactly zero, not small


def test_degrees_and_masks_follow_the_paper():
    rng = np.random.default_rng(0)
    order = rng.permutation(6)
    deg = made_degrees(6, [10, 7], order, rng)
    assert deg[0][order].tolist() == [1, 2, 3, 4, 5, 6]
    assert all(((h >= 1) & (h <= 5)).all() for h in deg[1:])
    assert deg[2].min() >= deg[1].min()
    masks = made_masks(deg, direct=True)
    assert [mk.shape for mk in masks] == [(10, 6), (7, 10), (6, 7), (6, 6)]
    paths = masks[2].astype(int) @ masks[1].astype(int) @ masks[0].astype(int)
    allowed = deg[0][:, None] > deg[0][None, :]
    assert np.all(paths[~allowed] == 0) and np.all(masks[3] == allowed)
    with pytest.raises(ValueError, match="permutation"):
        made_degrees(3, [4], [0, 0, 1])


@pytest.mark.parametrize("levels,num_masks", [(2, 1), (2, 3), (3, 1), (3, 2)])
def test_likelihood_sums_to_one_over_all_images(levels, num_masks):
    m = _made(shape=(1, 1, 4) if levels == 2 else (1, 1, 3), levels=levels, num_masks=num_masks,
              hidden=16, layers=2)
    D = m.D
    grid = np.array(list(itertools.product(range(levels), repeat=D)), dtype=np.float64)
    x = gm.tensor(grid.reshape(-1, *m.data.shape) / (levels - 1), dtype=gm.float64)
    nll = m.nll((x,)).detach().numpy()
    assert nll.shape == (levels ** D,) and np.all(np.isfinite(nll))
    assert math.isclose(np.exp(-nll).sum(), 1.0, rel_tol=1e-10)


def test_ensemble_nll_is_log_mean_exp_of_mask_likelihoods():
    m = _made(num_masks=3, layers=2, direct=True)
    x = (gm.rand(5, 1, 3, 3, dtype=gm.float64) > 0.5).double()
    per_mask = []
    for k in range(3):
        m.use_mask(k)
        per_mask.append(-m._log_prob(x.reshape(5, 9)).detach().numpy())
    per_mask = np.array(per_mask)
    want = -(np.log(np.exp(-per_mask).mean(0)))
    np.testing.assert_allclose(m.nll((x,)).detach().numpy(), want, rtol=1e-12)
    assert np.all(want <= per_mask.mean(0) + 1e-12)               # Jensen: never worse on average
    assert "ensemble of 3" in m.nll_kind and _made(num_masks=1).nll_kind == "exact"


def test_loss_cycles_masks_and_agrees_with_nll():
    m = _made(num_masks=3)
    x = (gm.rand(6, 1, 3, 3, dtype=gm.float64) > 0.5).double()
    m.eval()
    assert int(m.steps_done.item()) == 0
    m.train()
    losses = [m.loss((x,))[0].item() for _ in range(4)]
    assert int(m.steps_done.item()) == 4 and losses[3] == losses[0]   # step 3 reuses mask 0
    single = _made(num_masks=1, ordering="natural")
    single.eval()
    loss, _ = single.loss((x,))
    assert loss.item() == pytest.approx(single.nll((x,)).mean().item(), rel=1e-12)


@pytest.mark.parametrize("levels", [2, 3])
def test_samples_follow_the_model(levels):
    m = _made(shape=(1, 1, 3), levels=levels, num_masks=2, hidden=16, seed=1)
    with gm.no_grad():                     # make the conditionals far from uniform
        for p in m.parameters():
            p.mul_(4.0)
    s = m.sample(6000, generator=gm.Generator().manual_seed(0))
    assert s.shape == (6000, 1, 1, 3) and s.dtype == gm.float64      # the model's dtype
    lv = s.numpy().reshape(6000, 3) * (levels - 1)
    assert np.all(lv == np.round(lv)) and lv.min() >= 0 and lv.max() <= levels - 1
    grid = np.array(list(itertools.product(range(levels), repeat=3)))
    probs = np.exp(-m.nll((gm.tensor(grid.reshape(-1, 1, 1, 3) / (levels - 1)),)).detach().numpy())
    codes = (lv.astype(int) * levels ** np.arange(2, -1, -1)).sum(1)
    freq = np.bincount(codes, minlength=len(grid)) / 6000
    assert np.abs(freq - probs).max() < 4 * np.sqrt(probs.max() / 6000) + 1e-3


@pytest.mark.parametrize("binary", [True, False])
def test_overfits_a_tiny_batch(binary):
    gm.manual_seed(0)
    info = DataInfo((1, 8, 8), 2 if binary else 17, "digits")
    m = MADE(MADE.Config(hidden=256, num_masks=1, binarize="threshold" if binary else "none"), info)
    x = _digits(16, binary)
    before = m.nll((x,)).mean().item()
    opt = gm.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = m.loss((x,))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.nll((x,)).mean().item()
    assert after < 0.4 * before
    levels = 2 if binary else 17
    assert after < 0.5 * 64 * math.log(levels)          # far below uniform


def test_rejects_data_it_cannot_model():
    with pytest.raises(ValueError, match="binary data"):
        MADE(MADE.Config(), DataInfo((1, 8, 8), 17, "digits"))
    with pytest.raises(ValueError, match="images"):
        MADE(MADE.Config(), DataInfo((64,), 100, "text"))
    m = _made()
    with pytest.raises(ValueError, match="float images"):
        m.loss((gm.zeros(2, 1, 4, 4, dtype=gm.float64),))
    assert MADE.dataset_options(MADE.Config()) == {"binarize": "threshold"}
    assert MADE.dataset_options(MADE.Config(binarize="none")) == {}


@pytest.mark.parametrize("binarize", ["threshold", "none"])
def test_cli_trains_end_to_end(tmp_path, binarize):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    name, tcfg, mcfg = parse_train_args("made", [
        "--out", str(tmp_path / "run"), "--steps", "6", "--batch-size", "32", "--no-progress",
        "--no-sample-quality", "--num-samples", "4", "--eval-every", "3", "--hidden", "32",
        "--num-masks", "2", "--binarize", binarize])
    res = train.train(name, tcfg, mcfg, log=lambda *a: None)
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["step"] == 6 and final["test_bits_per_dim"] == res["test_bits_per_dim"]
    assert np.isfinite(final["test_bits_per_dim"]) and "ensemble of 2" in final["nll_kind"]
    top = 1.0 if binarize == "threshold" else math.log2(17)
    assert 0 < final["baseline_bits_per_dim"] < top and final["test_bits_per_dim"] < 2 * top
    assert (tmp_path / "run" / "samples.png").exists()


def test_resume_continues_the_mask_cycle(tmp_path):
    pytest.importorskip("safetensors")
    from gmcore import train
    from gmcore.cli_train import parse_train_args

    def run(out, steps, *extra):
        name, tcfg, mcfg = parse_train_args("made", [
            "--out", str(out), "--steps", str(steps), "--batch-size", "16", "--no-progress",
            "--no-sample-quality", "--num-samples", "0", "--eval-every", "0", "--log-every", "1",
            "--lr-schedule", "constant", "--warmup", "0", "--hidden", "16", "--num-masks", "3",
            *extra])
        train.train(name, tcfg, mcfg, log=lambda *a: None)
        rows = (out / "metrics.jsonl").read_text().splitlines()
        return [json.loads(r)["loss"] for r in rows if '"train"' in r]

    full = run(tmp_path / "full", 7)
    run(tmp_path / "part", 4)
    assert run(tmp_path / "part", 7, "--resume") == full      # same masks, same steps, bit for bit
