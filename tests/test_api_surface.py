"""The public surface the issue promises exists: tensor methods resolve, top-level names exist."""
import ast
import inspect

import pytest

import gmcore as gm
import gmcore.functional as gF
import gmcore.nn.functional as F
from gmcore import _tensor_ops
from gmcore import tensor as tensor_module


def _functional_names_used_by_tensor():
    names = set()
    for module in (tensor_module, _tensor_ops):
        tree = ast.parse(inspect.getsource(module))
        names |= {node.attr for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "_F"}
    return sorted(names)


@pytest.mark.parametrize("name", _functional_names_used_by_tensor())
def test_every_tensor_method_target_exists(name):
    assert hasattr(gF, name), f"Tensor calls gmcore.functional.{name}, which does not exist"


CORE_OPS = """add sub mul div pow neg matmul exp log log1p expm1 sqrt rsqrt abs sign sin cos tanh
sigmoid logsigmoid softplus relu leaky_relu elu gelu silu clamp maximum minimum where eq ne lt le
gt ge logical_and logical_or logical_not sum mean var std prod amax amin max min argmax argmin
logsumexp cumsum norm softmax log_softmax reshape view flatten unflatten permute transpose
squeeze unsqueeze expand broadcast_to repeat tile flip roll cat stack split chunk pad
index_select gather scatter_add masked_fill one_hot embedding dropout triu tril outer
einsum""".split()

NN_OPS = """linear conv1d conv2d conv_transpose1d conv_transpose2d avg_pool2d max_pool2d
interpolate pixel_shuffle pixel_unshuffle layer_norm group_norm batch_norm mse_loss l1_loss
binary_cross_entropy binary_cross_entropy_with_logits cross_entropy nll_loss kl_div softmax
log_softmax relu gelu silu dropout embedding one_hot pad""".split()

TOP_LEVEL = """tensor zeros ones full empty arange linspace eye rand randn randint zeros_like
ones_like randn_like float16 float32 float64 int32 int64 bool no_grad enable_grad manual_seed
Generator from_dlpack Tensor device autograd""".split()


@pytest.mark.parametrize("name", CORE_OPS)
def test_core_op_exists(name):
    assert callable(getattr(gF, name, None)), f"gmcore.functional.{name} missing"
    assert hasattr(gm, name), f"gmcore.{name} missing"


@pytest.mark.parametrize("name", NN_OPS)
def test_nn_functional_op_exists(name):
    assert callable(getattr(F, name, None)), f"gmcore.nn.functional.{name} missing"


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_name_exists(name):
    assert hasattr(gm, name), f"gmcore.{name} missing"


def test_autograd_namespace():
    for name in ("Function", "backward", "grad", "once_differentiable", "no_grad"):
        assert hasattr(gm.autograd, name)


def test_mT_is_batched_transpose():
    x = gm.zeros(2, 3, 4)
    assert x.mT.shape == (2, 4, 3) and x.T.shape == (4, 3, 2)


ISSUE_11_OPS = {  # issue 11.14: where each new name lives, as in torch
    gm: "tan sinh cosh asinh acosh atanh log2 exp2 celu bitwise_left_shift bitwise_right_shift "
        "multinomial",
    F: "tan celu hardswish mish conv3d conv_transpose3d",
    gm.nn: "Mish Hardswish CELU Conv3d ConvTranspose3d",
    gm.Tensor: "tan sinh cosh asinh acosh atanh log2 exp2 bitwise_left_shift "
               "bitwise_right_shift register_hook multinomial __rxor__ __ror__ __rand__ "
               "__lshift__ __rlshift__ __rshift__ __rrshift__",
}


@pytest.mark.parametrize("where,name", [(w, n) for w, names in ISSUE_11_OPS.items()
                                        for n in names.split()])
def test_issue_11_names_exist(where, name):
    assert callable(getattr(where, name, None)), f"{where.__name__}.{name} missing"
