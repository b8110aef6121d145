"""EMA of parameters: the averaging math, swap-in/restore, buffers, state dicts."""
import numpy as np
import pytest

import gmcore as gm
from gmcore.optim import EMA


def test_average_math_and_swap():
    w = gm.tensor([1.0, 2.0], dtype=gm.float64, requires_grad=True)
    ema = EMA([w], decay=0.9)
    ref = np.array([1.0, 2.0])
    rng = np.random.default_rng(0)
    for _ in range(5):
        with gm.no_grad():
            w.copy_(gm.tensor(rng.normal(size=2)))
        ema.update()
        ref = 0.9 * ref + 0.1 * w.detach().numpy()
    np.testing.assert_allclose(ema.shadow_params[0].numpy(), ref, rtol=1e-14)
    current = w.detach().numpy().copy()
    with ema.average_parameters():
        np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-14)
    np.testing.assert_array_equal(w.detach().numpy(), current)
    ema.store()
    ema.copy_to()
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-14)
    ema.restore()
    np.testing.assert_array_equal(w.detach().numpy(), current)
    with pytest.raises(RuntimeError, match="store"):
        ema.restore()


def test_restore_after_an_exception():
    w = gm.tensor([1.0], requires_grad=True)
    ema = EMA([w], decay=0.0)
    with gm.no_grad():
        w.fill_(5.0)
    with pytest.raises(KeyError):
        with ema.average_parameters():
            assert w.item() == 1.0
            raise KeyError("boom")
    assert w.item() == 5.0


def test_warmup_decay():
    w = gm.zeros(1, requires_grad=True)
    ema = EMA([w], decay=0.999, warmup=True)
    assert ema.get_decay() == pytest.approx(0.1)
    ema.update()
    assert ema.get_decay() == pytest.approx(2 / 11)
    assert EMA([w], decay=0.5, warmup=True).get_decay() == pytest.approx(0.1)


class _Fake:
    """A module-like object: parameters() and named_buffers()."""

    def __init__(self):
        self.w = gm.tensor([0.0, 0.0], requires_grad=True)
        self.running = gm.tensor([1.0])
        self.count = gm.tensor([0])

    def parameters(self):
        return iter([self.w])

    def named_buffers(self):
        return iter([("running", self.running), ("count", self.count)])


def test_module_buffers_are_copied_not_averaged():
    m = _Fake()
    ema = EMA(m, decay=0.5)
    with gm.no_grad():
        m.w.fill_(2.0)
        m.running.fill_(7.0)
        m.count.fill_(3)
    ema.update()
    with ema.average_parameters():
        assert m.w.tolist() == [1.0, 1.0]
        assert m.running.tolist() == [7.0] and m.count.tolist() == [3]
    assert m.w.tolist() == [2.0, 2.0]


def test_state_dict_round_trip_and_errors():
    w = gm.tensor([1.0, 2.0], requires_grad=True)
    ema = EMA([w], decay=0.8)
    with gm.no_grad():
        w.fill_(3.0)
    ema.update()
    sd = ema.state_dict()
    other = EMA([gm.zeros(2, requires_grad=True)], decay=0.1)
    other.load_state_dict(sd)
    assert other.decay == 0.8 and other.num_updates == 1
    np.testing.assert_array_equal(other.shadow_params[0].numpy(), ema.shadow_params[0].numpy())
    with pytest.raises(ValueError, match="shape"):
        EMA([gm.zeros(3, requires_grad=True)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="1 entries"):
        EMA([w, gm.zeros(1, requires_grad=True)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="decay"):
        EMA([w], decay=1.5)


def test_ema_with_a_real_module():
    nn = gm.nn
    if not hasattr(nn, "Linear"):
        pytest.skip("gmcore.nn.Linear not available yet")
    m = nn.Linear(3, 2)
    ema = EMA(m, decay=0.5)
    before = [p.detach().numpy().copy() for p in m.parameters()]
    with gm.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    ema.update()
    with ema.average_parameters():
        for p, b in zip(m.parameters(), before):
            np.testing.assert_allclose(p.detach().numpy(), b + 0.5, rtol=1e-6)
