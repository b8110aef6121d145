"""Run under ``mpiexec -n 2`` by test_distributed_ranks.py: collectives, DistributedDataParallel
and SyncBatchNorm against one process computing the whole batch. Exits 0 when every check holds."""
import numpy as np

import gmcore as gm
import gmcore.distributed as dist

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
assert world == 2, world

t = gm.tensor([rank + 1.0, 10.0 * rank])
dist.all_reduce(t)
assert t.tolist() == [3.0, 10.0], t.tolist()
m = gm.tensor([float(rank)])
dist.all_reduce(m, op=dist.ReduceOp.MAX)
assert m.tolist() == [1.0]
b = gm.full((2,), float(rank))
dist.broadcast(b, src=1)
assert b.tolist() == [1.0, 1.0]


def build():
    return gm.nn.Sequential(gm.nn.Linear(5, 4), gm.nn.BatchNorm1d(4), gm.nn.Tanh(), gm.nn.Linear(4, 1)).double()


gm.manual_seed(100 + rank)                     # different on purpose: DDP broadcasts rank 0's
local = gm.nn.SyncBatchNorm.convert_sync_batchnorm(build())
ddp = dist.DistributedDataParallel(local, bucket_cap_mb=1e-5)   # one bucket per parameter
whole = build()
whole.load_state_dict(local.state_dict())
checks = gm.cat([p.reshape(-1) for p in local.parameters()])
spread = checks.clone()
dist.all_reduce(spread, op="max")
assert np.array_equal(spread.data, checks.data), "DDP did not broadcast rank 0's parameters"

x = gm.Tensor(np.random.default_rng(0).standard_normal((16, 5)))   # the same global batch everywhere
target = gm.Tensor(np.random.default_rng(1).standard_normal((16, 1)))
mine = slice(rank, None, world)
loss = ((ddp(x[mine]) - target[mine]) ** 2).mean()
loss.backward()
ref = ((whole(x) - target) ** 2).mean()
ref.backward()
for (name, p), q in zip(local.named_parameters(), whole.parameters()):
    assert np.allclose(p.grad.data, q.grad.data, atol=1e-12), f"gradient of {name} differs from the whole batch's"
assert np.allclose(local[1].running_mean.data, whole[1].running_mean.data, atol=1e-12)
assert np.allclose(local[1].running_var.data, whole[1].running_var.data, atol=1e-12)

# no_sync: local accumulation, then the next synchronised backward averages the total
for p in local.parameters():
    p.grad = None
with ddp.no_sync():
    ((ddp(x[mine]) - target[mine]) ** 2).mean().backward()
w0 = local[0].weight.grad.clone()
rank0s = w0.clone()
dist.broadcast(rank0s, src=0)
assert rank == 0 or not np.allclose(w0.data, rank0s.data), "no_sync still averaged"
((ddp(x[mine]) - target[mine]) ** 2).mean().backward()
total = local[0].weight.grad.clone()
rank0s = total.clone()
dist.broadcast(rank0s, src=0)
assert np.allclose(total.data, rank0s.data, atol=1e-12), "the ranks' gradients differ after sync"
print(f"rank {rank}: ok", flush=True)
