"""gmcore.nn.Module, Parameter/Buffer and the containers: registration, traversal, modes,
dtype moves, state_dict round trips and strict loading, hooks, deepcopy and repr."""
import copy
import importlib.util
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn as nn
from gmcore.testing import assert_close

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch (the peer) is not installed")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.scale = nn.Parameter(gm.ones(3))
        self.register_buffer("count", gm.zeros((), dtype=gm.int64))
        self.register_buffer("scratch", gm.zeros(3), persistent=False)

    def forward(self, x):
        return self.fc(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Parameter(gm.zeros(2))
        self.a = Block()
        self.b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        self.register_buffer("stat", gm.ones(2))

    def forward(self, x):
        return self.b(self.a(x)) + self.first


# ---- registration ---------------------------------------------------------------------------

def test_registration_tables():
    n = Net()
    assert list(n._parameters) == ["first"]
    assert list(n._buffers) == ["stat"]
    assert list(n._modules) == ["a", "b"]
    assert isinstance(n.first, nn.Parameter) and n.first.requires_grad
    # reassigning a Parameter name with None keeps the slot; a plain tensor is refused
    n.first = None
    assert "first" in n._parameters and n.first is None
    with pytest.raises(TypeError, match="Parameter"):
        n.first = gm.zeros(2)
    # buffers accept tensors; Buffer(...) assignment registers one
    n.stat = gm.zeros(2)
    assert n.stat.tolist() == [0.0, 0.0]
    n.extra = nn.Buffer(gm.ones(1), persistent=False)
    assert "extra" in n._buffers and "extra" not in n.state_dict()
    # plain attributes stay plain
    n.note = "hi"
    assert n.note == "hi" and "note" not in n._parameters
    # an attribute moves between tables when reassigned with another kind
    n.a = nn.Parameter(gm.zeros(1))
    assert "a" in n._parameters and "a" not in n._modules
    del n.a
    assert not hasattr(n, "a")
    with pytest.raises(AttributeError, match="no attribute"):
        n.missing  # noqa: B018


def test_registration_errors():
    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gm.zeros(1))

    with pytest.raises(AttributeError, match=r"super\(\)\.__init__\(\)"):
        Early()
    m = nn.Module()
    with pytest.raises(KeyError, match="'.'"):
        m.register_parameter("a.b", nn.Parameter(gm.zeros(1)))
    with pytest.raises(TypeError, match="Parameter"):
        m.register_parameter("w", gm.zeros(1))
    with pytest.raises(TypeError, match="buffer"):
        m.register_buffer("b", np.zeros(1))
    m.x = 3
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("x", gm.zeros(1))
    with pytest.raises(TypeError, match="not a Module"):
        m.add_module("c", 3)
    with pytest.raises(RuntimeError, match="floating point"):
        nn.Parameter(gm.zeros(2, dtype=gm.int64))


def test_parameter_and_buffer_basics():
    t = gm.randn(2, 3)
    p = nn.Parameter(t)
    assert p.data is t.data and p.is_leaf and p.requires_grad
    assert nn.Parameter(t, requires_grad=False).requires_grad is False
    assert repr(p).startswith("Parameter containing:\n")
    assert tuple(nn.Parameter().shape) == (0,)


# ---- traversal ------------------------------------------------------------------------------

def test_traversal_order():
    n = Net()
    assert [k for k, _ in n.named_parameters()] == [
        "first", "a.scale", "a.fc.weight", "a.fc.bias", "b.0.weight", "b.0.bias",
        "b.2.weight", "b.2.bias"]
    assert [k for k, _ in n.named_buffers()] == ["stat", "a.count", "a.scratch"]
    assert [k for k, _ in n.named_modules()] == ["", "a", "a.fc", "b", "b.0", "b.1", "b.2"]
    assert [k for k, _ in n.named_children()] == ["a", "b"]
    assert [k for k, _ in n.named_parameters(prefix="net")][0] == "net.first"
    assert [k for k, _ in n.named_parameters(recurse=False)] == ["first"]
    assert len(list(n.parameters())) == 8 and len(list(n.modules())) == 7
    assert n.get_submodule("b.2") is n.b[2] and n.get_submodule("") is n
    with pytest.raises(AttributeError, match="no submodule"):
        n.get_submodule("b.7")
    assert "stat" in dir(n) and "a" in dir(n)


