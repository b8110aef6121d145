"""DataLoader: batching, seeded shuffle per epoch, drop_last, resume from state_dict, devices."""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore.data import ArrayDataset, DataLoader, Dataset, TensorDataset, default_collate


class PerItem(Dataset):
    """A dataset without get_batch: the loader must loop over items and collate."""

    def __init__(self, n):
        self.n = n
        self.calls = 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls += 1
        return np.full((2, 3), i, np.float32), i


def _ids(loader):
    return [y.data.tolist() for _, y in loader]


def _ds(n=23):
    return ArrayDataset(np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                        np.arange(n))


def test_sequential_batches_cover_everything_in_order():
    loader = DataLoader(_ds(), batch_size=5)
    batches = list(loader)
    assert len(loader) == len(batches) == 5
    x, y = batches[0]
    assert isinstance(x, gm.Tensor) and x.shape == (5, 3) and x.dtype == gm.float32
    assert y.dtype == gm.int64 and x.device == gm.device("cpu")
    assert sum(_ids(DataLoader(_ds(), batch_size=5)), []) == list(range(23))
    assert batches[-1][1].shape == (3,)


def test_drop_last():
    loader = DataLoader(_ds(), batch_size=5, drop_last=True)
    assert len(loader) == 4
    assert [len(y) for y in _ids(loader)] == [5, 5, 5, 5]
    assert len(DataLoader(_ds(20), batch_size=5, drop_last=True)) == 4


def test_seeded_shuffle_reproducible_and_differs_between_epochs():
    a = DataLoader(_ds(), batch_size=4, shuffle=True, generator=7)
    b = DataLoader(_ds(), batch_size=4, shuffle=True, generator=7)
    a0, a1 = _ids(a), _ids(a)
    assert a0 == _ids(b) and a1 == _ids(b)
    assert a0 != a1, "epochs 0 and 1 must use different orders"
    for epoch in (a0, a1):
        assert sorted(sum(epoch, [])) == list(range(23))       # a permutation: no repeats
    assert _ids(DataLoader(_ds(), batch_size=4, shuffle=True, generator=8)) != a0
    assert a.epoch == 2
    # the order of an epoch depends on (seed, epoch) only
    a.set_epoch(1)
    assert _ids(a) == a1


def test_generator_none_follows_manual_seed_and_gm_generator():
    gm.manual_seed(3)
    a = _ids(DataLoader(_ds(), batch_size=6, shuffle=True))
    gm.manual_seed(3)
    assert _ids(DataLoader(_ds(), batch_size=6, shuffle=True)) == a
    g1, g2 = gm.Generator().manual_seed(5), gm.Generator().manual_seed(5)
    assert _ids(DataLoader(_ds(), 6, True, generator=g1)) == \
        _ids(DataLoader(_ds(), 6, True, generator=g2))


@pytest.mark.parametrize("stop_after", [0, 1, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_state_dict_resume_gives_the_same_batches(stop_after, drop_last):
    def make():
        return DataLoader(_ds(), batch_size=5, shuffle=True, drop_last=drop_last, generator=11)

    ref = make()
    expected = [_ids(ref) for _ in range(3)]                     # three full epochs
    run = make()
    _ids(run)                                                    # epoch 0 done
    seen = []
    it = iter(run)
    for _ in range(stop_after):                                  # part of epoch 1 ...
        seen.append(next(it)[1].data.tolist())
    state = json.loads(json.dumps(run.state_dict()))             # ... saved as JSON
    resumed = make()
    resumed.seed = 999                                           # the state restores it
    resumed.load_state_dict(state)
    seen += _ids(resumed)
    assert seen == expected[1]
    assert _ids(resumed) == expected[2]


def test_state_during_last_batch_points_to_next_epoch():
    loader = DataLoader(_ds(10), batch_size=5, shuffle=True, generator=1)
    states = [loader.state_dict() for _ in loader]
    assert [(s["epoch"], s["batch"]) for s in states] == [(0, 1), (1, 0)]


def test_break_then_iter_starts_next_epoch():
    loader = DataLoader(_ds(), batch_size=5, shuffle=True, generator=2)
    ref = DataLoader(_ds(), batch_size=5, shuffle=True, generator=2)
    for _ in loader:
        break
    assert _ids(loader) == [list(map(int, ref.epoch_order(1)[i:i + 5])) for i in range(0, 23, 5)]


def test_load_state_dict_checks_setup():
    loader = DataLoader(_ds(), batch_size=5, shuffle=True, generator=2)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="batch_size=5"):
        DataLoader(_ds(), batch_size=4, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="num_examples=23"):
        DataLoader(_ds(24), batch_size=5, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="outside"):
        loader.load_state_dict({**state, "batch": 99})


def test_per_item_path_matches_fast_path():
    slow = PerItem(11)
    loader = DataLoader(slow, batch_size=4, shuffle=True, generator=3)
    got = [(x.data.copy(), y.data.copy()) for x, y in loader]
    assert slow.calls == 11
    fast = ArrayDataset(np.stack([slow[i][0] for i in range(11)]), np.arange(11))
    for (x, y), (fx, fy) in zip(got, DataLoader(fast, batch_size=4, shuffle=True, generator=3)):
        assert x.shape == (len(y), 2, 3) and x.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(x, fx.data)
        np.testing.assert_array_equal(y, fy.data)


def test_fast_path_does_not_touch_getitem():
    class Counting(ArrayDataset):
        def __getitem__(self, i):
            raise AssertionError("the fast path must not call __getitem__")

    x, = next(iter(DataLoader(Counting(np.zeros((8, 2), np.float32)), batch_size=8)))
    assert x.shape == (8, 2)


def test_collate_fn_and_dict_batches():
    def collate(items):
        return {"x": np.stack([i[0] for i in items]), "n": len(items)}

    batch = next(iter(DataLoader(PerItem(5), batch_size=2, collate_fn=collate)))
    assert set(batch) == {"x", "n"} and batch["x"].shape == (2, 2, 3) and int(batch["n"]) == 2


def test_tensor_dataset_and_default_collate():
    ds = TensorDataset(gm.arange(6).reshape(3, 2), gm.tensor([1.0, 2.0, 3.0]))
    a, b = next(iter(DataLoader(ds, batch_size=3)))
    assert a.tolist() == [[0, 1], [2, 3], [4, 5]] and b.tolist() == [1.0, 2.0, 3.0]
    x, y = default_collate([(1.5, True), (2.5, False)])
    assert x.dtype == np.float64 and y.dtype == np.bool_
    with pytest.raises(ValueError, match="different shapes"):
        default_collate([(np.zeros(2),), (np.zeros(3),)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="share their first dimension"):
        ArrayDataset(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(_ds(), batch_size=0)
    with pytest.raises(TypeError, match="generator"):
        DataLoader(_ds(), shuffle=True, generator="abc")
    with pytest.raises(TypeError, match="__len__"):
        DataLoader(object())
    with pytest.raises(IndexError, match="out of range"):
        _ds(3)[3]


def test_cuda_batches(device):
    if device == "cpu":
        pytest.skip("covered by the cpu tests")
    x, y = next(iter(DataLoader(_ds(), batch_size=4, device=device)))
    assert x.device == gm.device(device) and y.device == gm.device(device)
