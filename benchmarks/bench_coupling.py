"""Benchmark the coupling family: ``affine_coupling`` forward, backward, forward+backward.

Size (the issue's): B=64, x_b = the full 3x32x32 tensor (N = 3072 per example). The op is
elementwise plus a per-example reduction, so "x_b = half the channels" is the same work at half
N; timing the full tensor gives the larger, more stable figure. float32, ``scale_fn`` exp and
sigmoid (Glow's), forward direction.

Every implementation available on the device runs through the public op with
``GMCORE_KERNELS=coupling=<name>`` (so the engine's per-op overhead is included, as users see it);
``reference`` is the differentiable tensor-op path on NumPy/CuPy. torch eager (and torch.compile
on a GPU) is the straightforward ``y = x * exp(r) + b; logdet = r.flatten(1).sum(1)``.
bwd times ``grad`` on a retained graph; bytes moved: fwd reads x, r, b and writes y (4N
elements + B), bwd reads x, r, g and writes three gradients (6N + B).

    python benchmarks/bench_coupling.py [--device cpu|cuda|all] [--small] [--no-save]
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import (cases, devices, kernels_env_restored, measure, parse_args, report, row,  # noqa: E402
                      torch_or_none, use_implementation)

import gmcore as gm  # noqa: E402

FAMILY = "coupling"


def _gm_case(arrays, device, scale_fn):
    x, r, b = (gm.tensor(a, device=device, requires_grad=True) for a in arrays)
    gy = gm.tensor(np.ones(arrays[0].shape, np.float32), device=device)
    gl = gm.tensor(np.ones(arrays[0].shape[0], np.float32), device=device)

    def fwd():
        with gm.no_grad():
            return gm.affine_coupling(x, r, b, scale_fn=scale_fn)

    def fwd_bwd():
        y, ld = gm.affine_coupling(x, r, b, scale_fn=scale_fn)
        return gm.autograd.grad([y, ld], [x, r, b], grad_outputs=[gy, gl])

    y, ld = gm.affine_coupling(x, r, b, scale_fn=scale_fn)

    def bwd():
        return gm.autograd.grad([y, ld], [x, r, b], grad_outputs=[gy, gl], retain_graph=True)

    return fwd, bwd, fwd_bwd


def _torch_case(torch, arrays, device, scale_fn, compiled=False):
    dev = "cuda" if device == "cuda" else "cpu"
    x, r, b = (torch.tensor(a, device=dev, requires_grad=True) for a in arrays)
    gy = torch.ones_like(x)
    gl = torch.ones(x.shape[0], device=dev)

    def op(x, r, b):
        if scale_fn == "exp":
            return x * r.exp() + b, r.flatten(1).sum(1)
        z = r + 2.0
        return x * torch.sigmoid(z) + b, torch.nn.functional.logsigmoid(z).flatten(1).sum(1)

    if compiled:
        op = torch.compile(op)

    def fwd():
        with torch.no_grad():
            return op(x, r, b)

    def fwd_bwd():
        y, ld = op(x, r, b)
        return torch.autograd.grad([y, ld], [x, r, b], grad_outputs=[gy, gl])

    y, ld = op(x, r, b)

    def bwd():
        return torch.autograd.grad([y, ld], [x, r, b], grad_outputs=[gy, gl], retain_graph=True)

    return fwd, bwd, fwd_bwd


def main(argv=None):
    args = parse_args(FAMILY, argv)
    shape = (4, 3, 8, 8) if args.small else (64, 3, 32, 32)
    repeats = 3 if args.small else args.repeats
    warmup = 1 if args.small else args.warmup
    n = int(np.prod(shape))
    bsz = shape[0]
    moved = {"fwd": (4 * n + bsz) * 4, "bwd": (6 * n + bsz) * 4, "fwd+bwd": (10 * n + 2 * bsz) * 4}
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    torch = torch_or_none()
    rows = []
    with kernels_env_restored():
        for device in devices(args.device):
            for scale_fn in ("exp", "sigmoid"):
                size = f"B={shape[0]} {shape[1]}x{shape[2]}x{shape[3]} fp32 {scale_fn} {device}"
                for label, impl, compiled in cases(FAMILY, "affine", device, torch):
                    if impl is not None:
                        use_implementation(FAMILY, impl)
                        fwd, bwd, fwd_bwd = _gm_case(arrays, device, scale_fn)
                    else:
                        fwd, bwd, fwd_bwd = _torch_case(torch, arrays, device, scale_fn, compiled)
                    for mode, fn in (("fwd", fwd), ("bwd", bwd), ("fwd+bwd", fwd_bwd)):
                        stats = measure(fn, device=device, repeats=repeats, warmup=warmup)
                        rows.append(row(FAMILY, label, mode, size, stats, bytes_moved=moved[mode]))
    report(rows, FAMILY, args)
    return rows


if __name__ == "__main__":
    main()