def test_shared_parameters_and_modules_counted_once():
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.Tanh(), shared)
    assert len(list(seq.parameters())) == 2
    assert [k for k, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(seq.named_parameters(remove_duplicate=False))) == 4
    assert len(list(seq.modules())) == 3
    # state_dict keeps every name (as PyTorch); loading writes the one shared tensor
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    tied = nn.Module()
    tied.enc = nn.Linear(3, 2, bias=False)
    tied.dec = nn.Linear(2, 3, bias=False)
    tied.dec.weight = tied.enc.weight  # weight tying
    assert len(list(tied.parameters())) == 1
    x = gm.randn(4, 3)
    (tied.enc(x).sum() + tied.dec(gm.ones(4, 3)).sum()).backward()
    assert tied.enc.weight.grad is tied.dec.weight.grad


# ---- modes and utilities --------------------------------------------------------------------

def test_train_eval_propagation():
    calls = []

    class Custom(nn.Module):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(mode)

    n = Net()
    n.c = Custom()
    assert all(m.training for m in n.modules())
    assert n.eval() is n
    assert not any(m.training for m in n.modules())
    n.train()
    assert all(m.training for m in n.modules())
    assert calls == [False, True]  # the child's own train() ran
    with pytest.raises(ValueError, match="boolean"):
        n.train("yes")


def test_to_dtype_keeps_parameter_identity():
    n = Net()
    params = list(n.parameters())
    n(gm.randn(2, 3)).sum().backward()
    assert n.double() is n
    assert [id(p) for p in n.parameters()] == [id(p) for p in params]
    assert all(p.dtype == gm.float64 for p in n.parameters())
    assert all(p.grad.dtype == gm.float64 for p in n.parameters())
    assert n.stat.dtype == gm.float64
    assert n.a.count.dtype == gm.int64  # integer buffers keep their dtype
    assert n(gm.randn(2, 3, dtype=gm.float64)).dtype == gm.float64
    n.to(gm.float32)
    assert n.a.fc.weight.dtype == gm.float32 and n.a.fc.weight is params[2]
    n.to("cpu")
    with pytest.raises(TypeError, match="floating point"):
        n.to(gm.int64)


def test_zero_grad_apply_requires_grad():
    n = Net()
    n(gm.randn(2, 3)).sum().backward()
    n.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in n.parameters())
    n.a.scale.grad = gm.tensor([np.inf, np.nan, 1.0])
    n.zero_grad(set_to_none=False)
    assert n.a.scale.grad.tolist() == [0.0, 0.0, 0.0]  # zeros, not inf * 0
    n.zero_grad()
    assert all(p.grad is None for p in n.parameters())
    seen = []
    n.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3
    n.requires_grad_(False)
    assert not any(p.requires_grad for p in n.parameters())


def test_forward_hooks():
    m = nn.Linear(2, 2)
    log = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    h2 = m.register_forward_hook(lambda mod, args, out: log.append(out.shape) or out + 1)
    y = m(gm.ones(3, 2))
    assert_close(y, np.tile(m.bias.detach().numpy() + 1, (3, 1)))
    assert log == [gm.Size([3, 2])]
    h1.remove()
    h2.remove()
    x = gm.ones(1, 2)
    assert_close(m(x), m.forward(x))


# ---- state_dict -----------------------------------------------------------------------------

