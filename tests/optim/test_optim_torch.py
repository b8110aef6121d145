"""Optimizer trajectories against torch.optim (float64, 25 steps, every option)."""
import numpy as np
import pytest

import gmcore as gm

torch = pytest.importorskip("torch")

STEPS = 25

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("SGD", dict(lr=0.02, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, eps=1e-2, maximize=True)),
]


def _grads(pb, params, step, kwargs):
    # with maximize the optimizer ascends: hand it the negated gradient so the run stays bounded
    sign = -1.0 if kwargs.get("maximize") else 1.0
    return [None if g is None else np.asarray(sign * g)
            for g in pb.grad_of([p.detach().numpy() for p in params], step)]


def _run_gm(pb, name, kwargs, groups=False):
    params = [gm.tensor(a, dtype=gm.float64, requires_grad=True) for a in pb.init_arrays()]
    spec = [{"params": params[:2]}, {"params": params[2:], "lr": kwargs["lr"] * 0.5}] \
        if groups else params
    opt = getattr(gm.optim, name)(spec, **kwargs)
    for step in range(STEPS):
        for p, g in zip(params, _grads(pb, params, step, kwargs)):
            p.grad = None if g is None else gm.tensor(g)
        opt.step()
    return [p.detach().numpy().copy() for p in params]


def _run_torch(pb, name, kwargs, groups=False):
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in pb.init_arrays()]
    spec = [{"params": params[:2]}, {"params": params[2:], "lr": kwargs["lr"] * 0.5}] \
        if groups else params
    opt = getattr(torch.optim, name)(spec, foreach=False, **kwargs)
    for step in range(STEPS):
        for p, g in zip(params, _grads(pb, params, step, kwargs)):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{sorted(k.items())}" for n, k in CASES])
def test_trajectory_matches_torch(problem, name, kwargs):
    for a, b in zip(_run_gm(problem, name, kwargs), _run_torch(problem, name, kwargs)):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_param_groups_match_torch(problem, name):
    kwargs = dict(lr=0.03, momentum=0.9) if name in ("SGD", "RMSprop") else dict(lr=0.03)
    for a, b in zip(_run_gm(problem, name, kwargs, groups=True),
                    _run_torch(problem, name, kwargs, groups=True)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_loads_a_torch_adam_state_dict_and_continues_identically(problem):
    pb = problem
    tp = [torch.tensor(a, requires_grad=True) for a in pb.init_arrays()]
    topt = torch.optim.Adam(tp, lr=0.05, amsgrad=True, foreach=False)
    for step in range(7):
        for p, g in zip(tp, pb.grad_of([p.detach().numpy() for p in tp], step)):
            p.grad = None if g is None else torch.tensor(g)
        topt.step()
    sd = topt.state_dict()
    sd = {"state": {k: {n: (v.numpy().copy()) for n, v in s.items()}
                    for k, s in sd["state"].items()},
          "param_groups": [dict(g) for g in sd["param_groups"]]}
    gp = [gm.tensor(p.detach().numpy(), requires_grad=True) for p in tp]
    gopt = gm.optim.Adam(gp, lr=0.05, amsgrad=True)
    gopt.load_state_dict(sd)
    assert isinstance(gopt.state[gp[0]]["step"], int)
    for step in range(7, 15):
        for ps, mk in ((tp, torch.tensor), (gp, gm.tensor)):
            for p, g in zip(ps, pb.grad_of([p.detach().numpy() for p in ps], step)):
                p.grad = None if g is None else mk(g)
        topt.step()
        gopt.step()
    for a, b in zip(gp, tp):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(problem, norm_type, max_norm):
    pb = problem
    grads = [g for g in pb.grad_of(pb.init_arrays(), 0) if g is not None]
    gp = [gm.zeros(g.shape, dtype=gm.float64, requires_grad=True) for g in grads]
    tp = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, q, g in zip(gp, tp, grads):
        p.grad, q.grad = gm.tensor(g), torch.tensor(g)
    a = gm.nn.utils.clip_grad_norm_(gp, max_norm, norm_type)
    b = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type)
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-13)
    for p, q in zip(gp, tp):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_clip_grad_value_matches_torch(problem):
    pb = problem
    grads = [g for g in pb.grad_of(pb.init_arrays(), 0) if g is not None]
    gp = [gm.zeros(g.shape, dtype=gm.float64, requires_grad=True) for g in grads]
    tp = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, q, g in zip(gp, tp, grads):
        p.grad, q.grad = gm.tensor(g), torch.tensor(g)
    gm.nn.utils.clip_grad_value_(gp, 1.5)
    torch.nn.utils.clip_grad_value_(tp, 1.5)
    for p, q in zip(gp, tp):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
