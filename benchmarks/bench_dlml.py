"""Benchmark the dlml kernels: discretized logistic mixture NLL, forward / backward / both.

Sizes: PixelCNN++ on CIFAR (B=16, RGB 32x32, K=10, 256 bins) and WaveNet 16-bit audio
(B=4, T=16000, K=10, 65536 bins). Every implementation available on the device runs through
the public op (``GMCORE_KERNELS``-style selection), next to torch eager (and ``torch.compile``
on a GPU) written the straightforward PixelCNN++ way, when torch is installed.

    python benchmarks/bench_dlml.py --device cpu
    python benchmarks/bench_dlml.py --small --no-save      # smoke run
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import (devices, kernels_env_restored, measure, parse_args, report, row,  # noqa: E402
                      torch_or_none, use_implementation)

import gmcore as gm  # noqa: E402
import gmcore.nn.functional as F  # noqa: E402
from gmcore import dispatch  # noqa: E402

FAMILY = "dlml"


def _cases(small):
    if small:
        return [("B=2 C=3 8x8 K=3 256 bins", (2, 3, 8, 8), 30, 256),
                ("B=1 T=512 K=3 65536 bins", (1, 512), 9, 65536)]
    return [("B=16 C=3 32x32 K=10 256 bins", (16, 3, 32, 32), 100, 256),
            ("B=4 T=16000 K=10 65536 bins", (4, 16000), 30, 65536)]


def _inputs(shape, P, nb, seed=0):
    rng = np.random.default_rng(seed)
    x = -1.0 + 2.0 * rng.integers(0, nb, size=shape) / (nb - 1)
    pshape = (shape[0], P) + tuple(shape[2:]) if len(shape) == 4 else (shape[0], P, shape[1])
    p = rng.standard_normal(pshape) * 0.5
    return x.astype(np.float32), p.astype(np.float32)


def _bytes(x, p, mode):
    fwd = x.nbytes + p.nbytes + 4 * x.shape[0]
    return fwd + (p.nbytes if mode != "fwd" else 0)


def _bench_gmcore(name, device, x, p, nb, args):
    use_implementation(FAMILY, name)
    xt = gm.tensor(x, device=device)
    pt = gm.tensor(p, device=device, requires_grad=True)

    def fwd():
        with gm.no_grad():
            return F.discretized_logistic_mixture_nll(xt, pt, num_bins=nb, reduction="sum")

    def fwd_bwd():
        pt.grad = None
        F.discretized_logistic_mixture_nll(xt, pt, num_bins=nb, reduction="sum").backward()

    loss = [None]

    def bwd():  # the forward is outside the timed call; its graph is kept for the next call
        loss[0].backward(retain_graph=True)

    out = {"fwd": measure(fwd, device, args.repeats, args.warmup),
           "fwd+bwd": measure(fwd_bwd, device, args.repeats, args.warmup)}
    loss[0] = F.discretized_logistic_mixture_nll(xt, pt, num_bins=nb, reduction="sum")
    out["bwd"] = measure(bwd, device, args.repeats, args.warmup)
    return out


def _torch_nll(torch, x, l, nb):
    """The PixelCNN++ loss as people write it in torch (channels-first params, our layout)."""
    tf = torch.nn.functional
    h = 1.0 / (nb - 1)
    thr = 1e-5 * 255.0 / (nb - 1)
    if x.dim() == 2:  # WaveNet: (B, T), params (B, 3K, T)
        x = x[:, None, None, :]
        l = l[:, :, None, :]
    B, C, H, W = x.shape
    K = l.shape[1] // (10 if C == 3 else 3)
    logits = l[:, :K]
    if C == 3:
        r = l[:, K:].reshape(B, 3, 3 * K, H, W)
        means, ls, co = r[:, :, :K], torch.clamp(r[:, :, K:2 * K], min=-7.0), torch.tanh(r[:, :, 2 * K:])
        xx = x.unsqueeze(2)
        m2 = means[:, 1] + co[:, 0] * xx[:, 0]
        m3 = means[:, 2] + co[:, 1] * xx[:, 0] + co[:, 2] * xx[:, 1]
        means = torch.stack([means[:, 0], m2, m3], 1)
    else:
        means = l[:, K:2 * K].unsqueeze(1)
        ls = torch.clamp(l[:, 2 * K:3 * K], min=-7.0).unsqueeze(1)
        xx = x.unsqueeze(2)
    cen = xx - means
    inv = torch.exp(-ls)
    plus, mn, mid = inv * (cen + h), inv * (cen - h), inv * cen
    delta = torch.sigmoid(plus) - torch.sigmoid(mn)
    lp = torch.where(xx < -1 + h, plus - tf.softplus(plus), torch.where(
        xx > 1 - h, -tf.softplus(mn), torch.where(
            delta > thr, torch.log(torch.clamp(delta, min=1e-12)),
            mid - ls - 2.0 * tf.softplus(mid) - math.log((nb - 1) / 2))))
    lp = lp.sum(1) + torch.log_softmax(logits, 1)
    return -torch.logsumexp(lp, 1).sum()


def _bench_torch(torch, device, x, p, nb, args, compiled=False):
    dev = "cuda" if device == "cuda" else "cpu"
    xt = torch.tensor(x, device=dev)
    pt = torch.tensor(p, device=dev, requires_grad=True)
    fn = torch.compile(_torch_nll, dynamic=False) if compiled else _torch_nll
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            fn(torch, xt, pt, nb)
        sync()

    def fwd_bwd():
        pt.grad = None
        fn(torch, xt, pt, nb).backward()
        sync()

    loss = [None]

    def bwd():
        loss[0].backward(retain_graph=True)
        sync()

    out = {"fwd": measure(fwd, device, args.repeats, args.warmup),
           "fwd+bwd": measure(fwd_bwd, device, args.repeats, args.warmup)}
    loss[0] = fn(torch, xt, pt, nb)
    out["bwd"] = measure(bwd, device, args.repeats, args.warmup)
    return out


def main(argv=None):
    args = parse_args(FAMILY, argv)
    torch = torch_or_none()
    rows = []
    with kernels_env_restored():
        for device in devices(args.device):
            names = [r.name for r in dispatch.available(FAMILY) if r.device == device and r.available]
            for size, shape, P, nb in _cases(args.small):
                x, p = _inputs(shape, P, nb)
                results = {}
                for name in names:
                    results[name] = _bench_gmcore(name, device, x, p, nb, args)
                if torch is not None:
                    if device == "cpu":
                        torch.set_num_threads(os.cpu_count() or 1)
                    results["torch eager"] = _bench_torch(torch, device, x, p, nb, args)
                    if device == "cuda":
                        results["torch.compile"] = _bench_torch(torch, device, x, p, nb, args, True)
                for name, stats in results.items():
                    for mode in ("fwd", "bwd", "fwd+bwd"):
                        rows.append(row(FAMILY, name, mode, f"{device} {size}", stats[mode],
                                        bytes_moved=_bytes(x, p, mode), note="float32"))
    report(rows, FAMILY, args)
    return rows


if __name__ == "__main__":
    main()
