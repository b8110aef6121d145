"""One diffusion U-Net training step, forward + backward: gmcore against a torch transcription.

    python benchmarks/bench_unet.py [--repeats 5] [--warmup 1] [--rounds 3] [--threads N]
                                    [--device cpu|cuda|all] [--small] [--no-save]

The network is :class:`gmcore.models.diffusion.unet.UNet`; ``torch`` is :func:`torch_unet`, the
same layer list in torch.nn with the same parameter names, so gmcore's ``state_dict`` loads into
it unchanged. Before timing, the script copies a gmcore U-Net's weights (its zero-initialised
layers perturbed, so the output is not trivially 0) into the transcription and asserts that
outputs and parameter gradients agree to ~1e-5 (at the digits size, and at a tiny size with
``scale_shift_norm``): the two sides time the same function.
The timed call is a DDPM-style step without the optimizer: ``net(x_t, t)``, the mean squared
error against a fixed target, ``zero_grad`` and ``backward``. Sizes:

* ``digits``: batch 128 of 1x8x8, the U-Net's defaults (channels 64, mult (1, 2), 2 residual
  blocks, attention at the 4x4 map and in the middle), what ``ddpm`` trains on digits;
* ``cifar``: batch 8 of 3x32x32, channels 64, mult (1, 2, 2), 2 residual blocks, attention at
  16x16 (and in the middle at 8x8): a small CIFAR-size U-Net.

Implementations: ``gmcore`` (the kernels the dispatcher picks), ``gmcore-reference``
(``GMCORE_KERNELS=conv=reference,norm=reference,activation=reference,attention=reference``) and
``torch``, each in a process of its own, in alternating rounds; the figure is the median over
rounds of the median of ``--repeats`` timed calls. Prints a markdown table and writes
``benchmarks/results/unet_<machine>.{json,md}``.
"""
import sys

import numpy as np
from _step_bench import StepBench, gmcore_sync, main, time_call, torch_sync

# name -> (batch, in channels, side, channels, channel_mult, attention_resolutions)
SIZES = {"digits": (128, 1, 8, 64, (1, 2), (4,)),
         "cifar": (8, 3, 32, 64, (1, 2, 2), (16,))}
SMALL = {"small": (4, 1, 8, 8, (1, 2), (4,))}
HEADS, RES_BLOCKS, T_MAX = 4, 2, 1000


def _inputs(size, seed=0):
    b, c, s = size[:3]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, c, s, s)).astype(np.float32)
    target = rng.standard_normal((b, c, s, s)).astype(np.float32)
    t = rng.integers(0, T_MAX, b).astype(np.int64)
    return x, t, target


def gmcore_unet(size, perturb=False, scale_shift=False):
    import gmcore as gm
    from gmcore.models.diffusion.unet import UNet

    b, c, s, ch, mult, attn = size
    gm.manual_seed(0)
    net = UNet(c, c, channels=ch, channel_mult=mult, num_res_blocks=RES_BLOCKS,
               attention_resolutions=attn, num_heads=min(HEADS, ch), image_size=s,
               scale_shift_norm=scale_shift)
    if perturb:  # the zero-initialised layers would make the comparison trivial
        with gm.no_grad():
            for p in net.parameters():
                p.add_(0.05 * gm.randn(*p.shape))
    return net


