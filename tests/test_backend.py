"""backend helpers: the branch-free where equals np.where exactly, inf/NaN included."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from gmcore import backend


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_where_matches_numpy_with_specials(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((70, 90)).astype(dtype)
    b = rng.standard_normal((70, 90)).astype(dtype)
    a[0, :4] = [np.inf, -np.inf, np.nan, -0.0]
    b[1, :4] = [np.inf, -np.inf, np.nan, -0.0]
    cond = rng.random((70, 90)) > 0.5
    for x, y in [(a, b), (a, 0), (a, dtype(2.5)), (0.0, b), (a, b[:1]), (a[:, :1], b)]:
        got, want = backend.where(cond, x, y), np.where(cond, x, y)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint8), want.astype(got.dtype).view(np.uint8)), (x, y)


@given(cond=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40)),
       fill=st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_where_property(cond, fill):
    a = np.arange(cond.size, dtype=np.float32).reshape(cond.shape)
    got = backend.where(cond, a, np.float32(fill))
    np.testing.assert_array_equal(got, np.where(cond, a, np.float32(fill)))
