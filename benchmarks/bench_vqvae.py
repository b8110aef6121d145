"""One VQ-VAE training step, forward + backward: gmcore against a torch transcription.

    python benchmarks/bench_vqvae.py [--repeats 10] [--warmup 2] [--rounds 3] [--threads N]
                                     [--device cpu|cuda|all] [--small] [--no-save]

The model is ``gmcore train vqvae``'s at CIFAR-10 size (:class:`gmcore.models.latent.VQVAE`
with its dataclass defaults: 3x32x32 images, two stride-2 stages to an 8x8 grid of 64-d vectors,
a 512 x 64 EMA codebook, 128 hidden channels, two residual blocks each side, a 3-component
discretized logistic mixture decoder over 256 levels), batch 32. The timed call is
``loss = model.loss(batch); loss.backward()`` (encoder, nearest-code search, EMA codebook update
and dead-code check, decoder, DLML likelihood, commitment term, the backward). ``torch`` is the
same architecture written the usual way: the quantizer is ``torch.cdist`` + ``argmin``, the EMA
update ``index_add_``, the likelihood PixelCNN++'s loss in torch ops. Implementations:
``gmcore`` (the kernels the dispatcher picks), ``gmcore-reference``
(``GMCORE_KERNELS=vq=reference,dlml=reference``: the VQ and DLML families as plain array code)
and ``torch``. Each runs in a process of its own, in alternating rounds; the figure is the
median over rounds of the median of ``--repeats`` timed calls. Prints a markdown table and
writes ``benchmarks/results/vqvae_<machine>.{json,md}``.
"""
import math

import numpy as np
from _step_bench import StepBench, gmcore_sync, main, time_call, torch_sync

# name -> (batch, channels, image side, codes, code dim, hidden, residual hidden, stages)
SIZES = {"3x32x32": (32, 3, 32, 512, 64, 128, 32, 2)}
SMALL = {"small": (4, 3, 8, 16, 8, 8, 4, 1)}
MIXTURES = 3


def _batch(size, seed=0):
    b, c, s = size[:3]
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (b, c, s, s)) / 255.0).astype(np.float32)


def run_gmcore(size, device, repeats, warmup):
    import gmcore as gm
    from gmcore.models.base import DataInfo
    from gmcore.models.latent import VQVAE

    b, c, s, k, d, hidden, res_hidden, stages = size
    gm.manual_seed(0)
    cfg = VQVAE.Config(codes=k, code_dim=d, hidden=hidden, res_hidden=res_hidden, downsample=stages,
                       mixtures=MIXTURES)
    model = VQVAE(cfg, DataInfo((c, s, s), 256, "cifar10")).to(device)
    x = gm.tensor(_batch(size), device=device)
    model.loss((x,))  # the k-means++ seeding happens outside the timed calls

    def call():
        loss, _ = model.loss((x,))
        model.zero_grad()
        loss.backward()
        return loss

    return time_call(call, gmcore_sync(device), repeats, warmup)


