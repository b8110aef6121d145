"""Sample-based figures on 2-D data: mode coverage and the energy distance."""
import numpy as np
import pytest

from gmcore.data.toy2d import Toy2D, eight_gaussian_centres, make_8gaussians
from gmcore.points_metrics import energy_distance, mode_coverage


def test_the_data_itself_covers_every_mode():
    x, _ = make_8gaussians(2000, seed=1)
    res = mode_coverage(x, eight_gaussian_centres(), 0.1)
    assert res["modes_hit"] == 8 and res["high_quality_share"] > 0.98   # 3 std in 2-D holds 98.9%


def test_a_collapsed_sampler_hits_one_mode():
    centres = eight_gaussian_centres()
    x = centres[3] + np.random.default_rng(0).normal(size=(2000, 2)) * 0.05
    assert mode_coverage(x, centres, 0.1) == {"modes_hit": 1, "modes": 8, "high_quality_share": 1.0}
    # samples between the modes are of low quality and hit nothing
    assert mode_coverage(np.zeros((100, 2)), centres, 0.1)["high_quality_share"] == 0.0
    # a mode needs 1% of the samples: 19 of 2000 is not enough
    y = np.concatenate([np.repeat(centres[:1], 1981, 0), np.repeat(centres[1:2], 19, 0)])
    assert mode_coverage(y, centres, 0.1)["modes_hit"] == 1
    with pytest.raises(ValueError, match="NaN"):
        mode_coverage(np.full((3, 2), np.nan), centres, 0.1)


def test_toy_sets_say_their_modes():
    centres, std = Toy2D("8gaussians").modes
    assert centres.shape == (8, 2) and std == 0.1
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2.0)
    assert Toy2D("moons").modes is None


def test_energy_distance_against_its_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(40, 2)) + 0.5
    d = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=2).mean()  # noqa: E731
    assert energy_distance(x, y) == pytest.approx(2 * d(x, y) - d(x, x) - d(y, y), rel=1e-12)
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)
    near, far = energy_distance(x, x + 0.1), energy_distance(x, x + 1.0)
    assert 0 < near < far
