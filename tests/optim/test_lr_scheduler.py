"""Learning-rate schedulers: closed forms by hand, torch's sequences, state dicts."""
import math

import pytest

import gmcore as gm
from gmcore.optim import SGD
from gmcore.optim.lr_scheduler import (CosineAnnealingLR, LambdaLR, LinearLR, SequentialLR,
                                       StepLR)

N = 30


def _opt(lib, lrs=(0.1, 0.03)):
    mk = (lambda: lib.zeros(1, requires_grad=True))
    return lib.optim.SGD([{"params": [mk()], "lr": lr} for lr in lrs], lr=lrs[0])


def _lrs(lib, make, n=N):
    opt = _opt(lib)
    sched = make(lib, opt)
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr())
        opt.step()
        sched.step()
    return out


def _warm_cos(lib, opt):
    S = lib.optim.lr_scheduler
    return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=4),
                                S.CosineAnnealingLR(opt, T_max=10, eta_min=1e-3)],
                          milestones=[5])


SCHEDULES = {
    "step": lambda lib, o: lib.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.3),
    "cosine": lambda lib, o: lib.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
    "linear": lambda lib, o: lib.optim.lr_scheduler.LinearLR(o, start_factor=0.2,
                                                             end_factor=0.9, total_iters=6),
    "lambda": lambda lib, o: lib.optim.lr_scheduler.LambdaLR(o, lambda e: 0.95 ** e),
    "lambdas": lambda lib, o: lib.optim.lr_scheduler.LambdaLR(
        o, [lambda e: 1 / (1 + e), lambda e: min(1.0, (e + 1) / 5)]),
    "sequential": _warm_cos,
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = _lrs(gm, SCHEDULES[name]), _lrs(torch, SCHEDULES[name])
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-13, abs=1e-15)


def test_closed_forms_by_hand():
    got = _lrs(gm, SCHEDULES["step"])
    assert [g[0] for g in got] == pytest.approx([0.1 * 0.3 ** (e // 4) for e in range(N)])
    got = _lrs(gm, SCHEDULES["cosine"], n=8)
    assert [g[1] for g in got] == pytest.approx(
        [0.01 + (0.03 - 0.01) * (1 + math.cos(math.pi * e / 7)) / 2 for e in range(8)])
    got = _lrs(gm, SCHEDULES["linear"])
    assert [g[0] for g in got] == pytest.approx(
        [0.1 * (0.2 + 0.7 * min(e, 6) / 6) for e in range(N)])
    got = _lrs(gm, SCHEDULES["lambdas"])
    assert [g[1] for g in got] == pytest.approx([0.03 * min(1.0, (e + 1) / 5) for e in range(N)])
    got = _lrs(gm, _warm_cos, n=16)
    assert [g[0] for g in got][:5] == pytest.approx([0.1 * (0.1 + 0.9 * e / 4) for e in range(5)])
    assert [g[0] for g in got][5:] == pytest.approx(
        [1e-3 + (0.1 - 1e-3) * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(11)])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_state_dict_round_trip(name):
    opt = _opt(gm)
    sched = SCHEDULES[name](gm, opt)
    for _ in range(7):
        opt.step()
        sched.step()
    sd, osd = sched.state_dict(), opt.state_dict()
    expected = []
    for _ in range(10):
        opt.step()
        sched.step()
        expected.append(sched.get_last_lr())
    opt2 = _opt(gm)
    sched2 = SCHEDULES[name](gm, opt2)
    opt2.load_state_dict(osd)
    sched2.load_state_dict(sd)
    got = []
    for _ in range(10):
        opt2.step()
        sched2.step()
        got.append(sched2.get_last_lr())
    assert got == expected


def test_lambda_is_not_saved():
    opt = _opt(gm)
    sd = LambdaLR(opt, lambda e: 1.0).state_dict()
    assert sd["lr_lambdas"] == [None, None]


def test_bad_arguments():
    opt = SGD([gm.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="Ending multiplicative factor"):
        LinearLR(opt, end_factor=1.5)
    with pytest.raises(ValueError, match="step_size"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="milestone"):
        SequentialLR(opt, [StepLR(opt, 2), StepLR(opt, 3)], milestones=[])
    with pytest.raises(TypeError, match="not an Optimizer"):
        StepLR(object(), 2)
    fresh = SGD([gm.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(fresh, 2, last_epoch=3)
