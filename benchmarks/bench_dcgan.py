"""One DCGAN training step (discriminator and generator), forward + backward: gmcore against a
torch transcription.

    python benchmarks/bench_dcgan.py [--repeats 10] [--warmup 2] [--rounds 3] [--threads N]
                                     [--device cpu|cuda|all] [--small] [--no-save]

The model is ``gmcore train dcgan``'s at CIFAR-10 size (:class:`gmcore.models.gan.DCGAN` with
its dataclass defaults: z of 64, a linear projection to 512x4x4, three transposed-conv stages
with batch norm to 64x32x32, a 3x3 conv and a sigmoid; the discriminator four stride-2 convs
64-128-256-512 with batch norm after the first, LeakyReLU 0.2, a linear head), batch 64. The
timed call is the two halves of a step without the optimizers: the discriminator's
non-saturating loss on a real and a detached generated batch and its backward, then the
generator's loss through the discriminator and its backward. ``torch`` is the same networks
in torch.nn. Implementations: ``gmcore`` (the kernels the dispatcher picks), ``gmcore-reference``
(``GMCORE_KERNELS=conv=reference,norm=reference,activation=reference``) and ``torch``, each in a
process of its own, in alternating rounds; the figure is the median over rounds of the median
of ``--repeats`` timed calls. Prints a markdown table and writes
``benchmarks/results/dcgan_<machine>.{json,md}``.
"""
import numpy as np
from _step_bench import StepBench, gmcore_sync, main, time_call, torch_sync

# name -> (batch, channels, image side, latent, generator channels, discriminator channels)
SIZES = {"64x3x32x32": (64, 3, 32, 64, 64, 64)}
SMALL = {"small": (4, 1, 8, 8, 4, 4)}


def _real(size, seed=0):
    b, c, s = size[:3]
    return (np.random.default_rng(seed).integers(0, 256, (b, c, s, s)) / 255.0).astype(np.float32)


def run_gmcore(size, device, repeats, warmup):
    import gmcore as gm
    from gmcore.models.base import DataInfo
    from gmcore.models.gan import DCGAN

    b, c, s, latent, gch, dch = size
    gm.manual_seed(0)
    model = DCGAN(DCGAN.Config(latent_dim=latent, g_channels=gch, d_channels=dch),
                  DataInfo((c, s, s), 256, "cifar10")).to(device)
    real = gm.tensor(_real(size), device=device)

    def call():
        with gm.no_grad():
            fake = model.generate(model.noise(b))
        d_loss, _ = model.critic_loss(real, fake)
        model.zero_grad()
        d_loss.backward()
        g_loss, _ = model.generator_loss(b)
        model.zero_grad()
        g_loss.backward()

    return time_call(call, gmcore_sync(device), repeats, warmup)


def run_torch(size, device, repeats, warmup):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    b, c, s, latent, gch, dch = size
    stages = {8: 1, 28: 2, 32: 3}[s]
    torch.manual_seed(0)
    c0, h0 = gch * 2 ** stages, s // 2 ** stages
    up = []
    ch = c0
    for _ in range(stages):
        up += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.BatchNorm2d(ch // 2), nn.ReLU()]
        ch //= 2
    body = nn.Sequential(nn.BatchNorm2d(c0), nn.ReLU(), *up, nn.Conv2d(ch, c, 3, padding=1))
    project = nn.Linear(latent, c0 * h0 * h0)
    down, ch, h = [nn.Conv2d(c, dch, 4, 2, 1), nn.LeakyReLU(0.2)], dch, s // 2
    for _ in range(stages):
        down += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2)]
        ch, h = ch * 2, h // 2
    disc = nn.Sequential(*down, nn.Flatten(), nn.Linear(ch * h * h, 1))
    gen_mods = nn.ModuleList([project, body]).to(device)
    disc = disc.to(device)

    def generate(n):
        z = torch.randn(n, latent, device=device)
        return torch.sigmoid(body(project(z).reshape(n, c0, h0, h0)))

    real = torch.tensor(_real(size), device=device)

    def call():
        with torch.no_grad():
            fake = generate(b)
        d_loss = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
        gen_mods.zero_grad()
        disc.zero_grad()
        d_loss.backward()
        g_loss = F.softplus(-disc(generate(b))).mean()
        gen_mods.zero_grad()
        disc.zero_grad()
        g_loss.backward()

    return time_call(call, torch_sync(device), repeats, warmup)


def _describe(size):
    b, c, s, latent, gch, dch = size
    return ({"batch": b, "channels": c, "side": s, "latent": latent, "g_channels": gch, "d_channels": dch},
            f"batch {b}, {c}x{s}x{s}, z {latent}")


BENCH = StepBench("dcgan", "DCGAN training step (discriminator and generator losses) forward+backward", __file__,
                  SIZES, SMALL, run_gmcore, run_torch, _describe,
                  reference_kernels="conv=reference,norm=reference,activation=reference", repeats=10, warmup=2)

if __name__ == "__main__":
    main(BENCH, __doc__.split("\n\n")[0])
