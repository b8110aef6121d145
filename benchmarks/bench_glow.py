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
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# name -> (batch, channels after the squeeze, height = width, hidden channels)
SIZES = {"digits": (64, 4, 4, 64), "3x32x32": (16, 12, 16, 128)}
SMALL = {"small": (4, 4, 2, 8)}
IMPLS = ("gmcore", "gmcore-reference", "torch")


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

    if device == "cuda":
        import cupy

        def sync():
            cupy.cuda.get_current_stream().synchronize()
    else:
        def sync():
            return None
    return _time(call, sync, repeats, warmup)


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

    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    return _time(call, sync, repeats, warmup)


def _time(call, sync, repeats, warmup):
    for _ in range(warmup):
        call()
    sync()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        sync()
        t.append(time.perf_counter() - t0)
    return {"median_ms": float(np.median(t) * 1e3), "p20_ms": float(np.percentile(t, 20) * 1e3),
            "p80_ms": float(np.percentile(t, 80) * 1e3)}


def _child(args):
    size = {**SIZES, **SMALL}[args.size]
    if args.impl == "torch":
        import torch

        torch.set_num_threads(args.threads)
        res = run_torch(size, args.device, args.repeats, args.warmup)
    else:
        res = run_gmcore(size, args.device, args.repeats, args.warmup)
    print(json.dumps(res))


def _devices(choice):
    if choice != "all":
        return [choice]
    import gmcore as gm

    return ["cpu"] + (["cuda"] if gm.cuda.is_available() else [])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20, help="timed calls per process")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--rounds", type=int, default=3, help="processes per (size, implementation)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--small", action="store_true", help="tiny sizes, one round: a smoke run")
    p.add_argument("--no-save", action="store_true", help="print only")
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return _child(args)
    try:
        import torch  # noqa: F401
        impls = list(IMPLS)
    except ImportError:
        impls = [i for i in IMPLS if i != "torch"]
        print("torch not installed: gmcore only (pip install torch for the peer)")
    sizes = SMALL if args.small else SIZES
    rounds = 1 if args.small else args.rounds
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    env.pop("GMCORE_KERNELS", None)
    results = {}
    for device in _devices(args.device):
        for _ in range(rounds):
            for size in sizes:
                for impl in impls:
                    e = dict(env, GMCORE_KERNELS="coupling=reference") \
                        if impl == "gmcore-reference" else env
                    out = subprocess.run(
                        [sys.executable, __file__, "--impl", impl, "--size", size, "--device",
                         device, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                         "--threads", str(args.threads)],
                        capture_output=True, text=True, env=e)
                    if out.returncode:
                        raise SystemExit(f"{impl} {size} on {device} failed:\n{out.stderr[-3000:]}")
                    results.setdefault((device, size, impl), []).append(
                        json.loads(out.stdout.splitlines()[-1]))
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    lines = ["| device | size | implementation | fwd+bwd ms | p20-p80 ms | vs torch |",
             "|---|---|---|---|---|---|"]
    rows = []
    for (device, size, impl), runs in results.items():
        med = float(np.median([r["median_ms"] for r in runs]))
        lo = float(np.median([r["p20_ms"] for r in runs]))
        hi = float(np.median([r["p80_ms"] for r in runs]))
        t = results.get((device, size, "torch"))
        ratio = med / float(np.median([r["median_ms"] for r in t])) if t else None
        b, c, h, hidden = {**SIZES, **SMALL}[size]
        rows.append({"device": device, "size": size, "batch": b, "channels": c, "hw": h,
                     "hidden": hidden, "implementation": impl, "median_ms": med, "p20_ms": lo,
                     "p80_ms": hi, "ratio_vs_torch": ratio})
        lines.append(f"| {device} | {size} (B={b}, {c}x{h}x{h}, hidden {hidden}) | {impl} | "
                     f"{med:.2f} | {lo:.2f}-{hi:.2f} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    table = "\n".join(lines)
    print(f"Glow step (actnorm + LU 1x1 conv + affine coupling) forward+backward, "
          f"{args.threads} threads, {machine}\n")
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        tmp = RESULTS / f".glow_{machine}.json.tmp"
        tmp.write_text(json.dumps({"machine": machine, "threads": args.threads, "rows": rows},
                                  indent=1))
        tmp.replace(RESULTS / f"glow_{machine}.json")
        tmp = RESULTS / f".glow_{machine}.md.tmp"
        tmp.write_text(table + "\n")
        tmp.replace(RESULTS / f"glow_{machine}.md")


if __name__ == "__main__":
    main()