def test_state_dict_round_trip_with_buffers():
    gm.manual_seed(0)
    src, dst = Net(), Net()
    src.a.count.data[...] = 7
    src.stat.data[...] = 3.0
    sd = src.state_dict()
    assert list(sd) == ["first", "stat", "a.scale", "a.count", "a.fc.weight", "a.fc.bias",
                        "b.0.weight", "b.0.bias", "b.2.weight", "b.2.bias"]
    assert "a.scratch" not in sd  # non-persistent
    assert not any(v.requires_grad for v in sd.values())
    # values share memory with the module (as PyTorch)
    assert sd["a.fc.weight"].data is src.a.fc.weight.data
    assert src.state_dict(keep_vars=True)["a.fc.weight"] is src.a.fc.weight
    w_before = dst.a.fc.weight
    result = dst.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert dst.a.fc.weight is w_before  # loaded in place
    for k, v in sd.items():
        assert_close(dst.state_dict()[k], v.numpy())
    assert int(dst.a.count) == 7 and dst.a.count.dtype == gm.int64
    x = gm.randn(2, 3)
    assert_close(dst(x), src(x).detach().numpy())
    # arrays are accepted too (e.g. from gmcore.save / torch tensors' .numpy())
    dst2 = Net()
    dst2.load_state_dict({k: v.numpy() for k, v in sd.items()})
    assert_close(dst2(x), src(x).detach().numpy())
    # and a pickled state dict too
    dst3 = Net()
    dst3.load_state_dict(pickle.loads(pickle.dumps(sd)))
    assert_close(dst3(x), src(x).detach().numpy())


def test_load_state_dict_strict_errors_list_every_problem():
    n = Net()
    sd = {k: v.numpy() for k, v in Net().state_dict().items()}
    del sd["a.fc.bias"], sd["stat"]
    sd["a.fc.weight"] = np.zeros((4, 3), np.float32)
    sd["b.9.weight"] = np.zeros(1)
    before = n.a.fc.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError) as err:
        n.load_state_dict(sd)
    msg = str(err.value)
    assert "size mismatch" in msg and "a.fc.weight" in msg and "(4, 3)" in msg and "(3, 3)" in msg
    assert "missing keys" in msg.lower() and "a.fc.bias" in msg and "stat" in msg
    assert "unexpected keys" in msg.lower() and "b.9.weight" in msg
    assert_close(n.a.fc.weight, before)  # nothing was written
    # strict=False: a shape mismatch still raises; without it the keys come back
    with pytest.raises(RuntimeError, match="size mismatch"):
        n.load_state_dict(sd, strict=False)
    sd["a.fc.weight"] = np.ones((3, 3), np.float32)
    missing, unexpected = n.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["a.fc.bias", "stat"] and unexpected == ["b.9.weight"]
    assert_close(n.a.fc.weight, np.ones((3, 3)))
    with pytest.raises(TypeError, match="mapping"):
        n.load_state_dict([1, 2])


@needs_torch
def test_state_dict_keys_and_repr_match_torch():
    import torch

    def build(m):
        return m.Sequential(m.Conv2d(1, 4, 3, padding=1), m.BatchNorm2d(4), m.ReLU(),
                            m.Flatten(), m.Linear(64, 10),
                            m.ModuleList([m.LayerNorm(10), m.Dropout(0.2)]))

    ours, theirs = build(nn), build(torch.nn)
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    ours.load_state_dict(sd)
    assert list(ours.state_dict()) == list(sd)
    assert repr(ours) == repr(theirs)
    assert [k for k, _ in ours.named_modules()] == [k for k, _ in theirs.named_modules()]


# ---- containers -----------------------------------------------------------------------------

def test_sequential_api():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    assert isinstance(s[1:], nn.Sequential) and list(s[1:]) == [b, c]
    named = nn.Sequential(OrderedDict([("enc", a), ("act", b)]))
    assert list(named._modules) == ["enc", "act"] and named.enc is a
    s[1] = nn.Tanh()
    assert isinstance(s[1], nn.Tanh)
    del s[0]
    assert list(s._modules) == ["0", "1"] and s[1] is c
    s.append(nn.Sigmoid())  # after a deletion, append must not overwrite a child
    assert len(s) == 3 and s[1] is c
    s.insert(0, a)
    assert s[0] is a and len(s) == 4
    assert s.pop(0) is a and len(s) == 3
    s.extend([nn.Identity()])
    assert len(s) == 4
    with pytest.raises(IndexError):
        s[10]
    y = nn.Sequential(nn.Linear(2, 3), nn.ReLU())(gm.randn(5, 2))
    assert y.shape == (5, 3)