def run_torch(size, device, repeats, warmup):
    import torch
    from torch import nn

    b, c, s, k, d, hidden, res_hidden, stages = size
    torch.manual_seed(0)
    out_ch = MIXTURES * (1 + 2 * c + c * (c - 1) // 2)

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(hidden, res_hidden, 3, padding=1), nn.Conv2d(res_hidden, hidden, 1)

        def forward(self, x):
            return x + self.c2(torch.relu(self.c1(torch.relu(x))))

    enc, ch = [], c
    for i in range(stages):
        w = hidden if i == stages - 1 else hidden // 2
        enc += [nn.Conv2d(ch, w, 4, stride=2, padding=1), nn.ReLU()]
        ch = w
    enc += [nn.Conv2d(ch, hidden, 3, padding=1), Res(), Res(), nn.ReLU(), nn.Conv2d(hidden, d, 1)]
    dec, ch = [nn.Conv2d(d, hidden, 3, padding=1), Res(), Res()], hidden
    for _ in range(stages):
        dec += [nn.ReLU(), nn.ConvTranspose2d(ch, hidden // 2, 4, stride=2, padding=1)]
        ch = hidden // 2
    dec += [nn.ReLU(), nn.Conv2d(ch, out_ch, 3, padding=1)]
    encoder, decoder = nn.Sequential(*enc).to(device), nn.Sequential(*dec).to(device)
    codebook = torch.empty(k, d, device=device).uniform_(-1 / k, 1 / k)
    embed_sum, cluster_size = codebook.clone(), torch.ones(k, device=device)
    x = torch.tensor(_batch(size), device=device)
    decay, eps, beta = 0.99, 1e-5, 0.25

    def quantize(z):
        nonlocal codebook, embed_sum, cluster_size
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = torch.cdist(flat.detach(), codebook).argmin(1)
        q = codebook[idx]
        with torch.no_grad():                                  # EMA codebook update
            counts = torch.bincount(idx, minlength=k).to(flat.dtype)
            sums = torch.zeros_like(codebook).index_add_(0, idx, flat.detach())
            cluster_size = decay * cluster_size + (1 - decay) * counts
            embed_sum = decay * embed_sum + (1 - decay) * sums
            n = cluster_size.sum()
            codebook = embed_sum / ((cluster_size + eps) / (n + k * eps) * n)[:, None]
            int((cluster_size < 0.1).sum())                    # the dead-code check (a sync)
        commit = beta * ((flat - q.detach()) ** 2).mean()
        q = flat + (q - flat).detach()
        return q.reshape(z.shape[0], z.shape[2], z.shape[3], d).permute(0, 3, 1, 2), commit

    def call():
        z = encoder(x)
        q, commit = quantize(z)
        recon = _dlml_nll(torch, x * 2 - 1, decoder(q), 256) / x.shape[0]
        loss = recon + commit * (z.numel() // z.shape[0])
        encoder.zero_grad()
        decoder.zero_grad()
        loss.backward()
        return loss

    return time_call(call, torch_sync(device), repeats, warmup)


def _dlml_nll(torch, x, params, bins):
    """PixelCNN++'s loss in torch (channels-first, gmcore's parameter layout), summed."""
    tf = torch.nn.functional
    h, thr = 1.0 / (bins - 1), 1e-5 * 255.0 / (bins - 1)
    B, C, H, W = x.shape
    K = MIXTURES
    logits = params[:, :K]
    r = params[:, K:].reshape(B, C, 3 * K, H, W)
    means, ls, co = r[:, :, :K], torch.clamp(r[:, :, K:2 * K], min=-7.0), torch.tanh(r[:, :, 2 * K:])
    xx = x.unsqueeze(2)
    m2 = means[:, 1] + co[:, 0] * xx[:, 0]
    m3 = means[:, 2] + co[:, 1] * xx[:, 0] + co[:, 2] * xx[:, 1]
    means = torch.stack([means[:, 0], m2, m3], 1)
    cen = xx - means
    inv = torch.exp(-ls)
    plus, mn, mid = inv * (cen + h), inv * (cen - h), inv * cen
    delta = torch.sigmoid(plus) - torch.sigmoid(mn)
    lp = torch.where(xx < -1 + h, plus - tf.softplus(plus), torch.where(
        xx > 1 - h, -tf.softplus(mn), torch.where(
            delta > thr, torch.log(torch.clamp(delta, min=1e-12)),
            mid - ls - 2.0 * tf.softplus(mid) - math.log((bins - 1) / 2))))
    lp = lp.sum(1) + torch.log_softmax(logits, 1)
    return -torch.logsumexp(lp, 1).sum()


def _describe(size):
    b, c, s, k, d, hidden, _, _ = size
    return ({"batch": b, "channels": c, "hw": s, "codes": k, "code_dim": d, "hidden": hidden},
            f"B={b}, codebook {k}x{d}, hidden {hidden}")


BENCH = StepBench("vqvae", "VQ-VAE training step (encoder, EMA quantizer, decoder, DLML likelihood) forward+backward", __file__, SIZES, SMALL, run_gmcore, run_torch,
                  _describe, "vq=reference,dlml=reference", repeats=10, warmup=2)

if __name__ == "__main__":
    main(BENCH, __doc__.splitlines()[0])
