"""Optimizer math by hand (no torch needed), state dicts, errors, version counters."""
import copy
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.optim import SGD, Adam, AdamW, RMSprop


def _params(pb, dtype=gm.float64):
    return [gm.tensor(a, dtype=dtype, requires_grad=True) for a in pb.init_arrays()]


def _step(pb, params, opt, step):
    for p, g in zip(params, pb.grad_of([p.detach().numpy().astype(np.float64) for p in params],
                                       step)):
        p.grad = None if g is None else gm.tensor(g, dtype=p.dtype)
    opt.step()


def test_sgd_momentum_nesterov_by_hand():
    w = gm.tensor([1.0, -2.0], dtype=gm.float64, requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    ref, buf = np.array([1.0, -2.0]), None
    for k in range(5):
        g = np.array([0.5 * k + 1, -1.0 + k])
        w.grad = gm.tensor(g)
        opt.step()
        d = g + 0.01 * ref
        buf = d.copy() if buf is None else 0.9 * buf + d
        ref = ref - 0.1 * (d + 0.9 * buf)
        np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-14)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_by_hand(decoupled, amsgrad):
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(3, 2))
    w = gm.tensor(w0, requires_grad=True)
    cls = AdamW if decoupled else Adam
    lr, b1, b2, eps, wd = 0.01, 0.8, 0.95, 1e-6, 0.1
    opt = cls([w], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad)
    p, m, v, vmax = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), np.zeros_like(w0)
    for t in range(1, 8):
        g = rng.normal(size=w0.shape)
        w.grad = gm.tensor(g)
        opt.step()
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vv = vmax if amsgrad else v
        p = p - lr / (1 - b1 ** t) * m / (np.sqrt(vv) / np.sqrt(1 - b2 ** t) + eps)
        np.testing.assert_allclose(w.detach().numpy(), p, rtol=1e-12, atol=1e-14)
    assert opt.state[w]["step"] == 7 and type(opt.state[w]["step"]) is int


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_rmsprop_by_hand(centered, momentum):
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(4,))
    w = gm.tensor(w0, requires_grad=True)
    lr, a, eps = 0.01, 0.9, 1e-4
    opt = RMSprop([w], lr=lr, alpha=a, eps=eps, momentum=momentum, centered=centered)
    p, s, ga, buf = w0.copy(), np.zeros(4), np.zeros(4), np.zeros(4)
    for _ in range(6):
        g = rng.normal(size=4)
        w.grad = gm.tensor(g)
        opt.step()
        s = a * s + (1 - a) * g * g
        ga = a * ga + (1 - a) * g
        avg = np.sqrt(s - ga * ga if centered else s) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
        np.testing.assert_allclose(w.detach().numpy(), p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    lambda ps: Adam(ps, lr=0.05, amsgrad=True),
    lambda ps: AdamW([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], lr=0.05),
    lambda ps: RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
], ids=["sgd", "adam", "adamw-groups", "rmsprop"])
def test_state_dict_round_trip_is_bit_exact(problem, make):
    params = _params(problem)
    opt = make(params)
    for k in range(10):
        _step(problem, params, opt, k)
    sd = opt.state_dict()
    saved_params = [p.detach().numpy().copy() for p in params]
    # the snapshot is JSON-able apart from the tensors
    json.dumps({"groups": sd["param_groups"],
                "state": {k: {n: v for n, v in s.items() if not isinstance(v, gm.Tensor)}
                          for k, s in sd["state"].items()}})
    for k in range(10, 20):
        _step(problem, params, opt, k)
    expected = [p.detach().numpy().copy() for p in params]

    params2 = [gm.tensor(a, requires_grad=True) for a in saved_params]
    opt2 = make(params2)
    opt2.load_state_dict(copy.deepcopy(sd))
    for k in range(10, 20):
        _step(problem, params2, opt2, k)
    for a, b in zip(params2, expected):
        np.testing.assert_array_equal(a.detach().numpy(), b)


def test_state_dict_is_a_snapshot_and_loads_from_json_keys(problem):
    params = _params(problem)
    opt = Adam(params, lr=0.1)
    _step(problem, params, opt, 0)
    sd = opt.state_dict()
    before = sd["state"][0]["exp_avg"].numpy().copy()
    _step(problem, params, opt, 1)
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"].numpy(), before)
    # keys as strings and state as plain arrays (what a JSON + npz checkpoint gives back)
    sd2 = {"state": {str(k): {n: (v.numpy() if isinstance(v, gm.Tensor) else v)
                              for n, v in s.items()} for k, s in sd["state"].items()},
           "param_groups": sd["param_groups"]}
    opt.load_state_dict(sd2)
    assert opt.state[params[0]]["step"] == 1
    assert isinstance(opt.state[params[0]]["exp_avg"], gm.Tensor)


