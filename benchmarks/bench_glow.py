"""One Glow step of flow, forward + backward: gmcore against a torch transcription.

    python benchmarks/bench_glow.py [--repeats 20] [--warmup 3] [--rounds 3] [--threads N]
                                    [--device cpu|cuda|all] [--small] [--no-save]

The step is :class:`gmcore.nn.flows.GlowStep` (actnorm, LU-parameterised invertible 1x1
convolution, affine coupling with ``s = sigmoid(r + 2)`` and a conv 3x3 -> ReLU -> conv 1x1 ->
ReLU -> conv 3x3 network) followed by the standard-normal log-density, and the timed call is
``loss = -(log N(z) + logdet).mean(); loss.backward()``. Sizes: ``digits`` is the step of
``gmcore train glow`` on digits (batch 64, 4 x 4 x 4 after the squeeze, 64 hidden channels);
``3x32x32`` the first-level step of a CIFAR-sized Glow (batch 16, 12 x 16 x 16 after the
squeeze, 128 hidden channels). Implementations: ``gmcore`` (the fused coupling kernel the
dispatcher picks), ``gmcore-reference`` (``GMCORE_KERNELS=coupling=reference``: the coupling as
plain tensor ops) and ``torch`` (the same architecture written the usual way). Each runs in a
process of its own, in alternating rounds; the figure is the median over rounds of the median
of ``--repeats`` timed calls. Prints a markdown table and writes
``benchmarks/results/glow_<machine>.{json,md}``.
"""

import numpy as np
from _step_bench import StepBench, gmcore_sync, main, time_call, torch_sync

# name -> (batch, channels after the squeeze, height = width, hidden channels)
SIZES = {"digits": (64, 4, 4, 64), "3x32x32": (16, 12, 16, 128)}
SMALL = {"small": (4, 4, 2, 8)}


def run_gmcore(size, device, repeats, warmup):
    import gmcore as gm
    from gmcore.nn.flows import GlowStep, StandardNormal

    b, c, h, hidden = size
    gm.manual_seed(0)
    step = GlowStep(c, hidden=hidden).to(device)
    base = StandardNormal((c, h, h))
    x = gm.randn(b, c, h, h, device=device)
    step(x)  # actnorm's data-dependent initialisation happens outside the timed calls

    def call():
        z, ld = step(x)
        loss = -(base.log_prob(z) + ld).mean()
        step.zero_grad()
        loss.backward()
        return loss

    return time_call(call, gmcore_sync(device), repeats, warmup)


def run_torch(size, device, repeats, warmup):
    import torch
    from torch import nn

    b, c, h, hidden = size
    torch.manual_seed(0)
    c_a, c_b = c // 2, c - c // 2

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(1, c, 1, 1))
            self.log_scale = nn.Parameter(torch.zeros(1, c, 1, 1))
            w = torch.linalg.qr(torch.randn(c, c))[0]
            p, lower, upper = torch.linalg.lu(w)
            s = torch.diagonal(upper)
            self.register_buffer("p", p)
            self.register_buffer("sign_s", torch.sign(s))
            self.register_buffer("eye", torch.eye(c))
            self.lower = nn.Parameter(lower)
            self.upper = nn.Parameter(torch.triu(upper, 1))
            self.log_s = nn.Parameter(torch.log(torch.abs(s)))
            self.net = nn.Sequential(nn.Conv2d(c_a, hidden, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                     nn.Conv2d(hidden, 2 * c_b, 3, padding=1))

        def forward(self, x):
            hw = x.shape[2] * x.shape[3]
            x = (x + self.loc) * torch.exp(self.log_scale)              # actnorm
            ld = hw * self.log_scale.sum()
            w = self.p @ (torch.tril(self.lower, -1) + self.eye) @ (
                torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s)))
            x = nn.functional.conv2d(x, w.view(c, c, 1, 1))             # invertible 1x1 conv
            ld = ld + hw * self.log_s.sum()
            x_a, x_b = x[:, :c_a], x[:, c_a:]                            # affine coupling
            r, t = self.net(x_a).split([c_b, c_b], 1)
            y_b = x_b * torch.sigmoid(r + 2.0) + t
            ld = ld + nn.functional.logsigmoid(r + 2.0).flatten(1).sum(1)
            return torch.cat([x_a, y_b], 1), ld

    step = Step().to(device)
    x = torch.randn(b, c, h, h, device=device)
    const = 0.5 * c * h * h * np.log(2 * np.pi)

    def call():
        z, ld = step(x)
        loss = -(-0.5 * (z * z).flatten(1).sum(1) - const + ld).mean()
        step.zero_grad()
        loss.backward()
        return loss

    return time_call(call, torch_sync(device), repeats, warmup)


def _describe(size):
    b, c, h, hidden = size
    return ({"batch": b, "channels": c, "hw": h, "hidden": hidden},
            f"B={b}, {c}x{h}x{h}, hidden {hidden}")


BENCH = StepBench("glow", "Glow step (actnorm + LU 1x1 conv + affine coupling) forward+backward", __file__, SIZES, SMALL, run_gmcore, run_torch,
                  _describe, "coupling=reference", repeats=20, warmup=3)

if __name__ == "__main__":
    main(BENCH, __doc__.splitlines()[0])
