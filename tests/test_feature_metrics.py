"""feature_metrics.precision_recall: the blocked k-NN computation against a brute-force reference,
its memory bound, and its argument checks."""
import tracemalloc

import numpy as np
import pytest

from gmcore import feature_metrics as fm


def _brute_coverage(ref, query, k):
    """The definition, with the direct (a - b)^2 form over the full N x N x d array."""
    d_ref = ((ref[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    radii = np.sort(d_ref, axis=1)[:, k]                 # column 0 is the point itself
    d = ((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    return float((d <= radii[None, :]).any(1).mean())


def _both(ref, query, k, block_elements):
    return fm._coverage(ref, query, k, block_elements), _brute_coverage(ref, query, k)


@pytest.mark.parametrize("block_elements", [1, 37, 10 ** 6])   # one row, uneven tails, one block
@pytest.mark.parametrize("k", [1, 3])
def test_blocked_matches_brute_force_on_random_points(block_elements, k):
    rng = np.random.default_rng(k)
    ref, query = rng.normal(size=(53, 6)), rng.normal(size=(41, 6)) * 1.3
    got, want = _both(ref, query, k, block_elements)
    assert got == want and 0.0 < got < 1.0          # a real mixture of inside and outside


@pytest.mark.parametrize("block_elements", [5, 10 ** 6])
def test_ties_at_the_radius_count_as_inside(block_elements):
    # small integers: every distance is exact in both forms, and many queries lie exactly on a
    # k-NN sphere (grid points), so "<=" versus "<" would change the answer
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, size=(30, 3)).astype(np.float64)
    query = rng.integers(-1, 5, size=(40, 3)).astype(np.float64)
    d = ((query[:, None] - ref[None]) ** 2).sum(-1)
    radii = np.sort(((ref[:, None] - ref[None]) ** 2).sum(-1), axis=1)[:, 3]
    assert (d == radii).any(), "the data must contain ties at the radius"
    got, want = _both(ref, query, 3, block_elements)
    assert got == want
    strict = float((d < radii).any(1).mean())
    assert strict != want                            # the ties decide some queries


def test_duplicates_far_from_the_origin_are_at_distance_zero():
    # every real point appears k + 1 = 4 times: all radii are exactly 0. An offset of 1000 makes
    # |a|^2 - 2ab + |b|^2 cancel catastrophically; equal points must still be inside
    rng = np.random.default_rng(1)
    base = rng.normal(size=(20, 5)) + 1000.0
    real = np.repeat(base, 4, axis=0)
    fake = np.concatenate([base[:10], rng.normal(size=(10, 5)) + 1000.0])
    p, r = fm.precision_recall(real, fake)
    assert p == _brute_coverage(real, fake, 3) == 0.5
    assert r == _brute_coverage(fake, real, 3)
    # the expansion alone leaves about +-2e-7 on the diagonal at an offset of 1e4 (and can go
    # negative); _sq_dists gives exactly 0 there and stays close to the direct form elsewhere
    a = rng.normal(size=(50, 7)) + 1e4
    sq = np.einsum("ij,ij->i", a, a)
    d2 = fm._sq_dists(a, sq, a, sq)
    assert (np.diag(d2) == 0).all() and (d2 >= 0).all()
    np.testing.assert_allclose(d2, ((a[:, None] - a[None]) ** 2).sum(-1), atol=1e-5)


def test_knn_radii_match_sorted_distances():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(33, 4))
    want = np.sort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, 2]
    np.testing.assert_allclose(fm._knn_radii_sq(x, 2, block_elements=40), want, rtol=1e-12)


def test_precision_recall_memory_is_blocked():
    # the old broadcast form built N x N x 64 float64 (2 GB here) and even one N x N float64
    # matrix is 32 MB; the blocked form stays within a few blocks of _BLOCK_ELEMENTS entries
    n = 2000
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(n, 64)), rng.normal(size=(n, 64))
    tracemalloc.start()
    try:
        p, r = fm.precision_recall(real, fake)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.0 < p < 1.0 and 0.0 < r < 1.0
    block_bytes = fm._BLOCK_ELEMENTS * 8
    assert peak < 4 * block_bytes < n * n * 8, f"peak {peak / 2 ** 20:.1f} MiB"


def test_precision_recall_argument_errors():
    a = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"real features must be \(N, d\)"):
        fm.precision_recall(np.zeros(10), a)
    with pytest.raises(ValueError, match="fake has 3 samples; k=3 .* at least 4"):
        fm.precision_recall(a, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="3 dims but fake features have 4"):
        fm.precision_recall(a, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        fm.precision_recall(a, a, k=0)


def test_non_finite_images_are_named_before_the_features():
    images = np.zeros((5, 1, 8, 8))
    images[3, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 of 5 images have non-finite pixels .* image 3"):
        fm.DigitsFeatures.get().features(images)