def test_float32_params_keep_dtype(problem):
    params = _params(problem, gm.float32)
    for opt in (SGD(params, lr=0.1, momentum=0.9), Adam(params), RMSprop(params, centered=True)):
        for k in range(3):
            _step(problem, params, opt, k)
        for p in params:
            assert p.dtype == gm.float32
            for v in opt.state[p].values():
                if isinstance(v, gm.Tensor):
                    assert v.dtype == gm.float32


def test_step_bumps_the_version_so_stale_graphs_fail():
    w = gm.tensor([1.0, 2.0], requires_grad=True)
    opt = SGD([w], lr=0.1)
    y = (w * w).sum()  # saves w for backward
    w.grad = gm.ones(2)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_zero_grad_and_closure():
    w = gm.tensor([3.0], requires_grad=True)
    opt = SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0 and w.item() == 1.5
    opt.zero_grad(set_to_none=False)
    assert w.grad.tolist() == [0.0]
    opt.zero_grad()
    assert w.grad is None


@pytest.mark.parametrize("make,match", [
    (lambda ps: SGD(ps, lr=-0.1), "Invalid learning rate"),
    (lambda ps: SGD(ps, lr=0.1, momentum=-1), "Invalid momentum"),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), "Nesterov"),
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda ps: Adam(ps, lr=-1e-3), "Invalid learning rate"),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda ps: Adam(ps, eps=-1.0), "epsilon"),
    (lambda ps: AdamW(ps, weight_decay=-1.0), "weight_decay"),
    (lambda ps: RMSprop(ps, alpha=-0.5), "alpha"),
    (lambda ps: SGD([], lr=0.1), "empty parameter list"),
    (lambda ps: SGD([{"params": ps}, {"params": ps[:1]}], lr=0.1), "more than one"),
    (lambda ps: SGD([ps[0] * 2], lr=0.1), "non-leaf"),
])
def test_bad_arguments(make, match):
    ps = [gm.zeros(2, requires_grad=True), gm.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match=match):
        make(ps)


def test_bad_param_types():
    with pytest.raises(TypeError, match="iterable"):
        SGD(gm.zeros(2, requires_grad=True), lr=0.1)
    with pytest.raises(TypeError, match="parameter 0"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="sets"):
        SGD([{"params": {gm.zeros(2, requires_grad=True)}}], lr=0.1)


def test_load_mismatched_state_dict(problem):
    params = _params(problem)
    opt = Adam(params)
    _step(problem, params, opt, 0)
    sd = opt.state_dict()
    other = Adam([{"params": params[:2]}, {"params": params[2:]}])
    with pytest.raises(ValueError, match="2 parameter groups|1 parameter groups"):
        other.load_state_dict(sd)
    fewer = Adam(params[:3])
    with pytest.raises(ValueError, match="group 0 has 4 parameters"):
        fewer.load_state_dict(sd)
    shuffled = [gm.zeros(tuple(params[1].shape), dtype=gm.float64, requires_grad=True)] + \
        params[1:]
    with pytest.raises(ValueError, match=r"shape \(5, 3\) but the parameter has shape \(3,\)"):
        Adam(shuffled).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_add_param_group_and_defaults():
    a, b = gm.zeros(2, requires_grad=True), gm.zeros(2, requires_grad=True)
    opt = Adam([a], lr=0.1)
    opt.add_param_group({"params": b, "betas": (0.5, 0.6)})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.5, 0.6)
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [a]})
    assert "Parameter Group 1" in repr(opt)


def test_step_rejects_a_gradient_that_does_not_match_its_parameter():
    import gmcore as gm
    import pytest

    w = gm.zeros(3, dtype=gm.float64, requires_grad=True)
    opt = gm.optim.SGD([w], lr=0.1)
    w.grad = gm.ones(3)                                    # float32 gradient, float64 parameter
    with pytest.raises(RuntimeError, match="float32.*float64"):
        opt.step()
    w.grad = gm.ones(4, dtype=gm.float64)
    with pytest.raises(RuntimeError, match=r"\(4,\).*\(3,\)"):
        opt.step()
    assert w.tolist() == [0.0, 0.0, 0.0]                   # nothing was updated
