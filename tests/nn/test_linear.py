"""linear against NumPy, gradients to second order, shape errors."""
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from helpers import check_op


def test_linear(device):
    check_op(F.linear, lambda x, w, b: x @ w.T + b, [(2, 3, 5), (4, 5), (4,)], device=device)
    check_op(lambda x, w: F.linear(x, w), lambda x, w: x @ w.T, [(3, 5), (2, 5)], device=device)
    check_op(lambda x, w: F.linear(x, w), lambda x, w: x @ w, [(3, 5), (5,)], device=device)


def test_linear_shape_error():
    with pytest.raises(RuntimeError, match=r"cannot be multiplied \(6x5 and 4x3\)"):
        F.linear(gm.randn(2, 3, 5), gm.randn(3, 4))
