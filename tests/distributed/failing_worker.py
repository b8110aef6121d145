"""Run under ``mpiexec -n 2`` by test_distributed_ranks.py: a vae whose rank 1 fails in step 4
of a data-parallel run that checkpoints every 2 steps. Every rank must end, fast, with a
non-zero status, leaving the step-2 checkpoint whole."""
import sys

import gmcore.distributed as dist
from gmcore.models.latent.vae import VAE
from gmcore.models.registry import register
from gmcore.train import TrainConfig, train


@register("vae-failing-on-rank-1", family="latent", dataset="digits", description="test only")
class FailingVAE(VAE):
    calls = 0

    def loss(self, batch):
        FailingVAE.calls += 1
        if dist.get_rank() == 1 and FailingVAE.calls == 4:
            raise RuntimeError("rank 1 fails on purpose")
        return super().loss(batch)


train("vae-failing-on-rank-1", TrainConfig(steps=10, batch_size=32, ckpt_every=2, eval_every=0,
                                           out=sys.argv[1], progress=False, num_samples=0))