def test_modulelist_api():
    ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    assert len(ml) == 3 and len(list(ml.parameters())) == 6
    first = ml[0]
    ml.append(nn.ReLU())
    ml.insert(1, nn.Tanh())
    assert isinstance(ml[1], nn.Tanh) and ml[0] is first and len(ml) == 5
    del ml[1]
    assert list(ml._modules) == ["0", "1", "2", "3"]
    assert isinstance(ml[-1], nn.ReLU)
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    ml[0] = nn.Identity()
    assert isinstance(ml[0], nn.Identity)
    assert isinstance(ml.pop(-1), nn.ReLU) and len(ml) == 3
    ml.extend([nn.Sigmoid()])
    assert [type(m).__name__ for m in ml] == ["Identity", "Linear", "Linear", "Sigmoid"]
    with pytest.raises(IndexError):
        ml[4]
    with pytest.raises(TypeError):
        ml.append(3)


def test_moduledict_and_parameterlist_api():
    md = nn.ModuleDict({"x": nn.Linear(1, 2)})
    md["y"] = nn.ReLU()
    md.update([("z", nn.Tanh())])
    assert list(md) == ["x", "y", "z"] and list(md.keys()) == ["x", "y", "z"]
    assert "y" in md and len(md) == 3 and isinstance(md["z"], nn.Tanh)
    assert [type(v).__name__ for v in md.values()] == ["Linear", "ReLU", "Tanh"]
    assert isinstance(md.pop("y"), nn.ReLU) and "y" not in md
    del md["z"]
    assert list(md.items())[0][0] == "x"
    md.clear()
    assert len(md) == 0
    pl = nn.ParameterList([nn.Parameter(gm.zeros(2)), gm.ones(3)])
    assert len(pl) == 2 and isinstance(pl[1], nn.Parameter) and pl[-1].shape == (3,)
    pl.append(gm.ones(1))
    pl.extend([gm.ones(4)])
    pl[0] = gm.full((2,), 5.0)
    assert pl[0].tolist() == [5.0, 5.0]
    assert [k for k, _ in pl.named_parameters()] == ["0", "1", "2", "3"]
    holder = nn.Module()
    holder.ps = pl
    assert len(list(holder.parameters())) == 4
    assert "(0): Parameter containing: [" in repr(pl)
    assert nn.Identity(3, foo=1)(gm.ones(1)).tolist() == [1.0]


# ---- deepcopy, pickling, repr ---------------------------------------------------------------

def test_deepcopy_and_pickle():
    n = Net()
    n(gm.randn(2, 3)).sum().backward()
    c = copy.deepcopy(n)
    for (k, p), (kc, pc) in zip(n.named_parameters(), c.named_parameters()):
        assert k == kc and p is not pc and p.data is not pc.data
        assert isinstance(pc, nn.Parameter) and pc.requires_grad
        assert_close(pc, p.detach().numpy())
        assert_close(pc.grad, p.grad.numpy())
    assert c.a.scratch is not n.a.scratch and list(c.state_dict()) == list(n.state_dict())
    c.a.fc.weight.data[...] = 0
    assert n.a.fc.weight.detach().numpy().any()
    shared = nn.Linear(2, 2)
    s = copy.deepcopy(nn.Sequential(shared, shared))
    assert s[0] is s[1]  # sharing survives deepcopy
    p = pickle.loads(pickle.dumps(n))
    x = gm.randn(1, 3)
    assert_close(p(x), n(x).detach().numpy())


def test_repr():
    n = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.Tanh()))
    assert repr(n) == ("Sequential(\n"
                       "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                       "  (1): ReLU()\n"
                       "  (2): Sequential(\n"
                       "    (0): Tanh()\n"
                       "  )\n"
                       ")")
    assert repr(nn.Module()) == "Module()"

    class WithExtra(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1, 1)

        def extra_repr(self):
            return "k=3"

    assert repr(WithExtra()) == ("WithExtra(\n  k=3\n"
                                 "  (fc): Linear(in_features=1, out_features=1, bias=True)\n)")
