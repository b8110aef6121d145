"""gmcore.metrics (bits/dim, dequantization, IWAE, baseline) and gmcore.feature_metrics."""
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore import feature_metrics as fm
from gmcore import metrics


def test_bits_per_dim_formula():
    assert metrics.bits_per_dim(math.log(2) * 10, 10) == pytest.approx(1.0)
    assert metrics.bits_per_dim(gm.tensor([2.0, 4.0]) * math.log(2), 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_dims"):
        metrics.bits_per_dim(1.0, 0)


def test_dequantization_term():
    # A uniform density on [0, 1]^D has NLL 0; plus D log K it is exactly the uniform over K levels.
    assert metrics.dequantization_nats(64, 17) == pytest.approx(64 * math.log(17))
    assert metrics.dequantization_nats(1, 256, data_range=2.0) == pytest.approx(math.log(128))
    with pytest.raises(ValueError, match="num_levels"):
        metrics.dequantization_nats(4, 1)


def test_iwae_bound_matches_logmeanexp_and_tightens():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=(50, 4))
    got = metrics.iwae_bound(gm.tensor(lw)).numpy()
    ref = -(np.log(np.exp(lw).mean(0)))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    elbo = -lw.mean(0)
    assert np.all(got <= elbo + 1e-12)             # Jensen: the IWAE bound is tighter
    with pytest.raises(ValueError, match="k, batch"):
        metrics.iwae_bound(gm.zeros(3))


def test_categorical_baseline_by_hand():
    train = np.array([[0, 2], [0, 2], [1, 2]])
    test = np.array([[1, 0]])
    # dim 0: counts (2+1, 1+1, 0+1)/6 -> p(1) = 2/6; dim 1: p(0) = 1/6
    expect = -math.log(2 / 6) - math.log(1 / 6)
    assert metrics.categorical_baseline_nll(train, test, 3) == pytest.approx(expect)
    with pytest.raises(ValueError, match="levels must lie"):
        metrics.categorical_baseline_nll(train, np.array([[3, 0]]), 3)


def test_frechet_distance_known_values():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 2))
    assert fm.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    b = rng.normal(size=(4000, 2)) * 2.0          # covariance 4I: tr(I + 4I - 2*2I) = 2
    assert fm.frechet_distance(a, b) == pytest.approx(2.0, abs=0.15)


def test_kid_and_precision_recall():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    far = b + 5.0
    assert abs(fm.kid(a, b)[0]) < 0.05 < fm.kid(a, far)[0]
    p, r = fm.precision_recall(a, a)
    assert p == 1.0 and r == 1.0
    p, r = fm.precision_recall(a, far)
    assert p < 0.05 and r < 0.05


def test_digits_classifier_cached_and_accurate(tmp_path, monkeypatch):
    from gmcore.data.digits import load_digits_arrays

    monkeypatch.setenv("GMCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(fm.DigitsFeatures, "_instance", None)
    net = fm.DigitsFeatures.get()
    assert (tmp_path / f"digits_classifier-v{fm.CLASSIFIER_VERSION}.safetensors").exists()
    x, y = load_digits_arrays("test")
    assert net.accuracy(x / 16.0, y) > 0.9
    # real test images score near the train-vs-test floor; noise scores far worse
    real = gm.data.get_dataset("digits", "test")
    good = fm.sample_quality(gm.tensor(load_digits_arrays("train")[0][:500] / 16.0), real)
    noise = fm.sample_quality(gm.rand(500, 1, 8, 8), real)
    assert good["digits_fid"] < noise["digits_fid"] / 5
    assert good["precision"] > noise["precision"]
    with pytest.raises(ValueError, match="8x8"):
        net.features(np.zeros((2, 1, 4, 4)))