def torch_unet(size, scale_shift=False):
    """The transcription: the same modules, in the same order, under the same names."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    b, c, s, ch, mult, attn_res = size
    heads = min(HEADS, ch)

    def groups(n, g=32):
        g = max(1, min(g, n // 2))
        while n % g:
            g -= 1
        return g

    class ResBlock(nn.Module):
        def __init__(self, i, o, emb):
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(groups(i), i), nn.Conv2d(i, o, 3, padding=1)
            self.emb_proj = nn.Linear(emb, 2 * o if scale_shift else o)
            self.norm2, self.dropout = nn.GroupNorm(groups(o), o), nn.Dropout(0.0)
            self.conv2 = nn.Conv2d(o, o, 3, padding=1)
            self.skip = nn.Conv2d(i, o, 1) if i != o else nn.Identity()

        def forward(self, x, emb):
            h, e = self.conv1(F.silu(self.norm1(x))), self.emb_proj(emb)[:, :, None, None]
            if scale_shift:
                scale, shift = e.chunk(2, 1)
                h = self.norm2(h) * (1 + scale) + shift
            else:
                h = self.norm2(h + e)
            return self.skip(x) + self.conv2(self.dropout(F.silu(h)))

    class Attention(nn.Module):  # gmcore.nn.SelfAttention2d, residual="ddpm"
        def __init__(self, n):
            super().__init__()
            self.g = groups(n)
            self.norm_weight, self.norm_bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
            self.qkv_weight = nn.Parameter(torch.zeros(3 * n, n))
            self.qkv_bias = nn.Parameter(torch.zeros(3 * n))
            self.proj_weight, self.proj_bias = nn.Parameter(torch.zeros(n, n)), nn.Parameter(torch.zeros(n))

        def forward(self, x):
            B, C, H, W = x.shape
            h = F.group_norm(x, self.g, self.norm_weight, self.norm_bias, 1e-5)
            h = h.reshape(B, C, H * W).transpose(1, 2)
            q, k, v = F.linear(h, self.qkv_weight, self.qkv_bias).split([C, C, C], 2)
            q, k, v = (z.reshape(B, H * W, heads, -1).transpose(1, 2) for z in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)
            out = F.linear(out, self.proj_weight, self.proj_bias).transpose(1, 2).reshape(B, C, H, W)
            return x + out

    class Down(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.conv = nn.Conv2d(n, n, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    class Up(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.conv = nn.Conv2d(n, n, 3, padding=1)

        def forward(self, x):
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

    def run(step, h, emb):
        for layer in step:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            emb = 4 * ch
            self.time_embed = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
            self.input_conv = nn.Conv2d(c, ch, 3, padding=1)
            attend = [(s >> i) in attn_res for i in range(len(mult))]
            n, skips = ch, [ch]
            self.down = nn.ModuleList()
            for level, m in enumerate(mult):
                for _ in range(RES_BLOCKS):
                    step = [ResBlock(n, m * ch, emb)]
                    n = m * ch
                    if attend[level]:
                        step.append(Attention(n))
                    self.down.append(nn.ModuleList(step))
                    skips.append(n)
                if level != len(mult) - 1:
                    self.down.append(nn.ModuleList([Down(n)]))
                    skips.append(n)
            self.middle = nn.ModuleList([ResBlock(n, n, emb), Attention(n), ResBlock(n, n, emb)])
            self.up = nn.ModuleList()
            for level, m in reversed(list(enumerate(mult))):
                for i in range(RES_BLOCKS + 1):
                    step = [ResBlock(n + skips.pop(), m * ch, emb)]
                    n = m * ch
                    if attend[level]:
                        step.append(Attention(n))
                    if level and i == RES_BLOCKS:
                        step.append(Up(n))
                    self.up.append(nn.ModuleList(step))
            self.out_norm, self.out_conv = nn.GroupNorm(groups(n), n), nn.Conv2d(n, c, 3, padding=1)

        def forward(self, x, t):
            half = ch // 2
            freqs = torch.exp(-np.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
            args = t.float()[:, None] * freqs.float().to(x.device)[None]
            emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], 1))
            emb = F.silu(emb)
            h = self.input_conv(x)
            hs = [h]
            for step in self.down:
                h = run(step, h, emb)
                hs.append(h)
            h = run(self.middle, h, emb)
            for step in self.up:
                h = run(step, torch.cat([h, hs.pop()], 1), emb)
            return self.out_conv(F.silu(self.out_norm(h)))

    return UNet()


def check_agreement(size, scale_shift=False):
    """gmcore's U-Net and the torch transcription with the same weights: same output (to 1e-5 of
    its largest value), same parameter gradients (to 3e-5 of each tensor's largest value: the
    float32 sums over the batch round differently, and the smallest gradients are ~1e-3).
    Returns the worst relative error."""
    import torch

    import gmcore as gm

    net = gmcore_unet(size, perturb=True, scale_shift=scale_shift)
    tnet = torch_unet(size, scale_shift)
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()},
                         strict=True)
    x, t, target = _inputs(size, seed=1)
    out = net(gm.tensor(x), gm.tensor(t))
    ((out - gm.tensor(target)) ** 2).mean().backward()
    tout = tnet(torch.tensor(x), torch.tensor(t))
    ((tout - torch.tensor(target)) ** 2).mean().backward()
    o, to = out.detach().numpy(), tout.detach().numpy()
    worst = [("output", np.abs(o - to).max() / max(1.0, np.abs(to).max()), 1e-5)]
    tgrads = dict(tnet.named_parameters())
    for name, p in net.named_parameters():
        g, tg = p.grad.numpy(), tgrads[name].grad.numpy()
        worst.append((name + " grad", np.abs(g - tg).max() / max(1e-3, np.abs(tg).max()), 3e-5))
    for name, err, tol in worst:
        assert err < tol, f"gmcore and torch U-Nets disagree: {name} off by {err:.2e} (relative)"
    return max(err for _, err, _ in worst)


def run_gmcore(size, device, repeats, warmup):
    import gmcore as gm

    net = gmcore_unet(size).to(device)
    x, t, target = (gm.tensor(a, device=device) for a in _inputs(size))

    def call():
        loss = ((net(x, t) - target) ** 2).mean()
        net.zero_grad()
        loss.backward()

    return time_call(call, gmcore_sync(device), repeats, warmup)


def run_torch(size, device, repeats, warmup):
    import torch

    torch.manual_seed(0)
    net = torch_unet(size).to(device)
    x, t, target = (torch.tensor(a, device=device) for a in _inputs(size))

    def call():
        loss = ((net(x, t) - target) ** 2).mean()
        net.zero_grad()
        loss.backward()

    return time_call(call, torch_sync(device), repeats, warmup)


def _describe(size):
    b, c, s, ch, mult, attn = size
    return ({"batch": b, "in_channels": c, "side": s, "channels": ch, "channel_mult": list(mult),
             "attention_resolutions": list(attn)},
            f"batch {b}, {c}x{s}x{s}, ch {ch}, mult {mult}")


BENCH = StepBench("unet", "Diffusion U-Net training step forward+backward", __file__, SIZES, SMALL,
                  run_gmcore, run_torch, _describe,
                  reference_kernels="conv=reference,norm=reference,activation=reference,"
                                    "attention=reference", repeats=5, warmup=1)

if __name__ == "__main__":
    if "--impl" not in sys.argv:  # the parent process: check the transcription once, on the CPU
        try:
            import torch  # noqa: F401
            err = max(check_agreement(SMALL["small"], scale_shift=True),
                      check_agreement(SMALL["small"] if "--small" in sys.argv else SIZES["digits"]))
            print(f"torch transcription agrees with gmcore (worst relative error {err:.1e})")
        except ImportError:
            pass
    main(BENCH, __doc__.split("\n\n")[0])
