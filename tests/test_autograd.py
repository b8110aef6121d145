"""The autograd engine: graph walk, accumulation, grad(), higher order, and its clear errors."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.autograd import Function, once_differentiable
from gmcore.testing import assert_close, gradcheck, gradgradcheck


def test_backward_accumulates_into_leaves():
    x = gm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    assert_close(x.grad, gm.tensor([5.0, 7.0, 9.0]))


def test_shared_subexpression_sums_both_paths():
    x = gm.tensor([2.0], requires_grad=True)
    y = x * x          # used twice below
    z = y * y + y      # dz/dx = (2y + 1) * 2x = (8 + 1) * 4
    z.sum().backward()
    assert x.grad.item() == pytest.approx(36.0)


def test_same_tensor_twice_in_one_op():
    x = gm.tensor([3.0], requires_grad=True)
    (x * x).backward()
    assert x.grad.item() == 6.0


def test_grad_of_leaves_do_not_alias_each_other():
    a = gm.tensor([1.0, 2.0], requires_grad=True)
    b = gm.tensor([1.0, 2.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 1
    assert b.grad.tolist() == [1.0, 1.0]


def test_leaf_grad_is_writable_even_from_broadcast_views():
    x = gm.ones(3, requires_grad=True)
    x.sum().backward()
    x.grad.data *= 2  # an expanded (read-only) view must not leak into .grad
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_non_scalar_backward_needs_gradient():
    x = gm.ones(2, 3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"implicitly created only for scalar outputs.*\(2, 3\)"):
        y.backward()
    y.backward(gm.ones(2, 3))
    assert x.grad.tolist() == [[2.0] * 3] * 2


def test_backward_gradient_shape_checked():
    x = gm.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"gradient of shape \(2,\).*shape \(3,\)"):
        (x * 2).backward(gm.ones(2))


def test_backward_on_tensor_without_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gm.ones(2).sum().backward()


def test_second_backward_through_freed_graph_raises():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"backward through the graph .*second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]


def test_inplace_modification_of_saved_tensor_raises():
    a = gm.tensor([1.0, 2.0], requires_grad=True)
    b = a * 1          # non-leaf
    c = b * b          # saves b
    with gm.no_grad():
        b.add_(1)      # modifies b after it was saved
    with pytest.raises(RuntimeError, match=r"modified by an in-place operation.*version 1; expected version 0"):
        c.sum().backward()


def test_inplace_through_a_view_bumps_the_shared_version():
    a = gm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = a * 1
    d = b * b            # saves b
    v = b[0:2]           # a view of b: shares b's version counter
    with gm.no_grad():
        v.mul_(2)
    with pytest.raises(RuntimeError, match="in-place operation"):
        d.sum().backward()


def test_inplace_on_leaf_requiring_grad_raises():
    w = gm.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad.*in-place"):
        w.add_(1)
    with gm.no_grad():
        w.add_(1)  # parameter updates are fine under no_grad
    assert w.tolist() == [2.0, 2.0]


def test_inplace_op_in_graph_is_differentiable():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    y.mul_(x)        # y = 3x^2, rebased onto the graph
    y.sum().backward()
    assert_close(x.grad, gm.tensor([6.0, 12.0]))


def test_setitem_under_autograd():
    x = gm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    y[1] = 0.0
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 0.0, 2.0]


def test_grad_function_returns_without_accumulating():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    (g,) = gm.autograd.grad((x ** 2).sum(), x)
    assert g.tolist() == [2.0, 4.0]
    assert x.grad is None
    assert not g.requires_grad


def test_grad_allow_unused():
    x = gm.tensor([1.0], requires_grad=True)
    z = gm.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="input 1 was not used.*allow_unused=True"):
        gm.autograd.grad((x * 2).sum(), [x, z])
    gx, gz = gm.autograd.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gx.tolist() == [2.0] and gz is None


def test_grad_with_respect_to_non_leaf():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    y = (h * h).sum()
    (gh,) = gm.autograd.grad(y, h)
    assert gh.tolist() == [6.0, 12.0]


def test_grad_outputs_and_multiple_outputs():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    a, b = x * 2, x * x
    gx, = gm.autograd.grad([a, b], x, grad_outputs=[gm.ones(2), gm.tensor([1.0, 0.5])])
    assert gx.tolist() == [4.0, 4.0]


def test_create_graph_gives_second_and_third_derivatives():
    x = gm.tensor([0.5, -1.5], dtype=gm.float64, requires_grad=True)
    y = (x ** 4).sum()
    (g1,) = gm.autograd.grad(y, x, create_graph=True)
    (g2,) = gm.autograd.grad(g1.sum(), x, create_graph=True)
    (g3,) = gm.autograd.grad(g2.sum(), x)
    xv = np.array([0.5, -1.5])
    assert_close(g1, gm.tensor(4 * xv ** 3), check_dtype=False)
    assert_close(g2, gm.tensor(12 * xv ** 2), check_dtype=False)
    assert_close(g3, gm.tensor(24 * xv), check_dtype=False)


def test_gradient_penalty_pattern():
    """WGAN-GP: penalise the norm of d critic / d input, then differentiate w.r.t. weights."""
    w = gm.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=gm.float64, requires_grad=True)
    x = gm.tensor([[1.0, 2.0]], dtype=gm.float64, requires_grad=True)
    critic = ((x @ w) ** 2).sum()
    (gx,) = gm.autograd.grad(critic, x, create_graph=True)
    penalty = ((gx * gx).sum() - 1) ** 2
    penalty.backward()

    def penalty_of(wt):
        c = ((x @ wt) ** 2).sum()
        (g,) = gm.autograd.grad(c, x, create_graph=True)
        return ((g * g).sum() - 1) ** 2
    assert gradcheck(penalty_of, (w.detach().requires_grad_(),))
    assert w.grad is not None and np.isfinite(w.grad.numpy()).all()


def test_no_grad_and_enable_grad():
    x = gm.ones(2, requires_grad=True)
    with gm.no_grad():
        y = x * 2
        with gm.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @gm.no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad
    assert gm.is_grad_enabled()


def test_set_grad_enabled_call_and_context():
    x = gm.ones(2, requires_grad=True)
    with gm.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert gm.is_grad_enabled()
    gm.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        gm.set_grad_enabled(True)


def test_no_grad_restores_mode_after_exception():
    with pytest.raises(ValueError):
        with gm.no_grad():
            raise ValueError("boom")
    assert gm.is_grad_enabled()


def test_requires_grad_rules():
    with pytest.raises(RuntimeError, match="floating point"):
        gm.tensor([1, 2], requires_grad=True)
    x = gm.ones(2, requires_grad=True)
    y = x * 2
    assert not y.is_leaf and x.is_leaf
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False
    d = y.detach()
    assert d.is_leaf and not d.requires_grad


def test_integer_outputs_are_not_differentiable():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    assert not x.long().requires_grad


def test_retain_grad_on_non_leaf():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.retain_grad()
    (h * h).sum().backward()
    assert h.grad.tolist() == [4.0, 8.0]


class _Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x


class _CubeOnce(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_arrays
        return g * 3 * x * x


def test_custom_function_first_and_second_order():
    x = gm.randn(5, dtype=gm.float64, requires_grad=True)
    assert gradcheck(_Cube.apply, (x,))
    assert gradgradcheck(_Cube.apply, (x,))


def test_once_differentiable_first_order_works():
    x = gm.randn(5, dtype=gm.float64, requires_grad=True)
    assert gradcheck(_CubeOnce.apply, (x,))


def test_once_differentiable_double_backward_raises_naming_the_op():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    (g,) = gm.autograd.grad(_CubeOnce.apply(x).sum(), x, create_graph=True)
    assert g.tolist() == [3.0, 12.0]
    with pytest.raises(RuntimeError, match=r"_CubeOnceBackward is once-differentiable"):
        g.sum().backward()


def test_custom_function_wrong_number_of_grads():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, g):
            return g

    x = gm.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward returned 1 gradients but forward took 2"):
        Bad.apply(x, 2.0).sum().backward()


def test_custom_function_wrong_grad_shape():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, g):
            return g

    x = gm.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"gradient of shape \(\) for input 0 of shape \(3,\)"):
        Bad.apply(x).backward()


def test_multiple_outputs_and_unused_output():
    class Split2(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, ga, gb):
            return ga * 2 + gb * 3

    x = gm.ones(2, requires_grad=True)
    a, b = Split2.apply(x)
    a.sum().backward()  # b receives no gradient: materialised as zeros
    assert x.grad.tolist() == [2.0, 2.0]


class _FakeCudaArray:
    """Just enough of a CuPy array for the device check (no GPU needed)."""
    __cuda_array_interface__ = {}

    def __init__(self):
        self.device = type("Dev", (), {"id": 0})()
        self.shape, self.ndim, self.dtype = (2,), 1, np.dtype(np.float32)


def test_mixing_devices_is_an_error_naming_both():
    x = gm.ones(2)
    y = gm.Tensor(_FakeCudaArray())
    assert str(y.device) == "cuda:0"
    with pytest.raises(RuntimeError, match=r"Add: expected all tensors on the same device, "
                                           r"but found cpu and cuda:0"):
        x + y


def test_deep_graph_does_not_hit_recursion_limit():
    x = gm.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 5000, rel=1e-3)


def test_leaf_gradient_not_corrupted_by_shared_buffers():
    """A gradient array stored in .grad may still be pending elsewhere in the graph."""
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    ((x.clone() + x.clone()) + x.clone()).backward(gm.tensor([1.0, 1.0]))
    assert x.grad.tolist() == [3.0, 3.0]


def test_callers_gradient_is_never_written_into():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    g = gm.tensor([1.0, 1.0])
    (x * 1).backward(g)
    (x * 1).backward(g)
    assert x.grad.tolist() == [2.0, 2.0] and g.tolist() == [1.0, 1.0]


def test_user_set_grad_is_not_modified_in_place():
    x = gm.tensor([1.0], requires_grad=True)
    mine = gm.tensor([5.0])
    x.grad = mine
    (x * 2).sum().backward()
    assert x.grad.tolist() == [7.0] and mine.tolist() == [5.0]


def test_second_order_through_zero_dim_outputs():
    x = gm.tensor(0.7, dtype=gm.float64, requires_grad=True)
    y = gm.tensor(1.3, dtype=gm.float64, requires_grad=True)
    assert gradgradcheck(lambda a, b: a ** b, (x, y))


def test_second_order_survives_type_promotion():
    x = gm.tensor([0.5], requires_grad=True)
    (g,) = gm.autograd.grad((x * x.double()).sum(), x, create_graph=True)
    (gg,) = gm.autograd.grad(g.sum(), x)
    assert gg.tolist() == [2.0]


def test_backward_with_inputs_never_writes_into_the_callers_gradient():
    x = gm.tensor([1.0, 2.0], requires_grad=True)
    g = gm.tensor([1.0, 1.0])
    x.clone().backward(g, inputs=[x])  # clone passes g through unchanged
    x.clone().backward(g, inputs=[x])
    assert x.grad.tolist() == [2.0, 2.0] and g.tolist() == [1.0, 1.0]
