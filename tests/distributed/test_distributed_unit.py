"""Data-parallel pieces that one process can check: the sampler's sharding, the sharded random
draws, the end-of-backward callbacks, and the one-rank behaviour of the collectives, DDP and
SyncBatchNorm. Two-rank runs are in test_distributed_ranks.py."""
import numpy as np
import pytest

import gmcore as gm
import gmcore.distributed as dist
from gmcore.data import ArrayDataset, DataLoader, DistributedSampler
from gmcore.distributed.training import DataParallel


def test_sampler_ranks_deal_the_one_process_batches():
    ds = ArrayDataset(np.arange(103))
    single = DataLoader(ds, batch_size=12, shuffle=True, generator=5, drop_last=True)
    ranks = [DataLoader(ds, batch_size=4, drop_last=True,
                        sampler=DistributedSampler(ds, num_replicas=3, rank=r, seed=5, drop_last=True))
             for r in range(3)]
    epochs = []
    for _ in range(2):   # the order changes per epoch, alike on every rank
        whole = [x.tolist() for (x,) in single]
        parts = [[x.tolist() for (x,) in loader] for loader in ranks]
        assert len(whole) == len(parts[0]) == 103 // 12
        for k, batch in enumerate(whole):
            assert [parts[r][k] for r in range(3)] == [batch[r::3] for r in range(3)]
        epochs.append(whole)
    assert epochs[0] != epochs[1]


def test_sampler_pads_or_drops_like_torch():
    ds = ArrayDataset(np.arange(5))
    padded = [list(DistributedSampler(ds, 2, r, shuffle=False)) for r in range(2)]
    assert padded == [[0, 2, 4], [1, 3, 0]]
    dropped = [list(DistributedSampler(ds, 2, r, shuffle=False, drop_last=True)) for r in range(2)]
    assert dropped == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="rank 2 is outside"):
        DistributedSampler(ds, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="sampler and shuffle"):
        DataLoader(ds, batch_size=2, shuffle=True, sampler=DistributedSampler(ds, 2, 0))


def test_loader_with_sampler_resumes_mid_epoch():
    ds = ArrayDataset(np.arange(40))
    make = lambda: DataLoader(ds, batch_size=3, sampler=DistributedSampler(ds, 2, 1, seed=2))  # noqa: E731
    a = make()
    it = iter(a)
    [next(it) for _ in range(4)]
    state = a.state_dict()
    rest = [x.tolist() for (x,) in it]
    b = make()
    b.load_state_dict(state)
    assert [x.tolist() for (x,) in b] == rest


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_draws_are_rows_of_the_whole_draw(world):
    whole = gm.Generator().manual_seed(1)
    n, u, k = whole.normal((7, 3), 0.0, 1.0, np.float32), whole.uniform((7,), 0.0, 1.0, np.float64), \
        whole.integers(0, 9, (7, 2), np.int64)
    after = whole.normal((2,), 0.0, 1.0, np.float64)
    for rank in range(world):
        g = gm.Generator().manual_seed(1)
        with g.sharded(rank, world, 7):
            mine = (g.normal((len(range(rank, 7, world)), 3), 0.0, 1.0, np.float32),
                    g.uniform((len(range(rank, 7, world)),), 0.0, 1.0, np.float64),
                    g.integers(0, 9, (len(range(rank, 7, world)), 2), np.int64))
        assert all(np.array_equal(m, w[rank::world]) for m, w in zip(mine, (n, u, k)))
        assert np.array_equal(g.normal((2,), 0.0, 1.0, np.float64), after)   # streams stay in step


def test_sharded_leaves_other_shapes_whole():
    g, h = gm.Generator().manual_seed(4), gm.Generator().manual_seed(4)
    with g.sharded(0, 2, 8):
        a = g.normal((5, 2), 0.0, 1.0, np.float64)   # not a share of the 8-row batch
    assert np.array_equal(a, h.normal((5, 2), 0.0, 1.0, np.float64))
    with pytest.raises(ValueError, match="not a shard"):
        with g.sharded(2, 2, 8):
            pass


def test_queue_callback_runs_after_grads_and_not_for_autograd_grad():
    w = gm.ones(3, requires_grad=True)
    seen = []
    w.register_hook(lambda g: gm.autograd.queue_callback(lambda: seen.append(w.grad.tolist())) or g)
    (w * 2).sum().backward()
    assert seen == [[2.0, 2.0, 2.0]]
    gm.autograd.grad((w * 3).sum(), [w])
    assert len(seen) == 1
    with pytest.raises(RuntimeError, match="no backward pass is running"):
        gm.autograd.queue_callback(lambda: None)


def test_one_rank_collectives_ddp_and_sync_batchnorm_are_the_plain_ones():
    dist.init_process_group()
    assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
    t = gm.tensor([1.0, 2.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    dist.broadcast(t, src=0)
    assert t.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="reduce op"):
        dist.all_reduce(t, op="median")
    gm.manual_seed(0)
    net = gm.nn.Sequential(gm.nn.Linear(4, 3), gm.nn.BatchNorm1d(3))
    sync = gm.nn.SyncBatchNorm.convert_sync_batchnorm(
        gm.nn.Sequential(gm.nn.Linear(4, 3), gm.nn.BatchNorm1d(3)))
    sync.load_state_dict(net.state_dict())
    assert isinstance(sync[1], gm.nn.SyncBatchNorm)
    ddp = dist.DistributedDataParallel(sync)
    x = gm.randn(6, 4)
    a, b = net(x), ddp(x)
    assert np.allclose(a.data, b.data, atol=1e-6)
    (a ** 2).sum().backward()
    (b ** 2).sum().backward()
    for p, q in zip(net.parameters(), sync.parameters()):
        assert np.allclose(p.grad.data, q.grad.data, atol=1e-5)
    assert np.allclose(net[1].running_var.data, sync[1].running_var.data)


def test_global_batch_must_divide_over_the_ranks():
    dp = DataParallel(rank=0, world=3)
    assert dp.batch_per_rank(96) == 32
    with pytest.raises(ValueError, match="--batch-size 64 is the global batch"):
        dp.batch_per_rank(64)


def test_launcher_size_from_the_environment(monkeypatch):
    for name in dist._SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert dist.launched_world_size() == 1
    monkeypatch.setenv("PMI_SIZE", "4")
    assert dist.launched_world_size() == 4


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mpi(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mpi)
    with pytest.raises(dist.DistributedError, match=r"pip install \"gmcore\[dist\]\""):
        dist._mpi()
    assert not dist.is_available()
